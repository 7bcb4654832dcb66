"""Weighted sum of two variable tensors with broadcasting: ``y = a*x + b*z``.

ONNX Add (``a = b = 1``) and Sub (``b = -1``) of two variables.
"""
from __future__ import annotations

import torch

from bounds.ops.base import BackwardContext, Operator
from bounds.ops.broadcast import broadcast_shape, lift_rank, sum_to_shape


class Add2(Operator):
    op_type = "Add2"
    num_inputs = 2

    def __init__(self, x_shape, z_shape, x_coef: float = 1.0, z_coef: float = 1.0):
        self.x_shape = tuple(x_shape)
        self.z_shape = tuple(z_shape)
        self.out_shape = broadcast_shape(self.x_shape, self.z_shape)
        self.x_coef = float(x_coef)
        self.z_coef = float(z_coef)
        self.input_signs = (1 if self.x_coef >= 0 else -1, 1 if self.z_coef >= 0 else -1)

    def _combine(self, x, z, x_coef, z_coef):
        rank = len(self.out_shape)
        return lift_rank(x, rank) * x_coef + lift_rank(z, rank) * z_coef

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.x_coef == 1.0 and self.z_coef == 1.0:
            rank = len(self.out_shape)
            return lift_rank(x, rank) + lift_rank(z, rank)
        return self._combine(x, z, self.x_coef, self.z_coef)

    def interval(self, x_bounds, z_bounds):
        """Centre and radius: ``c = a c_x + b c_z``, ``r = |a| r_x + |b| r_z``."""
        (xl, xu), (zl, zu) = x_bounds, z_bounds
        center = self._combine((xl + xu) / 2, (zl + zu) / 2, self.x_coef, self.z_coef)
        radius = self._combine((xu - xl) / 2, (zu - zl) / 2, abs(self.x_coef), abs(self.z_coef))
        return center - radius, center + radius

    def backward(self, A: torch.Tensor, ctx: BackwardContext):
        """``sum(A*(a x + b z)) = sum(sum_bcast(a A) x) + sum(sum_bcast(b A) z)``."""
        A_x = sum_to_shape(A * self.x_coef if self.x_coef != 1.0 else A, self.x_shape)
        A_z = sum_to_shape(A * self.z_coef if self.z_coef != 1.0 else A, self.z_shape)
        return [A_x, A_z], 0.0

    def __repr__(self) -> str:
        return f"Add2({self.x_coef:+g}*x {self.z_coef:+g}*z)"
