"""The CLI's watchdog ends a run stuck in an uninterruptible step on time."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_watchdog_writes_timeout_and_exits_within_a_second(tmp_path):
    results = tmp_path / "out.txt"
    script = textwrap.dedent(f"""
        import argparse, time
        from verifier import cli
        args = argparse.Namespace(timeout=0.5, results_file={str(results)!r}, json=None)
        cli._start_watchdog(args, time.monotonic())
        time.sleep(30)  # stands for a long native step that never returns in time
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert results.read_text().strip() == "timeout"
    assert "timeout" in proc.stdout
    assert elapsed < 0.5 + cli_grace() + 2.0  # interpreter start-up included


def test_finished_run_disarms_the_watchdog(tmp_path):
    import argparse

    from verifier import cli

    args = argparse.Namespace(timeout=0.2, results_file=str(tmp_path / "never.txt"), json=None)
    finish = cli._start_watchdog(args, time.monotonic())
    assert finish() is True
    time.sleep(0.2 + cli.WATCHDOG_GRACE + 0.3)
    assert not (tmp_path / "never.txt").exists()


def cli_grace() -> float:
    from verifier import cli

    return cli.WATCHDOG_GRACE
