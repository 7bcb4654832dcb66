"""Progress of a branch-and-bound search on stderr.

A live one-line display (tqdm) when stderr is a terminal: domains left and
visited, the global lower bound (worst open domain) and the elapsed time.
Nothing otherwise, except with ``verbose``: then a detail line at most every
``interval`` seconds (and one per :meth:`BabProgress.note`).
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class BabProgress:
    """Receives updates from BaB strategies; cheap when quiet."""

    def __init__(self, verbose: bool = False, stream: TextIO | None = None, interval: float = 2.0,
                 live: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self.interval = interval
        self.started = time.monotonic()
        self._last_detail = -float("inf")
        self._bar = None
        if live is None:
            live = bool(getattr(self.stream, "isatty", lambda: False)())
        if live:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=None, file=self.stream, leave=False, dynamic_ncols=True,
                                 bar_format="BaB {elapsed} {postfix}")
            except ImportError:  # tqdm is a dependency, but a bare line still works
                self._bar = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, domains_left: int, domains_visited: int, global_lower: float, depth: int = 0) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"left {domains_left} visited {domains_visited} "
                                      f"lower {global_lower:.4g} depth {depth}", refresh=True)
        if self.verbose and time.monotonic() - self._last_detail >= self.interval:
            self._last_detail = time.monotonic()
            self._write(f"left {domains_left}, visited {domains_visited}, global lower bound "
                        f"{global_lower:.6g}, depth {depth}")

    def __call__(self, info: dict) -> None:
        """The callable form BaB strategies use: ``progress({"domains_left": ...})``."""
        self.update(int(info.get("domains_left", 0)), int(info.get("domains_visited", 0)),
                    float(info.get("global_lower", info.get("lower", float("nan")))), int(info.get("depth", 0)))

    def note(self, message: str) -> None:
        """A detail line (verbose only)."""
        if self.verbose:
            self._write(message)

    def _write(self, message: str) -> None:
        line = f"nnverify: [bab {self.elapsed():7.2f}s] {message}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "BabProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
