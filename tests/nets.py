"""Tiny fully connected ReLU nets for tests.

``Linear -> ReLU -> ... -> Linear``: a ReLU after every layer but the last,
nodes named ``fc{i}`` / ``relu{i}``, input ``x``.  Two random families:
:func:`random_relu_net` draws from a numpy generator (weights
``N(0, 1/fan_in)``, biases ``N(0, 0.3^2)``), :func:`seeded_relu_net` from a
seeded torch generator.
"""
from __future__ import annotations

import numpy as np
import torch

from bounds.graph import Graph, Node
from bounds.ops.linear import Linear
from bounds.ops.relu import ReLU


def relu_chain(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Graph:
    """The chain of the given ``(weight (out, in), bias (out,))`` layers."""
    nodes, prev = [], "x"
    for i, (weight, bias) in enumerate(layers):
        nodes.append(Node(f"fc{i}", Linear(weight, bias), [prev], (weight.shape[0],)))
        prev = f"fc{i}"
        if i < len(layers) - 1:
            nodes.append(Node(f"relu{i}", ReLU(), [prev], (weight.shape[0],)))
            prev = f"relu{i}"
    return Graph("x", (layers[0][0].shape[1],), nodes, prev)


def random_relu_net(rng: np.random.Generator, n_in: int, widths: list[int], n_out: int,
                    dtype: torch.dtype = torch.float32) -> Graph:
    """``n_in -> widths... -> n_out`` with weights and biases drawn from ``rng``."""
    sizes = [n_in] + widths + [n_out]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weight = torch.tensor(rng.normal(size=(fan_out, fan_in)) / fan_in ** 0.5, dtype=dtype)
        bias = torch.tensor(0.3 * rng.normal(size=fan_out), dtype=dtype)
        layers.append((weight, bias))
    return relu_chain(layers)


def seeded_relu_net(sizes: list[int], seed: int, dtype: torch.dtype = torch.float32, *,
                    bias_scale: float = 0.1, fan_in_scaled: bool = True) -> Graph:
    """``sizes[0] -> ... -> sizes[-1]`` from ``torch.Generator().manual_seed(seed)``:
    weights ``N(0, 1)`` (divided by ``sqrt(fan_in)`` when ``fan_in_scaled``),
    biases ``bias_scale * N(0, 1)``."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weight = torch.randn(fan_out, fan_in, generator=gen, dtype=dtype)
        if fan_in_scaled:
            weight = weight / fan_in ** 0.5
        bias = bias_scale * torch.randn(fan_out, generator=gen, dtype=dtype)
        layers.append((weight, bias))
    return relu_chain(layers)
