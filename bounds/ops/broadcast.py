"""Helpers for numpy-style broadcasting between per-sample tensors.

Per-sample shapes follow ONNX ranks; runtime tensors carry a leading batch
axis ``B`` and coefficients two leading axes ``(B, S)``.  Broadcasting must
therefore align the per-sample parts only, never the batch axis.
"""
from __future__ import annotations

import torch


def lift_rank(x: torch.Tensor, rank: int, lead: int = 1) -> torch.Tensor:
    """Insert unit axes after the ``lead`` leading axes so the per-sample part has ``rank`` axes."""
    missing = rank - (x.dim() - lead)
    if missing <= 0:
        return x
    return x.reshape(*x.shape[:lead], *([1] * missing), *x.shape[lead:])


def sum_to_shape(A: torch.Tensor, shape: tuple[int, ...], lead: int = 2) -> torch.Tensor:
    """Adjoint of broadcasting: sum ``A`` (``lead`` axes + broadcast shape) down to ``shape``.

    If ``y = broadcast(x)`` then ``sum(A*y) == sum(sum_to_shape(A)*x)``.
    """
    extra = A.dim() - lead - len(shape)
    if extra > 0:
        A = A.sum(dim=tuple(range(lead, lead + extra)))
    dims = tuple(lead + i for i, s in enumerate(shape) if s == 1 and A.shape[lead + i] != 1)
    if dims:
        A = A.sum(dim=dims, keepdim=True)
    return A


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Numpy broadcasting of per-sample shapes (right-aligned)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for shape in shapes:
        for i, size in enumerate(shape, start=rank - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    raise ValueError(f"shapes {list(shapes)} do not broadcast")
                out[i] = size
    return tuple(out)
