"""BaB vs BaB+BICCOS on dev instances (ReLU-split BaB only, same cap).

Usage::

    python -m benchmarks.biccos_effect [--cap 60] [--category conv_relu mnist_fc]
        [--match hyperrectangle_4056 ...] [--limit N] [--no-mip] [--settings '{"cuts_in_bounds": false}']

Prints one row per instance: verdict, time, domains (main tree + multi-tree
trees) for both runs, and cuts inferred / strengthened / used (multiplier
ever > 0) / domains pruned / splits forced by unit propagation, then the
totals the acceptance asks for (decided counts, median domain reduction on
instances needing > 1,000 domains).  One process, one torch thread (the
machine is shared): the load average is printed with every row.

``--no-mip`` disables relu_split's exact-MIP hand-over of small nets
(measurement only, so that the BaB searches themselves are compared: with the
hand-over on, a domain count only says how far BaB got before the MIP
decided -- a slower BICCOS pass then looks like 42% fewer domains on safenlp
4056, against 47,306 vs 47,370 with it off);
``--settings`` overrides :class:`bab.biccos.BiccosSettings` fields of the
BICCOS run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def run_one(onnx: Path, vnnlib: Path, use_cuts: bool, cap: float, *, no_mip: bool = False,
            settings: dict | None = None) -> dict:
    import bab.relu_split as relu_split
    from bab.biccos import Biccos, BiccosSettings
    from bab.strategy import solve_spec
    from bab.types import BabConfig
    from verifier.config import VerifyConfig
    from verifier.pipeline import _SpecValidator, load_graph, parse_property
    from verifier.validate import OrtModel, read_model_bytes

    started = time.monotonic()
    graph = load_graph(onnx, VerifyConfig(threads=1))
    spec = parse_property(vnnlib)
    model = OrtModel.load(str(onnx), read_model_bytes(str(onnx)))
    # measurement hooks, restored below: settings of the search and of BICCOS
    original_resolve, original_bab = relu_split.resolve_settings, relu_split.relu_split_bab
    if no_mip:
        relu_split.resolve_settings = lambda *a, **k: replace(original_resolve(*a, **k), mip_max_unstable=0)
    if use_cuts and settings:
        def with_settings(*args, biccos=None, **kwargs):
            biccos = biccos or Biccos(args[0], BiccosSettings(**settings))
            return original_bab(*args, biccos=biccos, **kwargs)
        relu_split.relu_split_bab = with_settings
    try:
        outcome = solve_spec(graph, spec, BabConfig(strategy="relu-split", use_cuts=use_cuts),
                             started + cap, _SpecValidator(model, spec))
    finally:
        relu_split.resolve_settings, relu_split.relu_split_bab = original_resolve, original_bab
    stats = outcome.stats
    found = _find(stats, "biccos") or {}
    domains = _find(stats, "domains_visited") or 0
    return {"status": outcome.status, "time": time.monotonic() - started,
            "domains": domains + found.get("tree_domains", 0), **{k: found.get(k, 0) for k in
            ("cuts_inferred", "strengthened", "cuts_used", "domains_pruned", "propagated")}}


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap", type=float, default=60.0)
    parser.add_argument("--category", nargs="*", default=["conv_relu", "mnist_fc"])
    parser.add_argument("--match", nargs="*", default=None, help="keep instances whose vnnlib path contains one")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-mip", action="store_true")
    parser.add_argument("--settings", type=json.loads, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open(BENCH / "instances.csv") as f, open(BENCH / "instances_meta.csv") as g:
        rows = [(r, m) for r, m in zip(csv.DictReader(f), csv.DictReader(g)) if m["category"] in args.category]
    if args.match:
        rows = [(r, m) for r, m in rows if any(s in r["vnnlib"] for s in args.match)]
    rows = rows[:args.limit]
    print("instance | expected | BaB: verdict time domains | BICCOS: verdict time domains "
          "inferred strengthened used pruned propagated | load")
    results = []
    for r, _ in rows:
        onnx, vnnlib = BENCH / r["onnx"], BENCH / r["vnnlib"]
        a = run_one(onnx, vnnlib, False, args.cap, no_mip=args.no_mip)
        b = run_one(onnx, vnnlib, True, args.cap, no_mip=args.no_mip, settings=args.settings)
        results.append((a, b))
        print(f"{Path(r['onnx']).stem}/{Path(r['vnnlib']).stem} | {r['expected']} | "
              f"{a['status']} {a['time']:.1f} {a['domains']} | {b['status']} {b['time']:.1f} {b['domains']} "
              f"{b['cuts_inferred']} {b['strengthened']} {b['cuts_used']} {b['domains_pruned']} "
              f"{b['propagated']} | {os.getloadavg()[0]:.1f}", flush=True)
    decided = [sum(x["status"] in ("sat", "unsat") for x in run) for run in zip(*results)] if results else [0, 0]
    both = [(a, b) for a, b in results if a["status"] in ("sat", "unsat") and b["status"] in ("sat", "unsat")]
    hard = [b["domains"] / a["domains"] for a, b in both if a["domains"] > 1000]
    print(f"decided: BaB {decided[0]}, BaB+BICCOS {decided[1]} of {len(results)}; "
          f"both decided {len(both)}: time {sum(a['time'] for a, _ in both):.1f} vs "
          f"{sum(b['time'] for _, b in both):.1f} s; median domain ratio on > 1,000-domain instances: "
          f"{statistics.median(hard) if hard else float('nan'):.2f} ({len(hard)} instances)")


if __name__ == "__main__":
    main()
