"""Branching: the coefficient pass reproduces CROWN, BaBSR scores only pick
unstable neurons, and both heuristics decide random nets (FSB never needs
more domains than a random choice on average)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bab.branching import babsr_decisions, babsr_scores, coefficient_pass, fsb_decisions, relu_sites
from bab.relu_split import ReluBabSettings, relu_split_bab
from bab.types import BabConfig
from bounds.engine import BoundConfig, compute_bounds
from tests.nets import seeded_relu_net


def _setup(seed=2):
    graph = seeded_relu_net([4, 12, 12, 2], seed=seed)
    lower, upper = -torch.ones(1, 4), torch.ones(1, 4)
    spec = torch.tensor([[[1.0, -1.0], [0.0, 1.0]]])
    offset = torch.zeros(1, 2)
    return graph, lower, upper, spec, offset


def test_coefficient_pass_matches_crown_and_records_relu_coefficients():
    graph, lower, upper, spec, offset = _setup()
    crown = compute_bounds(graph, lower, upper, spec, offset, config=BoundConfig(method="crown"))
    sites = relu_sites(graph)
    info = coefficient_pass(graph, lower, upper, spec, offset, crown.intermediate, None, [], sites)
    assert torch.allclose(info.row_lower, crown.lower, atol=1e-5)
    assert set(info.relu_coeffs) == {"relu0", "relu1"}
    assert info.relu_coeffs["relu1"].shape == (1, 2, 12)
    # the input minimizer of each row attains the row's relaxed bound direction
    assert info.input_coeffs.shape == (1, 2, 4)


def test_babsr_scores_are_finite_exactly_on_unstable_neurons():
    graph, lower, upper, spec, offset = _setup()
    crown = compute_bounds(graph, lower, upper, spec, offset, config=BoundConfig(method="crown"))
    sites = relu_sites(graph)
    info = coefficient_pass(graph, lower, upper, spec, offset, crown.intermediate, None, [], sites)
    scores = babsr_scores(sites, crown.intermediate, info.relu_coeffs, None, torch.ones(1, 2))
    for site in sites:
        lo, up = crown.intermediate[site.source]
        unstable = ((lo < 0) & (up > 0)).flatten(1)
        assert torch.equal(torch.isfinite(scores[site.source]), unstable)
        assert (scores[site.source][unstable] >= 0).all()
    (decision,) = babsr_decisions(scores)
    flat = torch.cat([scores[s.source] for s in sites], 1)
    assert scores[decision.node][0, decision.index] == flat.max()
    # weight 0 on every row: nothing matters, scores collapse to the tie-breaker
    zero = babsr_scores(sites, crown.intermediate, info.relu_coeffs, None, torch.zeros(1, 2))
    assert all((v[torch.isfinite(v)] < 1e-6).all() for v in zero.values())


def test_fsb_picks_the_candidate_with_the_best_worse_child():
    scores = {"z": torch.tensor([[3.0, 2.0, 1.0, -float("inf")]])}
    seen = []

    def evaluate(pairs):
        seen.extend(pairs)
        table = {0: [-1.0, 5.0], 1: [0.5, 0.6], 2: [0.2, 9.0]}
        return torch.tensor([table[d.index] for _, d in pairs])

    (choice,) = fsb_decisions(scores, 3, evaluate)
    assert choice.index == 1 and len(seen) == 3


def _domains_needed(branching: str, seeds) -> list[int]:
    visited = []
    for seed in seeds:
        graph = seeded_relu_net([3, 10, 10, 2], seed=seed)
        lower, upper = -0.7 * torch.ones(3), 0.7 * torch.ones(3)
        spec = np.array([[1.0, -1.0]])
        gen = torch.Generator().manual_seed(seed)
        values = graph.forward(lower + (upper - lower) * torch.rand(4000, 3, generator=gen)).double().numpy() @ spec.T
        offset = np.array([values.min() - 0.02])

        def validator(x, graph=graph, offset=offset):
            y = graph.forward(torch.as_tensor(x, dtype=torch.float32).reshape(1, -1)).double()[0].numpy()
            return bool(spec[0] @ y - offset[0] <= 0)

        outcome = relu_split_bab(graph, lower, upper, spec, offset, [0], BabConfig(use_cuts=False),
                                 time.monotonic() + 20, validator,
                                 settings=ReluBabSettings(batch_size=8, branching=branching))
        assert outcome.status in ("unsat", "sat"), outcome.stats
        visited.append(outcome.stats["domains_visited"] if outcome.status == "unsat" else 0)
    return visited


@pytest.mark.slow
def test_both_heuristics_decide_and_fsb_is_not_worse_than_babsr_overall():
    torch.set_num_threads(1)
    seeds = range(6)
    babsr = _domains_needed("babsr", seeds)
    fsb = _domains_needed("fsb", seeds)
    assert sum(fsb) <= 1.2 * sum(babsr) + 8, (babsr, fsb)
