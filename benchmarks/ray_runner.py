"""Run a benchmark suite on a Ray cluster: each instance is one Ray task.

``python -m benchmarks run instances.csv --ray local --ray-cpus 2`` starts a
local Ray runtime with that many CPUs; ``--ray ADDRESS`` (``auto`` or
``ray://host:10001``) joins an existing cluster whose nodes see the same paths
(shared file system) and have nnverify installed.  Each task requests
``cpus_per_task`` CPUs (and ``gpus_per_task`` GPUs), runs the same
``harness.run_instance`` as the process pool (the CLI in a subprocess, killed
at ``limit + grace``), so verdicts and scoring are identical.  The driver also
keeps a deadline per task (``limit + grace + slack`` after it started running
at the latest): a task past it is cancelled and recorded as ``timeout``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.harness import CLI, Instance, Outcome, judge, run_instance

REPO = Path(__file__).resolve().parents[1]


def _timeout_outcome(instance: Instance, limit: float, seconds: float, message: str) -> Outcome:
    correct, score = judge(instance.expected, "timeout")
    return Outcome(benchmark=instance.benchmark, category=instance.category, onnx=instance.onnx,
                   vnnlib=instance.vnnlib, expected=instance.expected, verdict="timeout", seconds=round(seconds, 3),
                   limit=limit, exit_code=-9, correct=correct, score=score, message=message)


def run_all_ray(instances: list[Instance], root: Path, cap: float, address: str = "local", *,
                num_cpus: int | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0,
                grace: float = 5.0, slack: float = 60.0, extra_args: tuple[str, ...] = (),
                cli: tuple[str, ...] = CLI, progress=None) -> list[Outcome]:
    """Outcomes in instance order; ``progress(instance, outcome)`` as each finishes."""
    import ray

    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}}
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     runtime_env=env)
        else:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
    try:
        task = ray.remote(run_instance).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)
        pending = {}
        for instance in instances:
            ref = task.remote(instance, root, cap, grace, extra_args, cli)
            pending[ref] = instance
        results: dict[int, Outcome] = {}
        first_seen = time.monotonic()
        # a task may wait for a free CPU; its deadline counts from when the queue ahead of it could have drained
        waves = max(1, int((num_cpus or os.cpu_count() or 1) // max(cpus_per_task, 1e-9)))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                instance = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # a crashed worker: record it, keep going
                    outcome = _timeout_outcome(instance, min(instance.timeout, cap), 0.0, f"ray task failed: {exc}")
                    outcome.verdict, outcome.correct, outcome.score = "error", "no", 0
                results[instance.index] = outcome
                if progress is not None:
                    progress(instance, outcome)
            elapsed = time.monotonic() - first_seen
            for ref, instance in list(pending.items()):
                limit = min(instance.timeout, cap)
                budget = sum(min(i.timeout, cap) + grace for i in instances) / waves + limit + grace + slack
                if elapsed > budget:
                    ray.cancel(ref, force=True)
                    pending.pop(ref)
                    outcome = _timeout_outcome(instance, limit, elapsed, "cancelled by the driver deadline")
                    results[instance.index] = outcome
                    if progress is not None:
                        progress(instance, outcome)
        return [results[i.index] for i in instances]
    finally:
        if started_here:
            ray.shutdown()
