"""Explicit piecewise-linear form of a Graph, for the LP/MIP oracle.

A graph made of linear operators (any op with ``is_linear=True``: Linear,
Conv, Add of two variables, Reshape, ...) and ReLUs is rewritten over
*variable blocks*: the graph input ``x`` and the output ``y_k`` of every ReLU.
Every other node's value is an affine function of earlier blocks,

    value = sum_b  M_b @ block_b  +  bias          (flattened, float64)

which we obtain by pushing the identity basis through the op chain: for a
jointly linear op ``f(x_1..x_k) = L(x_1..x_k) + c``, the coefficient of block
``b`` is ``f(M_1b, ..., M_kb) - f(0, ..., 0)`` evaluated with the columns of
the input coefficient matrices as a batch, and the bias is ``f(bias_1..k)``.
This works for any linear operator without knowing its internals.

Each ReLU ``y_k = max(z_k, 0)`` then has its pre-activation ``z_k`` (the
ReLU's input node) written as an affine expression over earlier blocks.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from bounds.graph import Graph, Node
from bounds.ops.relu import ReLU


class UnsupportedForLP(NotImplementedError):
    """A node that the LP/MIP encoding cannot express (not linear, not ReLU)."""


@dataclass
class AffineExpr:
    """``value = sum_b terms[b] @ block_b + bias``; ``terms[b]``: (n, n_b).

    A term equal to :data:`IDENTITY` stands for the identity matrix (a block
    referenced as is), which avoids storing n x n identities.
    """

    terms: dict[str, np.ndarray | None]
    bias: np.ndarray

    @property
    def size(self) -> int:
        return self.bias.shape[0]

    def dense_term(self, block: str) -> np.ndarray:
        term = self.terms[block]
        return np.eye(self.size) if term is IDENTITY else term


IDENTITY = None  # marker stored in AffineExpr.terms for an identity coefficient


@dataclass
class ReluUnit:
    """``y = max(z, 0)`` with ``z`` the value of node ``input_name``."""

    name: str        # ReLU node name = the block of its outputs
    input_name: str  # pre-activation node name (key of intermediate bounds)
    size: int


@dataclass
class PiecewiseLinearNet:
    """A graph rewritten over variable blocks (see module docstring).

    ``pre_activations`` maps each ReLU input node to its affine expression; the
    dict and ``relus`` are in topological order.  ``graph64`` is a float64 CPU
    copy of the graph, used for forward passes that check witnesses.
    """

    input_name: str
    input_shape: tuple[int, ...]
    input_size: int
    relus: list[ReluUnit]
    pre_activations: dict[str, AffineExpr]
    pre_activation_shapes: dict[str, tuple[int, ...]]
    output: AffineExpr
    graph64: Graph
    block_sizes: dict[str, int] = field(default_factory=dict)

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Float64 concrete values ``(B, n)`` of every pre-activation and the output."""
        values = self.graph64.forward(torch.as_tensor(x, dtype=torch.float64).reshape(
            -1, *self.input_shape), keep=True)
        out = {name: values[name].reshape(values[name].shape[0], -1).numpy()
               for name in self.pre_activations}
        out["__output__"] = values[self.graph64.output_name].reshape(
            values[self.graph64.output_name].shape[0], -1).numpy()
        return out


def _float64_graph(graph: Graph, nodes: list[Node]) -> Graph:
    """Copy of (part of) ``graph`` whose operators hold float64 CPU constants.

    Operators are shallow-copied before ``to`` so the caller's graph is untouched.
    """
    copies = [Node(n.name, copy.copy(n.op).to(device="cpu", dtype=torch.float64),
                   list(n.inputs), n.shape, n.onnx_name) for n in nodes]
    return Graph(graph.input_name, graph.input_shape, copies, graph.output_name,
                 graph.input_layout)


def _apply_linear(node: Node, inputs: list[AffineExpr], input_shapes: list[tuple[int, ...]]) -> AffineExpr:
    """Affine expression of a linear node from those of its inputs."""
    op = node.op

    def batch(mats: list[np.ndarray | None], width: int) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(m.T)).reshape(width, *shape)
                for m, shape in zip(mats, input_shapes)]

    with torch.no_grad():
        constant = op.forward(*(torch.zeros(1, *s, dtype=torch.float64) for s in input_shapes))
        bias = op.forward(*batch([e.bias[:, None] for e in inputs], 1)).reshape(-1).numpy()
        terms: dict[str, np.ndarray | None] = {}
        blocks = list(dict.fromkeys(b for e in inputs for b in e.terms))
        for block in blocks:
            width = next(e.dense_term(block).shape[1] for e in inputs if block in e.terms)
            mats = [e.dense_term(block) if block in e.terms else np.zeros((e.size, width))
                    for e in inputs]
            # f(M) - f(0) removes the op's own constant (e.g. a Linear bias).
            out = op.forward(*batch(mats, width)) - constant
            terms[block] = np.ascontiguousarray(out.reshape(width, -1).numpy().T)
    return AffineExpr(terms, bias)


def encode_graph(graph: Graph) -> PiecewiseLinearNet:
    """Rewrite ``graph`` (linear ops and ReLUs only) over variable blocks.

    Only the ancestors of the output are encoded.  Raises
    :class:`UnsupportedForLP` on any other nonlinear node.
    """
    nodes = graph.ancestors(graph.output_name)
    for node in nodes:
        if not node.op.is_linear and not isinstance(node.op, ReLU):
            raise UnsupportedForLP(
                f"LP/MIP encoding supports linear ops and ReLU only; node {node.name!r} is {node.op.op_type}")
    graph64 = _float64_graph(graph, nodes)
    n_in = graph.input_numel
    exprs: dict[str, AffineExpr] = {graph.input_name: AffineExpr({graph.input_name: IDENTITY}, np.zeros(n_in))}
    block_sizes = {graph.input_name: n_in}
    relus: list[ReluUnit] = []
    pre_activations: dict[str, AffineExpr] = {}
    pre_shapes: dict[str, tuple[int, ...]] = {}
    for node in graph64.nodes:
        if isinstance(node.op, ReLU):
            source = node.inputs[0]
            pre_activations.setdefault(source, exprs[source])
            pre_shapes[source] = graph64.shape_of(source)
            relus.append(ReluUnit(node.name, source, node.numel))
            block_sizes[node.name] = node.numel
            exprs[node.name] = AffineExpr({node.name: IDENTITY}, np.zeros(node.numel))
        else:
            exprs[node.name] = _apply_linear(node, [exprs[i] for i in node.inputs],
                                             [graph64.shape_of(i) for i in node.inputs])
    return PiecewiseLinearNet(graph.input_name, tuple(graph.input_shape), n_in, relus, pre_activations,
                              pre_shapes, exprs[graph.output_name], graph64, block_sizes)


def expression_bounds(expr: AffineExpr, block_bounds: dict[str, tuple[np.ndarray, np.ndarray]]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds of ``expr`` from bounds of its blocks (exact over a box).

    ``sum_b M_b x_b`` is smallest at ``x_b = lower`` where ``M_b > 0`` and at
    ``upper`` where ``M_b < 0``; with one block (e.g. the input) this is the
    exact minimum over the box, i.e. the LP optimum.
    """
    lower = expr.bias.copy()
    upper = expr.bias.copy()
    for block, term in expr.terms.items():
        lo, hi = block_bounds[block]
        if term is IDENTITY:
            lower += lo
            upper += hi
            continue
        pos = np.clip(term, 0, None)
        neg = np.clip(term, None, 0)
        lower += pos @ lo + neg @ hi
        upper += pos @ hi + neg @ lo
    return lower, upper


def widen(lower: np.ndarray, upper: np.ndarray, rel: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Widen bounds by a tiny margin that covers float64 rounding in our sums."""
    return lower - rel * (1.0 + np.abs(lower)), upper + rel * (1.0 + np.abs(upper))
