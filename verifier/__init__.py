"""nnverify front door: CLI, API, ONNX import, pipeline, attacks, results.

Convenience exports (imported lazily, so ``nnverify --help`` stays fast)::

    from verifier import verify, bounds, Spec, assert_verified
"""
from __future__ import annotations

_EXPORTS = {
    "verify": ("verifier.api", "verify"),
    "bounds": ("verifier.api", "bounds"),
    "Spec": ("verifier.spec_builder", "SpecBuilder"),
    "SpecBuilder": ("verifier.spec_builder", "SpecBuilder"),
    "VerificationResult": ("verifier.api", "VerificationResult"),
    "assert_verified": ("verifier.testing", "assert_verified"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'verifier' has no attribute {name!r}")
    import importlib

    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)
