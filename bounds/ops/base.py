"""Operator base classes: the contract between operators and bound algorithms.

Every operator implements, side by side:

* ``forward(*xs)``                    concrete value, ``xs[i]: (B, *in_shape_i)``;
* ``interval(*bounds)``               IBP: ``bounds[i] = (lower_i, upper_i)`` -> ``(lower, upper)``;
* ``backward(A, ctx)``                one step of CROWN's backward pass.

``backward`` receives coefficients ``A`` of shape ``(B, S, *out_shape)`` that
define the linear function ``sum(A * y)`` of this node's output ``y`` and
returns ``(A_inputs, bias)`` such that for every point of the current domain

    sum(A * y)  >=  sum_i sum(A_inputs[i] * x_i) + bias           (bias: (B, S))

(a *lower* bound; the engine bounds from above by negating ``A``).  For a
linear operator this is an equality.  ``A_inputs[i]`` may be ``None`` when the
output does not depend on input ``i``.

Nonlinear element-wise operators only implement ``relax``: linear functions
``lower_slope * x + lower_bias <= f(x) <= upper_slope * x + upper_bias`` valid
on ``[lower, upper]``; :class:`ElementwiseNonlinear` turns that into
``backward``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

Bounds = tuple[torch.Tensor, torch.Tensor]


@dataclass
class BackwardContext:
    """What an operator may need during a backward step.

    ``input_bounds``: per variable input, ``(lower, upper)`` of shape
    ``(B, *in_shape)`` (only guaranteed for nonlinear operators).
    ``input_shapes``: per-sample shapes of the variable inputs.
    ``params``: optimizable relaxation parameters of this node for the current
    backward pass (alpha-CROWN), or ``None`` for the default CROWN relaxation.
    """

    input_shapes: Sequence[tuple[int, ...]]
    input_bounds: Sequence[Bounds | None] = ()
    params: dict[str, torch.Tensor] | None = None


@dataclass
class LinearRelaxation:
    """``lower_slope*x + lower_bias <= f(x) <= upper_slope*x + upper_bias``.

    Each tensor broadcasts against ``(B, S, *shape)``.
    """

    lower_slope: torch.Tensor
    lower_bias: torch.Tensor
    upper_slope: torch.Tensor
    upper_bias: torch.Tensor


def weight_parts(op: "Operator", weight: str, bias: str | None) -> tuple["Operator", "Operator"]:
    """Copies of ``op`` with ``weight`` clamped to its positive and to its
    negative entries and ``bias`` dropped (see :meth:`Operator.signed_parts`)."""
    parts = []
    for clamp in ({"min": 0}, {"max": 0}):
        part = copy.copy(op)
        setattr(part, weight, getattr(op, weight).clamp(**clamp))
        if bias is not None and getattr(op, bias) is not None:
            setattr(part, bias, torch.zeros_like(getattr(op, bias)))
        parts.append(part)
    return parts[0], parts[1]


def sum_tail(t: torch.Tensor, keep: int = 2) -> torch.Tensor:
    """Sum over every axis after the first ``keep`` ones."""
    if t.dim() <= keep:
        return t
    return t.flatten(keep).sum(-1)


class Operator:
    """Base class of all operators; constants live as tensor attributes."""

    op_type: str = ""
    is_linear: bool = True
    #: True when the operator is affine in each input separately but not
    #: jointly (e.g. the product of two variables); such ops are nonlinear.
    num_inputs: int = 1
    #: for ops linear in each input with one sign per input (data movement,
    #: sums, ``a x + b z``): that sign per input (forward-mode bounds map the
    #: lower forms of positive inputs and the upper forms of negative ones)
    input_signs: tuple[int, ...] | None = None

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def interval(self, *bounds: Bounds) -> Bounds:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, A: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor | None], torch.Tensor | float]:
        raise NotImplementedError(f"{self.op_type}: no backward (CROWN) rule")

    def signed_parts(self) -> tuple["Operator", "Operator"] | None:
        """A linear op's matrix split into its positive and negative entries,
        as two copies of the op without constant term (forward-mode bounds);
        None when the op has no such rule."""
        return None

    @property
    def has_backward(self) -> bool:
        """Whether linear bounds pass through this operator (it has a CROWN rule)."""
        return type(self).backward is not Operator.backward

    # ------------------------------------------------------------- parameters
    def init_params(self, bounds: Sequence[Bounds]) -> dict[str, torch.Tensor]:
        """Initial optimizable parameters (alpha-CROWN); ``{}`` when none.

        Tensors are shaped ``(B, 1, *shape)`` and may be expanded along the
        spec axis by the caller.
        """
        return {}

    def clip_params(self, params: dict[str, torch.Tensor]) -> None:
        """Project parameters back onto their feasible set (in place)."""

    # ------------------------------------------------------------------ misc
    def to(self, device=None, dtype=None) -> "Operator":
        for key, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                if value.is_floating_point():
                    setattr(self, key, value.to(device=device, dtype=dtype))
                else:
                    setattr(self, key, value.to(device=device))
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ElementwiseNonlinear(Operator):
    """``y = f(x)`` applied element-wise; subclasses implement ``f`` and ``relax``."""

    is_linear = False

    def relax(self, lower: torch.Tensor, upper: torch.Tensor,
              params: dict[str, torch.Tensor] | None = None) -> LinearRelaxation:  # pragma: no cover
        raise NotImplementedError

    def interval(self, bounds: Bounds) -> Bounds:  # monotone increasing default
        lower, upper = bounds
        return self.forward(lower), self.forward(upper)

    def backward(self, A: torch.Tensor, ctx: BackwardContext):
        """Lower bound of ``sum(A * f(x))``: positive coefficients take the
        lower relaxation, negative ones the upper relaxation."""
        lower, upper = ctx.input_bounds[0]
        relax = self.relax(lower.unsqueeze(1), upper.unsqueeze(1), ctx.params)
        a_pos = A.clamp(min=0)
        a_neg = A.clamp(max=0)
        A_in = a_pos * relax.lower_slope + a_neg * relax.upper_slope
        bias = sum_tail(a_pos * relax.lower_bias + a_neg * relax.upper_bias)
        return [A_in], bias
