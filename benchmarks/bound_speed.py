"""Wall time of CROWN and alpha-CROWN (20 iterations) on a few dev networks.

    python -m benchmarks.bound_speed [--threads 2] [--repeat 3]

Each network is bounded on the first input box of its property with all
clause rows stacked into one spec matrix; one warm-up call, then the best of
``--repeat`` timed calls is reported with the tightest row's lower bound.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bounds.engine import BoundConfig, compute_bounds
from verifier.onnx_import import load_onnx
from vnnlib import parse_vnnlib

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"

NETWORKS = {
    "oval21 base_kw": ("2022_oval21/onnx/cifar_base_kw.onnx",
                       "2022_oval21/vnnlib/cifar_base_kw-img8095-eps0.010457516339869282.vnnlib"),
    "cifar10 resnet_2b": ("2021_cifar10_resnet/onnx/resnet_2b.onnx",
                          "2021_cifar10_resnet/vnnlib_properties_pgd_filtered/resnet2b_pgd_filtered/"
                          "prop_5_eps_0.008.vnnlib"),
    "mnist 256x4": ("2022_mnist_fc/onnx/mnist-net_256x4.onnx", "2022_mnist_fc/vnnlib/prop_0_0.03.vnnlib"),
    "eran sigmoid 6x200": ("2021_eran/nets/ffnnSIGMOID__Point_6x200.onnx",
                           "2021_eran/specs/mnist/mnist_spec_idx_7895_eps_0.01200.vnnlib"),
}


def instance(onnx_path: str, vnnlib_path: str):
    graph = load_onnx(BENCH / onnx_path)
    prop = parse_vnnlib(BENCH / vnnlib_path).properties[0]
    shape = (1,) + tuple(graph.input_shape)
    lower = torch.tensor(prop.box.lower, dtype=torch.float32).reshape(shape)
    upper = torch.tensor(prop.box.upper, dtype=torch.float32).reshape(shape)
    spec = torch.tensor(np.concatenate([c.matrix for c in prop.clauses]), dtype=torch.float32)
    offset = torch.tensor(np.concatenate([c.offset for c in prop.clauses]), dtype=torch.float32)
    return graph, lower, upper, spec, offset


def timed(graph, lower, upper, spec, offset, config: BoundConfig, repeat: int):
    compute_bounds(graph, lower, upper, spec, offset, config=config)  # warm-up
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = compute_bounds(graph, lower, upper, spec, offset, config=config)
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, best of {args.repeat}")
    print(f"{'network':<22}{'method':<14}{'seconds':>9}{'min lower':>12}{'rows > 0':>10}")
    configs = {"crown": BoundConfig(method="crown"),
               "alpha-crown": BoundConfig(method="alpha-crown", alpha_iterations=20)}
    for name, paths in NETWORKS.items():
        graph, lower, upper, spec, offset = instance(*paths)
        for label, config in configs.items():
            seconds, result = timed(graph, lower, upper, spec, offset, config, args.repeat)
            proven = int((result.lower > 0).sum())
            print(f"{name:<22}{label:<14}{seconds:>9.3f}{result.lower.min().item():>12.4f}"
                  f"{proven:>6}/{result.lower.shape[1]}", flush=True)


if __name__ == "__main__":
    main()
