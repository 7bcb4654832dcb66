"""Element-wise nonlinear activations other than ReLU.

Each class keeps forward, interval and relaxation rules together.  ``relax``
returns linear bounds valid on every point of ``[lower, upper]``.
"""
from __future__ import annotations

import math

import torch

from bounds.ops.base import ElementwiseNonlinear, LinearRelaxation


class Sigmoid(ElementwiseNonlinear):
    op_type = "Sigmoid"

    def forward(self, x):
        return torch.sigmoid(x)


class Tanh(ElementwiseNonlinear):
    op_type = "Tanh"

    def forward(self, x):
        return torch.tanh(x)


class Exp(ElementwiseNonlinear):
    op_type = "Exp"

    def forward(self, x):
        return torch.exp(x)


class Log(ElementwiseNonlinear):
    op_type = "Log"

    def forward(self, x):
        return torch.log(x)


class Reciprocal(ElementwiseNonlinear):
    op_type = "Reciprocal"

    def forward(self, x):
        return torch.reciprocal(x)


class Sqrt(ElementwiseNonlinear):
    op_type = "Sqrt"

    def forward(self, x):
        return torch.sqrt(x)


class Sin(ElementwiseNonlinear):
    op_type = "Sin"

    def forward(self, x):
        return torch.sin(x)


class Cos(ElementwiseNonlinear):
    op_type = "Cos"

    def forward(self, x):
        return torch.cos(x)


class Erf(ElementwiseNonlinear):
    op_type = "Erf"

    def forward(self, x):
        return torch.erf(x)


class GELU(ElementwiseNonlinear):
    op_type = "Gelu"

    def forward(self, x):
        return torch.nn.functional.gelu(x)


class Pow(ElementwiseNonlinear):
    """``x ** exponent`` for a constant scalar exponent."""

    op_type = "Pow"

    def __init__(self, exponent: float):
        self.exponent = float(exponent)

    def forward(self, x):
        return torch.pow(x, self.exponent)

    def __repr__(self):
        return f"Pow({self.exponent})"


class LeakyReLU(ElementwiseNonlinear):
    op_type = "LeakyRelu"

    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        return torch.nn.functional.leaky_relu(x, self.negative_slope)


class Clip(ElementwiseNonlinear):
    op_type = "Clip"

    def __init__(self, min_value: float | None = None, max_value: float | None = None):
        self.min_value = min_value
        self.max_value = max_value

    def forward(self, x):
        return torch.clamp(x, self.min_value, self.max_value)


class Sign(ElementwiseNonlinear):
    """ONNX Sign: -1, 0 or 1."""

    op_type = "Sign"

    def forward(self, x):
        return torch.sign(x)


class Floor(ElementwiseNonlinear):
    op_type = "Floor"

    def forward(self, x):
        return torch.floor(x)
