"""Where the seconds of one ``nnverify run`` go, on a representative set.

For each instance: the whole-process wall time of ``python -m verifier run
MODEL PROP --json F`` (Python start, imports, verification, exit) and the
per-stage seconds of ``stats["stages"]`` (ort, import, crown, pgd, alpha,
bab); the remainder ``wall - sum(stages)`` is start-up (interpreter, module
imports, model load, property parsing) plus exit.  Each instance runs
``--repeat`` times and the median is printed, next to the reference
verifier's time from ``anchor_cpu.csv`` and the ratio ours/reference.

    python -m benchmarks.startup_profile [--repeat 2] [--threads N] [--only SUBSTR]
    python -m benchmarks.startup_profile --importtime   # top import costs (python -X importtime)
    python -m benchmarks.startup_profile --repo /tmp/old  # the same table for another checkout

The load average is printed first: other jobs on the machine skew wall times.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO.parent / "shared" / "benchmarks"

#: (label, onnx, vnnlib) relative to the shared benchmark folder.
INSTANCES = [
    ("acas 1_1 p3", "2022_acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "2022_acasxu/vnnlib/prop_3.vnnlib"),
    ("acas 1_9 p4", "2022_acasxu/onnx/ACASXU_run2a_1_9_batch_2000.onnx", "2022_acasxu/vnnlib/prop_4.vnnlib"),
    ("mnist p9", "2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_9_0.05.vnnlib"),
    ("mnist p0", "2022_mnist_fc/onnx/mnist-net_256x2.onnx", "2022_mnist_fc/vnnlib/prop_0_0.05.vnnlib"),
    ("oval 8095", "2022_oval21/onnx/cifar_base_kw.onnx",
     "2022_oval21/vnnlib/cifar_base_kw-img8095-eps0.010457516339869282.vnnlib"),
    ("resnet2b p5", "2021_cifar10_resnet/onnx/resnet_2b.onnx",
     "2021_cifar10_resnet/vnnlib_properties_pgd_filtered/resnet2b_pgd_filtered/prop_5_eps_0.008.vnnlib"),
    ("eran sig 7895", "2021_eran/nets/ffnnSIGMOID__Point_6x200.onnx",
     "2021_eran/specs/mnist/mnist_spec_idx_7895_eps_0.01200.vnnlib"),
    ("cartpole 87", "2022_rl_benchmarks/onnx/cartpole.onnx", "2022_rl_benchmarks/vnnlib/cartpole_case_safe_87.vnnlib"),
    ("tll N=8 _0", "2023_tllverifybench/onnx/tllBench_n=2_N=M=8_m=1_instance_0_0.onnx",
     "2023_tllverifybench/vnnlib/property_N=8_0.vnnlib"),
    ("dist 2067", "2023_dist_shift/onnx/mnist_concat.onnx", "2023_dist_shift/vnnlib/index2067_delta0.13.vnnlib"),
]

STAGES = ("ort", "import", "crown", "pgd", "alpha", "bab")


def reference_seconds() -> dict[tuple[str, str], float]:
    """Reference verifier's seconds per (onnx, vnnlib), from anchor_cpu.csv."""
    table = {}
    with open(BENCHMARKS / "anchor_cpu.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            table[(row["onnx"], row["vnnlib"])] = float(row["seconds"])
    return table


def run_once(onnx: str, vnnlib: str, timeout: float, threads: int | None, repo: Path = REPO) -> dict:
    """One process: returns status, wall seconds and the stage seconds."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", "verifier", "run", str(BENCHMARKS / onnx), str(BENCHMARKS / vnnlib),
                   "--timeout", str(timeout), "--json", str(out)]
        if threads is not None:
            command += ["--threads", str(threads)]
        began = time.monotonic()
        subprocess.run(command, cwd=repo, capture_output=True, timeout=timeout + 30)
        wall = time.monotonic() - began
        result = json.loads(out.read_text()) if out.exists() else {"status": "no-json"}
    stages = (result.get("stats") or {}).get("stages") or {}
    return {"status": result.get("status"), "wall": wall, "inner": float(result.get("time") or 0.0),
            **{name: float(stages.get(name, 0.0)) for name in STAGES}}


def profile(repeat: int, timeout: float, threads: int | None, only: str | None, repo: Path = REPO) -> None:
    reference = reference_seconds()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; threads={threads}; "
          f"median of {repeat}; checkout {repo}")
    header = f"{'instance':14s} {'status':7s} {'wall':>6s} {'start':>6s} " + " ".join(f"{s:>6s}" for s in STAGES)
    print(header + f" {'ref':>6s} {'ratio':>6s}")
    ratios = []
    for label, onnx, vnnlib in INSTANCES:
        if only and only not in label:
            continue
        runs = [run_once(onnx, vnnlib, timeout, threads, repo) for _ in range(repeat)]
        median = {key: statistics.median(r[key] for r in runs) for key in ("wall", "inner", *STAGES)}
        statuses = "/".join(sorted({str(r["status"]) for r in runs}))
        # start-up: everything outside the pipeline's own clock (interpreter, imports, exit)
        startup = median["wall"] - sum(median[s] for s in STAGES)
        ref = reference.get((onnx, vnnlib))
        ratio = median["wall"] / ref if ref else float("nan")
        ratios.append(ratio)
        print(f"{label:14s} {statuses:7s} {median['wall']:6.2f} {startup:6.2f} "
              + " ".join(f"{median[s]:6.2f}" for s in STAGES) + f" {ref or float('nan'):6.2f} {ratio:6.2f}",
              flush=True)
    if ratios:
        print(f"median ratio ours/reference: {statistics.median(ratios):.2f}")


def import_times(top: int = 15) -> None:
    """The slowest imports (cumulative microseconds) of ``import verifier.pipeline`` plus a run's lazy imports."""
    code = ("import verifier.pipeline, verifier.onnx_import, verifier.incomplete, bab.strategy, onnxruntime")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=REPO, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        # "import time: <self us> | <cumulative us> | <indented name>"
        self_us, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        rows.append((int(cumulative), int(self_us), name))
    for cumulative, self_us, name in sorted(rows, reverse=True)[:top]:
        print(f"{cumulative / 1e6:7.3f} s cumulative {self_us / 1e6:7.3f} s self  {name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--only", help="run only instances whose label contains this")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="run the CLI of another checkout (e.g. a git worktree of an older commit)")
    parser.add_argument("--importtime", action="store_true", help="print the slowest imports instead")
    args = parser.parse_args(argv)
    if args.importtime:
        import_times()
    else:
        profile(args.repeat, args.timeout, args.threads, args.only, args.repo)


if __name__ == "__main__":
    main()
