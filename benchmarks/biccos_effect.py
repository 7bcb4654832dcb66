"""BaB vs BaB+BICCOS on dev instances (ReLU-split BaB only, same cap).

Usage: ``python -m benchmarks.biccos_effect [--cap 60] [--category conv_relu mnist_fc] [--limit N]``
Prints one row per instance: verdict, time, domains (main tree + multi-tree
trees) for both runs, and cuts inferred / strengthened / used / domains
pruned.  One process, one thread (the machine is shared).
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def run_one(onnx: Path, vnnlib: Path, use_cuts: bool, cap: float) -> dict:
    from bab.strategy import solve_spec
    from bab.types import BabConfig
    from verifier.config import VerifyConfig
    from verifier.pipeline import _SpecValidator, load_graph, parse_property
    from verifier.validate import OrtModel, read_model_bytes

    started = time.monotonic()
    graph = load_graph(onnx, VerifyConfig(threads=1))
    spec = parse_property(vnnlib)
    model = OrtModel.load(str(onnx), read_model_bytes(str(onnx)))
    outcome = solve_spec(graph, spec, BabConfig(strategy="relu-split", use_cuts=use_cuts),
                         started + cap, _SpecValidator(model, spec))
    stats = outcome.stats
    found = _find(stats, "biccos") or {}
    domains = _find(stats, "domains_visited") or 0
    return {"status": outcome.status, "time": time.monotonic() - started,
            "domains": domains + found.get("tree_domains", 0), **{k: found.get(k, 0) for k in
            ("cuts_inferred", "strengthened", "cuts_used", "domains_pruned")}}


def _find(stats, key):
    if isinstance(stats, dict):
        if key in stats:
            return stats[key]
        for value in stats.values():
            got = _find(value, key)
            if got is not None:
                return got
    if isinstance(stats, list):
        for value in stats:
            got = _find(value, key)
            if got is not None:
                return got
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cap", type=float, default=60.0)
    parser.add_argument("--category", nargs="*", default=["conv_relu", "mnist_fc"])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open(BENCH / "instances.csv") as f, open(BENCH / "instances_meta.csv") as g:
        rows = [(r, m) for r, m in zip(csv.DictReader(f), csv.DictReader(g)) if m["category"] in args.category]
    rows = rows[:args.limit]
    print("instance | expected | BaB: verdict time domains | BICCOS: verdict time domains inferred strengthened used pruned")
    for r, _ in rows:
        onnx, vnnlib = BENCH / r["onnx"], BENCH / r["vnnlib"]
        a = run_one(onnx, vnnlib, False, args.cap)
        b = run_one(onnx, vnnlib, True, args.cap)
        print(f"{Path(r['onnx']).stem}/{Path(r['vnnlib']).stem} | {r['expected']} | "
              f"{a['status']} {a['time']:.1f} {a['domains']} | {b['status']} {b['time']:.1f} {b['domains']} "
              f"{b['cuts_inferred']} {b['strengthened']} {b['cuts_used']} {b['domains_pruned']}", flush=True)


if __name__ == "__main__":
    main()
