"""Ray scale-out: a local Ray runtime with 2 CPUs gives the same verdicts as the
process pool on a small piecewise-linear dev subset (ACAS Xu).  Skipped when
ray is not installed (``pip install 'nnverify[ray]'``)."""
from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from benchmarks.harness import load_instances, run_all  # noqa: E402
from benchmarks.ray_runner import run_all_ray  # noqa: E402

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


@pytest.mark.slow
def test_local_ray_cluster_matches_process_pool():
    instances = load_instances(BENCH / "instances.csv",
                               r"ACASXU_run2a_(1_9|1_3)_batch_2000.onnx/.*prop_[24]|1_1_batch_2000.onnx/.*prop_3")
    assert len(instances) == 3
    extra = ("--threads", "1")
    pool = run_all(instances, BENCH, cap=30, jobs=1, extra_args=extra)
    seen = []
    on_ray = run_all_ray(instances, BENCH, cap=30, address="local", num_cpus=2, cpus_per_task=1, extra_args=extra,
                         progress=lambda instance, outcome: seen.append(instance.index))
    assert [o.verdict for o in on_ray] == [o.verdict for o in pool] == [i.expected for i in instances]
    assert sorted(seen) == sorted(i.index for i in instances)
    assert all(o.correct == "yes" for o in on_ray)
