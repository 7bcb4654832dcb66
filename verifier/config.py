"""Run-time options of one verification call.

A plain dataclass passed explicitly through the pipeline: there is no global
configuration.  Every field has a zero-config default; the CLI and the API
override them per call.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VerifyConfig:
    """Options of :func:`verifier.pipeline.run`.

    ``timeout``: wall-clock budget in seconds for the whole call (start-up,
    import and parsing included); ``device``: ``"auto"`` picks CUDA when
    available; ``seed``: seeds every random choice (sampling, PGD restarts);
    ``threads``: torch intra-op threads (``None`` keeps torch's default);
    ``verbose``: progress lines on stderr; ``debug``: tracebacks on errors.
    The attack knobs bound the falsification stages.
    """

    timeout: float = 60.0
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    verbose: bool = False
    debug: bool = False
    # falsification
    attack: bool = True
    verify: bool = True              # False: falsification only (skips bound propagation and BaB)
    ort_samples: int = 4096          # random points per box evaluated with onnxruntime
    ort_descent_max_dims: int = 20   # finite-difference descent only for inputs this small
    ort_time_fraction: float = 0.1   # share of the budget the onnxruntime stage may use
    pgd_restarts: int = 64
    pgd_steps: int = 100
    pgd_time_fraction: float = 0.3   # share of the remaining budget one PGD run may use
    pgd_rounds: int = 4              # PGD runs (fresh seeds) before giving up with "unknown"
    # branch and bound (None: chosen from the instance, see bab/strategy.py)
    bab_strategy: str = "auto"       # auto | input-split | relu-split | genbab
    bab_batch_size: int | None = None
    bab_branching: str | None = None  # input split: coefficient | widest; relu split: babsr | fsb
    bab_alpha_iterations: int | None = None

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def torch_device(self):
        """The torch device to run on (imports torch)."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
