"""``python -m benchmarks run INSTANCES.csv [--cap S] [--out F] [--only REGEX] [--jobs N]``.

Runs ``nnverify run`` on every instance, prints a per-category table and
exits 1 when any verdict contradicts the ``expected`` column (0 otherwise).
Arguments after ``--`` are passed to ``nnverify run`` (e.g. ``-- --threads 1``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.harness import cactus_plot, format_table, load_instances, run_all, summarize, write_csv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the CLI on every instance")
    run.add_argument("csv", help="instances.csv (paths inside are relative to its folder)")
    run.add_argument("--cap", type=float, default=60.0, help="cap on each instance's timeout (default 60 s)")
    run.add_argument("--grace", type=float, default=5.0, help="seconds past the limit before a kill (default 5)")
    run.add_argument("--out", help="write per-instance results as CSV")
    run.add_argument("--only", metavar="REGEX", help="only instances whose benchmark/onnx/vnnlib matches")
    run.add_argument("--jobs", type=int, default=1, help="instances run at once (default 1)")
    run.add_argument("--plot", metavar="PNG", help="write a cactus plot (needs matplotlib)")
    run.add_argument("--quiet", action="store_true", help="no line per instance")
    run.add_argument("--report", metavar="DIR", help="write results.csv, report.md (score, table) and cactus.png")
    run.add_argument("--progress", action="store_true", help="a progress bar over the suite (tqdm, on stderr)")
    run.add_argument("--ray", metavar="ADDRESS", help="run each instance as a Ray task: 'local' or a cluster address")
    run.add_argument("--ray-cpus", type=int, help="CPUs of a local Ray runtime (default: all)")
    run.add_argument("--cpus-per-task", type=float, default=1, help="Ray CPUs per instance (default 1)")
    run.add_argument("--gpus-per-task", type=float, default=0, help="Ray GPUs per instance (default 0)")
    args = parser.parse_args(argv)

    csv_path = Path(args.csv)
    instances = load_instances(csv_path, args.only)
    if not instances:
        print("no instances selected", file=sys.stderr)
        return 2

    def progress(instance, outcome):
        if not args.quiet:
            flag = {"yes": "ok", "no": "--", "WRONG": "WRONG"}[outcome.correct]
            print(f"{flag:>5} {outcome.verdict:>7} {outcome.seconds:7.2f}s  expected {outcome.expected:<7} "
                  f"{instance.benchmark} {Path(instance.onnx).name} {Path(instance.vnnlib).name}"
                  + (f"  {outcome.message}" if outcome.message else ""), flush=True)

    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(instances), unit="instance")
        line = progress

        def progress(instance, outcome):  # noqa: F811 - wraps the per-line printer
            line(instance, outcome)
            bar.update(1)
    if args.ray:
        from benchmarks.ray_runner import run_all_ray

        outcomes = run_all_ray(instances, csv_path.resolve().parent, args.cap, args.ray, num_cpus=args.ray_cpus,
                               cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                               grace=args.grace, extra_args=tuple(extra), progress=progress)
    else:
        outcomes = run_all(instances, csv_path.resolve().parent, args.cap, max(1, args.jobs), args.grace,
                           tuple(extra), progress)
    if bar is not None:
        bar.close()
    if args.report:
        from benchmarks.report import write_report

        write_report(outcomes, args.report, f"{csv_path.name} ({'ray ' + args.ray if args.ray else 'process pool'})")
    if args.out:
        write_csv(outcomes, args.out)
    if args.plot:
        cactus_plot(outcomes, args.plot)
    print(format_table(summarize(outcomes)))
    wrong = sum(o.correct == "WRONG" for o in outcomes)
    if wrong:
        print(f"{wrong} WRONG verdict(s)", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
