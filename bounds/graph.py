"""The computation graph that every bound algorithm works on.

Conventions (used everywhere in ``bounds/`` and ``bab/``):

* Every node has a static per-sample ``shape``: the ONNX static shape of that
  tensor, with dynamic/named dimensions set to 1 (so the ONNX batch axis, when
  present, is part of the per-sample shape).
* At run time every tensor carries one extra leading **batch** axis ``B`` (the
  BaB domain axis): a node's value has shape ``(B, *node.shape)``.
* Linear coefficients flowing backwards have shape ``(B, S, *node.shape)``
  where ``S`` is the number of spec rows being bounded; ``B`` may be 1 and
  broadcast.
* Constant operands are baked into the operators at import time, so
  ``Node.inputs`` only names variable nodes (the graph input or other nodes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from bounds.ops.base import Operator


@dataclass
class Node:
    """One operator application: ``name = op(*inputs)``."""

    name: str
    op: "Operator"
    inputs: list[str]
    shape: tuple[int, ...]
    onnx_name: str = ""  # name of the ONNX node this came from (for messages)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class Graph:
    """A DAG of operator nodes with one input tensor and one output tensor.

    ``nodes`` is kept in topological order.  ``input_name`` names the graph
    input (it is not a node); ``output_name`` names the node whose value is the
    network output.
    """

    input_name: str
    input_shape: tuple[int, ...]
    nodes: list[Node]
    output_name: str
    input_layout: str = "as-is"  # informational: e.g. "NHWC" when channels-last
    _by_name: dict[str, Node] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}

    # ------------------------------------------------------------------ access
    def node(self, name: str) -> Node:
        return self._by_name[name]

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    def shape_of(self, name: str) -> tuple[int, ...]:
        if name == self.input_name:
            return self.input_shape
        return self._by_name[name].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shape_of(self.output_name)

    @property
    def input_numel(self) -> int:
        n = 1
        for s in self.input_shape:
            n *= s
        return n

    @property
    def output_numel(self) -> int:
        n = 1
        for s in self.output_shape:
            n *= s
        return n

    def consumers(self) -> dict[str, list[Node]]:
        """Map from a tensor name to the nodes that read it."""
        users: dict[str, list[Node]] = {self.input_name: []}
        for n in self.nodes:
            users.setdefault(n.name, [])
            for i in n.inputs:
                users.setdefault(i, []).append(n)
        return users

    def ancestors(self, name: str) -> list[Node]:
        """Nodes that ``name`` depends on (itself included), in topological order."""
        needed = {name}
        for n in reversed(self.nodes):
            if n.name in needed:
                needed.update(n.inputs)
        return [n for n in self.nodes if n.name in needed]

    def op_types(self) -> list[str]:
        return sorted({n.op.op_type for n in self.nodes})

    def nonlinear_nodes(self) -> list[Node]:
        return [n for n in self.nodes if not n.op.is_linear]

    # ----------------------------------------------------------------- compute
    def forward(self, x: torch.Tensor, *, keep: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """Concrete evaluation. ``x``: ``(B, *input_shape)``.

        Returns the output ``(B, *output_shape)``, or with ``keep=True`` the
        values of every node (and the input) by name.
        """
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for n in self.nodes:
            values[n.name] = n.op.forward(*(values[i] for i in n.inputs))
        if keep:
            return values
        return values[self.output_name]

    def dtype_device(self) -> tuple[torch.dtype, torch.device]:
        """dtype and device of the graph's floating-point constants (float32 on
        the CPU for a graph without any)."""
        for n in self.nodes:
            for value in vars(n.op).values():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    return value.dtype, value.device
        return torch.float32, torch.device("cpu")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Graph":
        """Move every operator's constants (in place) and return ``self``."""
        for n in self.nodes:
            n.op.to(device=device, dtype=dtype)
        return self

    def summary(self) -> str:
        lines = [f"input {self.input_name} {list(self.input_shape)}"]
        for n in self.nodes:
            lines.append(f"{n.name:>24} = {n.op.op_type}({', '.join(n.inputs)}) -> {list(n.shape)}")
        lines.append(f"output {self.output_name} {list(self.output_shape)}")
        return "\n".join(lines)
