"""Linear constraints on intermediate nodes and their Lagrange multipliers.

A :class:`LinearConstraints` object states ``K`` facts that hold on every
point of a domain (BaB split decisions, cuts):

    g_k(z) = sum(coeffs_k * z_node) + const_k  >=  0        k = 1..K

For a linear function ``f`` of the network with backward coefficients ``A`` at
``z_node``, every ``beta >= 0`` gives ``f >= f - sum_k beta_k g_k(z)`` on the
domain, i.e. the backward pass may continue with

    A'   = A - sum_k beta_k coeffs_k
    bias = bias - sum_k beta_k const_k

(Lagrangian relaxation; beta-CROWN).  Any nonnegative beta is sound, so the
multipliers can be optimized freely by projected gradient ascent.

Examples: a ReLU split ``z_i >= 0`` is ``coeffs = +e_i, const = 0``;
``z_i <= 0`` is ``coeffs = -e_i``; a split of a general activation at ``p``
is ``+-(z_i - p)``: ``coeffs = +-e_i``, ``const = -+p``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class LinearConstraints:
    """``sum(coeffs[b, k] * z_node[b]) + const[b, k] >= 0`` for every k.

    ``coeffs``: ``(B, K, *node_shape)`` (``B`` may be 1); ``const``: ``(B, K)``.
    Rows with all-zero coefficients and zero constant are inert padding, which
    lets domains with different numbers of constraints share one tensor.
    """

    node: str
    coeffs: torch.Tensor
    const: torch.Tensor

    @property
    def num_constraints(self) -> int:
        return int(self.coeffs.shape[1])

    def violation(self, value: torch.Tensor) -> torch.Tensor:
        """``g_k(z)`` for concrete node values ``value: (B, *shape)`` -> ``(B, K)``."""
        flat = self.coeffs.flatten(2)
        return torch.einsum("bkn,bn->bk", flat.expand(value.shape[0], -1, -1)
                            if flat.shape[0] == 1 else flat, value.flatten(1)) + self.const


def as_constraint_list(constraints) -> list[LinearConstraints]:
    """Accept ``None``, one :class:`LinearConstraints`, or a sequence of them."""
    if constraints is None:
        return []
    if isinstance(constraints, LinearConstraints):
        return [constraints]
    return list(constraints)


def initial_betas(constraints: Sequence[LinearConstraints], batch: int, num_rows: int,
                  like: torch.Tensor) -> list[torch.Tensor]:
    """Zero multipliers ``(B, S, K)`` per constraint set (zero = plain CROWN)."""
    return [torch.zeros(max(batch, c.coeffs.shape[0]), num_rows, c.num_constraints,
                        dtype=like.dtype, device=like.device) for c in constraints]


def apply_multipliers(A: torch.Tensor, constraint: LinearConstraints,
                      beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``beta * g(z)`` into the backward coefficients at the constraint node.

    ``A``: ``(B|1, S, *shape)``; ``beta``: ``(B, S, K)`` (the rows of the current
    chunk).  Returns ``(A - beta^T coeffs, -beta . const)`` with the bias
    term shaped ``(B, S)``.
    """
    coeffs = constraint.coeffs.flatten(2)  # (B, K, n)
    shift = torch.einsum("bsk,bkn->bsn", beta, coeffs.expand(beta.shape[0], -1, -1)
                         if coeffs.shape[0] == 1 else coeffs)
    new_A = A - shift.reshape(shift.shape[:2] + A.shape[2:])
    const = constraint.const.expand(beta.shape[0], -1) if constraint.const.shape[0] == 1 else constraint.const
    bias = -(beta * const.unsqueeze(1)).sum(-1)
    return new_A, bias
