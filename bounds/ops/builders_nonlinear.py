"""ONNX builders for the nonlinear operators (the classes live in their own modules).

Kept apart so that the relaxation modules stay free of import concerns.
"""
from __future__ import annotations

import math

from bounds.ops import activations, activations_extra
from bounds.ops.registry import BuildError, NodeContext, normalize_axis, register


@register("Relu")
def build_relu(ctx: NodeContext):
    from bounds.ops.relu import ReLU
    return ctx.emit(ReLU(), [ctx.var(0)], 0)


_SIMPLE = {name: getattr(activations, name) for name in (
    "Sigmoid", "Tanh", "Exp", "Log", "Reciprocal", "Sqrt", "Sin", "Cos", "Erf", "Sign", "Floor")}
_SIMPLE.update(Atan=activations_extra.Atan, Softsign=activations_extra.Softsign,
               Softplus=activations_extra.Softplus, HardSwish=activations_extra.HardSwish)


@register(*_SIMPLE)
def build_simple_activation(ctx: NodeContext):
    return ctx.emit(_SIMPLE[ctx.op_type](), [ctx.var(0)], 0)


@register("Elu")
def build_elu(ctx: NodeContext):
    return ctx.emit(activations_extra.Elu(float(ctx.attr("alpha", 1.0))), [ctx.var(0)], 0)


@register("Selu")
def build_selu(ctx: NodeContext):
    alpha = float(ctx.attr("alpha", activations_extra.SELU_ALPHA))
    gamma = float(ctx.attr("gamma", activations_extra.SELU_GAMMA))
    return ctx.emit(activations_extra.Elu(alpha, gamma), [ctx.var(0)], 0)


@register("Pow")
def build_pow(ctx: NodeContext):
    if not (ctx.is_var(0) and ctx.is_const(1)):
        raise BuildError("Pow needs a variable base and a constant exponent")
    exponent = ctx.const(1, float_=True)
    if exponent.numel() != 1 and not bool((exponent == exponent.reshape(-1)[0]).all()):
        raise BuildError("Pow with a non-uniform exponent tensor")
    value = float(exponent.reshape(-1)[0])
    if value == 1.0:
        return ctx.var(0)
    return ctx.emit(activations.Pow(value), [ctx.var(0)], 0)


@register("Softmax")
def build_softmax(ctx: NodeContext):
    from bounds.ops.softmax import Softmax
    from bounds.ops.shape_ops import Reshape
    x = ctx.var(0)
    default = -1 if ctx.opset >= 13 else 1
    axis = normalize_axis(ctx.attr("axis", default), x.rank)
    if ctx.opset >= 13 or axis == x.rank - 1:
        return ctx.emit(Softmax(axis), [x], 0)
    # opset < 13: softmax over all axes from `axis` on, i.e. on a 2-D view
    flat = ctx.emit(Reshape((math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))), [x])
    y = ctx.emit(Softmax(1), [flat])
    return ctx.emit(Reshape(x.shape), [y], 0)


@register("MaxPool")
def build_max_pool(ctx: NodeContext):
    from bounds.ops.pooling_max import MaxPool
    x = ctx.var(0)
    if ctx.num_outputs > 1:
        raise BuildError("MaxPool with an Indices output")
    kernel = list(ctx.attr("kernel_shape"))
    d = len(kernel)
    strides = list(ctx.attr("strides", [1] * d))
    dilations = list(ctx.attr("dilations", [1] * d))
    auto_pad = ctx.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        spatial = x.shape[-d:]
        total = []
        for i in range(d):
            out = -(-spatial[i] // strides[i])
            total.append(max((out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - spatial[i], 0))
        begins = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        pads = begins + [t - b for t, b in zip(total, begins)]
    elif auto_pad == "VALID":
        pads = [0] * (2 * d)
    else:
        pads = list(ctx.attr("pads", [0] * (2 * d)))
    op = MaxPool(kernel, strides, pads, dilations, bool(ctx.attr("ceil_mode", 0)))
    return ctx.emit(op, [x], 0)
