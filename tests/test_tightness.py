"""CROWN <= alpha-CROWN <= LP optimum (same fixed intermediate bounds) on real nets."""
from __future__ import annotations

import pytest

from benchmarks.tightness import measure


@pytest.mark.parametrize("name", ["acasxu_1_1", "mnist_256x2"])
def test_alpha_crown_between_crown_and_lp_and_closes_the_gap(name):
    result = measure(name, boxes=1, iterations=40, seed=0)
    assert result["rows"] >= 4
    assert result["order_violations"] == 0 and result["lp_stopped"] == 0
    assert result["rows_with_gap"] >= 1
    assert result["mean_gap_closed"] >= 0.5
