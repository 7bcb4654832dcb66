"""Operators of the bound-propagation graph.

Importing this package registers every ONNX builder (see ``registry``).
"""
from bounds.ops import (  # noqa: F401  (imported for their @register side effects)
    add,
    builders_composite,
    builders_nonlinear,
    conv,
    discrete,
    elementwise_affine,
    linear,
    pooling_avg,
    reduce,
    resize,
    shape_ops,
)
from bounds.ops.registry import register, supported_ops  # noqa: F401
