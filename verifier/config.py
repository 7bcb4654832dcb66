"""Run-time options of one verification call.

A plain dataclass passed explicitly through the pipeline: there is no global
configuration.  Every field has a zero-config default; the CLI and the API
override them per call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# OpenMP threads that wait for work by sleeping, not spinning.  Read once when
# torch loads (we import torch lazily, after this module).  Measured on the
# shared 2-core dev machine with other jobs running, --threads 2: ACAS Xu 1_1
# prop_3 timed out at 60 s (alpha-CROWN alone 16 s) against 3.8 s on one
# thread; mnist 256x2 prop_9 took 19.3 s spinning, 1.6 s passive.  A value
# the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory in the process (no ``mmap``
    per large block, no trimming), so that bound passes reusing large tensors
    do not page-fault them in again on every operation.

    Measured (nn4sys mscn, 800 boxes, CROWN, one thread): 11.9 s with 8.6 s
    of it in the kernel (64 MB coefficient chunks mapped and unmapped per
    op), 3.7 s with this.  Costs nothing where passes are small.  Called by
    the command line only (a library should not change a host process's
    allocator); no-op off glibc.  Returns whether it took effect.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


#: torch intra-op threads of a CPU run when ``threads`` is not given.  Measured
#: (benchmarks/startup_profile.py, 10 dev instances, --threads 1 and 2
#: interleaved, 2 runs each, load average 2.3-2.8 from other jobs on the 2-core
#: machine): one thread was as fast or faster on 9 of 10, e.g. ACAS Xu 1_1
#: prop_3 4.5 s vs 5.4-6.2 s, oval21 img8095 2.6 s vs 2.9-4.1 s, mnist 256x2
#: prop_9 1.5 s vs 1.7-1.9 s; dist_shift 2067 split (1.9/2.1 vs 1.9/1.7).
#: At load average ~0.8, 3 interleaved runs: oval21 img8095 BaB 0.69-0.81 s on
#: one thread vs 1.23-1.40 s on two; ACAS Xu 1_1 prop_3 BaB 2.8-3.2 s vs
#: 2.1-2.9 s (two threads ~15% faster there).  One thread wins on balance.
DEFAULT_CPU_THREADS = 1


@dataclass
class VerifyConfig:
    """Options of :func:`verifier.pipeline.run`.

    ``timeout``: wall-clock budget in seconds for the whole call (start-up,
    import and parsing included); ``device``: ``"auto"`` picks CUDA when
    available; ``seed``: seeds every random choice (sampling, PGD restarts);
    ``threads``: torch intra-op threads (``None``: :data:`DEFAULT_CPU_THREADS`
    on CPU, torch's default on CUDA);
    ``verbose``: progress lines on stderr; ``debug``: tracebacks on errors.
    The attack knobs bound the falsification stages by work (sample counts,
    restarts x steps) with a small time cap each, so an unsat instance spends
    a bounded, size-independent time in them; ``bab=False`` stops after
    incomplete verification (CROWN, alpha-CROWN).
    """

    timeout: float = 60.0
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    verbose: bool = False
    debug: bool = False
    # falsification: every stage is bounded by work (points, restarts x steps) and a small time cap
    attack: bool = True
    verify: bool = True              # False: falsification only (skips bound propagation and BaB)
    bab: bool = True                 # False: incomplete verification only (no branch and bound)
    ort_samples: int = 4096          # random points evaluated with onnxruntime (spread over all boxes)
    ort_descent_max_dims: int = 20   # finite-difference descent only for inputs this small
    ort_time_cap: float = 1.0        # seconds the onnxruntime stage may take at most
    pgd_restarts: int = 64           # starts per box (fewer per box when there are many boxes)
    pgd_steps: int = 50              # steps of the short PGD run before alpha-CROWN
    pgd_time_cap: float = 2.0        # seconds the short PGD run may take at most
    pgd_rounds: int = 4              # longer PGD runs (fresh seeds) when BaB leaves time and no verdict
    # branch and bound (None: chosen from the instance, see bab/strategy.py)
    bab_strategy: str = "auto"       # auto | input-split | relu-split | genbab
    bab_batch_size: int | None = None
    bab_branching: str | None = None  # input split: coefficient | widest; relu split: babsr | fsb
    bab_alpha_iterations: int | None = None
    bab_cuts: bool | None = None      # BICCOS cuts; None: zero-config default (bab/biccos.py)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def torch_threads(self) -> int | None:
        """Intra-op threads to set for this run (None: leave torch's setting)."""
        if self.threads is not None:
            return self.threads
        return DEFAULT_CPU_THREADS if self.torch_device().type == "cpu" else None

    def torch_device(self):
        """The torch device to run on (imports torch)."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
