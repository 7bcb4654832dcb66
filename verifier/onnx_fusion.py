"""Graph normalization: fold element-wise affine maps into the preceding node.

``y = (P x) * s + c`` collapses into one operator when ``P`` is

* another element-wise affine map (chains of Sub/Div/Mul/Add/Neg);
* Linear, and ``s``, ``c`` vary only along the output features
  (MatMul + Add, Gemm + Mul ...): ``W' = diag(s) W``, ``b' = s*b + c``;
* Conv / ConvTranspose, and ``s``, ``c`` vary only along output channels
  (BatchNorm folding): the kernel of output channel ``o`` is scaled by ``s_o``.

A node is folded only when the affine map is its single consumer and it is
not the graph output, so no other reader sees a changed value.
"""
from __future__ import annotations

import torch

from bounds.graph import Node
from bounds.ops.conv import Conv, ConvTranspose
from bounds.ops.elementwise_affine import ElementwiseAffine
from bounds.ops.linear import Linear
from bounds.ops.shape_ops import Reshape


def _per_axis(t: torch.Tensor, rank: int, axis: int, size: int) -> torch.Tensor | None:
    """``t`` as a vector along ``axis`` of a rank-``rank`` tensor, or None if it varies elsewhere."""
    if t.dim() > rank:
        return None
    shape = [1] * (rank - t.dim()) + list(t.shape)
    if any(s != 1 for i, s in enumerate(shape) if i != axis):
        return None
    if shape[axis] not in (1, size):
        return None
    return t.reshape(-1).expand(size).clone()


def _fold(prev: Node, affine: ElementwiseAffine):
    if tuple(affine.out_shape) != tuple(affine.in_shape):
        return None  # the affine map broadcasts: keep it separate
    op = prev.op
    rank = len(prev.shape)
    if isinstance(op, ElementwiseAffine):
        return op.then(affine.scale, affine.bias)
    if isinstance(op, Linear) and rank >= 1:
        out = op.weight.shape[0]
        scale = _per_axis(affine.scale, rank, rank - 1, out)
        shift = _per_axis(affine.bias, rank, rank - 1, out)
        if scale is None or shift is None:
            return None
        bias = op.bias if op.bias is not None else torch.zeros(out, dtype=op.weight.dtype)
        return Linear(op.weight * scale[:, None], bias * scale + shift)
    if isinstance(op, (Conv, ConvTranspose)):
        d = op.dims
        channel_axis = rank - 1 - d
        channels = prev.shape[channel_axis]
        scale = _per_axis(affine.scale, rank, channel_axis, channels)
        shift = _per_axis(affine.bias, rank, channel_axis, channels)
        if scale is None or shift is None:
            return None
        bias = op.bias if op.bias is not None else torch.zeros(channels, dtype=op.weight.dtype)
        new_bias = bias * scale + shift
        if isinstance(op, Conv):
            weight = op.weight * scale.reshape(-1, *([1] * (d + 1)))
            return Conv(weight, new_bias, op.strides, op.pads, op.dilations, op.group, op.in_shape)
        w = op.weight  # (C_in, C_out/g, *k); output channel o = g_idx * (C_out/g) + j
        g = op.group
        grouped = w.reshape(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
        grouped = grouped * scale.reshape(g, 1, w.shape[1], *([1] * d))
        return ConvTranspose(grouped.reshape(w.shape), new_bias, op.strides, op.pads, op.dilations, g,
                             op.output_padding)
    return None


def _fold_through_reshape(node: Node, reshape: Node, by_name, consumers, output_name) -> bool:
    """``affine(reshape(P x))`` -> ``reshape(P' x)``: move the affine map before the reshape
    (its constants expanded to full size) and fold it into ``P``."""
    producer = by_name.get(reshape.inputs[0])
    affine = node.op
    if producer is None or producer.name == output_name or consumers.get(producer.name, 0) != 1:
        return False
    if tuple(affine.out_shape) != tuple(affine.in_shape):
        return False
    scale = affine.scale.expand(node.shape).reshape(producer.shape)
    shift = affine.bias.expand(node.shape).reshape(producer.shape)
    folded = _fold(producer, ElementwiseAffine(scale, shift, producer.shape))
    if folded is None:
        return False
    producer.op = folded
    node.op = reshape.op
    node.inputs = [producer.name]
    return True


def fuse_affine_chains(nodes: list[Node], output_name: str) -> list[Node]:
    """Fold every foldable ``ElementwiseAffine`` into its producer (in topological order)."""
    by_name = {n.name: n for n in nodes}
    consumers: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    removed: set[str] = set()
    for node in nodes:
        if not isinstance(node.op, ElementwiseAffine) or len(node.inputs) != 1:
            continue
        prev = by_name.get(node.inputs[0])
        if prev is None or prev.name == output_name or consumers.get(prev.name, 0) != 1:
            continue
        if isinstance(prev.op, Reshape) and _fold_through_reshape(node, prev, by_name, consumers, output_name):
            removed.add(prev.name)
            continue
        folded = _fold(prev, node.op)
        if folded is None:
            continue
        node.op = folded
        node.inputs = list(prev.inputs)
        node.onnx_name = prev.onnx_name or node.onnx_name
        removed.add(prev.name)
    return [n for n in nodes if n.name not in removed]
