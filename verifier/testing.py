"""Helpers for model test suites: ``assert_verified`` (plain pytest, no plugin).

    >>> from verifier.testing import assert_verified     # doctest: +SKIP
    >>> def test_model_is_robust():                      # doctest: +SKIP
    ...     assert_verified(model, Spec.linf_ball(x, 0.01).robust(3), example_input=x, timeout=30)

The assertion fails on ``sat`` (with the validated counterexample in the
message), and on ``unknown``/``timeout``/``error`` unless ``allow_undecided``.
Returns the :class:`~verifier.api.VerificationResult` for further checks.
"""
from __future__ import annotations


def assert_verified(model, spec, *, allow_undecided: bool = False, **verify_options):
    """Assert that ``spec`` holds on ``model`` (``status == "unsat"``)."""
    from verifier.api import verify

    __tracebackhide__ = True  # pytest shows the caller's line
    result = verify(model, spec, **verify_options)
    if result.status == "unsat":
        return result
    if result.status == "sat":
        cex = result.counterexample
        raise AssertionError(
            f"property violated (clause {cex.clause_index} of box {cex.property_index}): "
            f"input {cex.inputs.tolist()} gives output {cex.outputs.tolist()}")
    if allow_undecided and result.status in ("unknown", "timeout"):
        return result
    raise AssertionError(f"property not verified: {result.summary()}")
