"""Zero-config choice of the branch-and-bound strategy, and the loop over a
spec's properties.

The instance decides (every choice can be forced through ``BabConfig``):

* **input-split** when the input has at most ``INPUT_SPLIT_MAX_DIM`` values:
  halving the box shrinks every relaxation at once, whatever the operators
  (ReLU, Sin, Sigmoid, ...), and decides ACAS Xu-style properties quickly;
* **relu-split** (beta-CROWN) for higher-dimensional, piecewise-linear nets;
* **genbab** for higher-dimensional nets with general nonlinearities, when
  that module is present; otherwise input-split for moderately small inputs
  (``<= GENERAL_INPUT_SPLIT_MAX_DIM``) and "none" (undecided) above.

:func:`solve_spec` runs the chosen strategy on every property of a spec and
stops at the first ``sat``.  With input splitting, properties whose stacked
rows have the same clause layout are searched together, one root per
property (nn4sys: thousands of input boxes in a few passes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from bab.types import BabConfig, BabOutcome, Validator
from bounds.graph import Graph

#: Inputs up to this size are searched by input splitting (ACAS Xu 5,
#: rl_benchmarks 4-8, gcas 14, tll 2, linearizenn 4; mnist_fc/safenlp >= 30
#: are not).
INPUT_SPLIT_MAX_DIM = 16
#: Without GenBaB, general nonlinear nets up to this input size still go to
#: input splitting (sound, slow in high dimension).
GENERAL_INPUT_SPLIT_MAX_DIM = 32
#: Piecewise-linear operators relu-split handles: it splits ReLUs and bounds
#: MaxPool (never split) by its relaxation in every pass.
PIECEWISE_LINEAR = {"Relu", "MaxPool"}
STRATEGIES = ("input-split", "relu-split", "genbab")


@dataclass
class StrategyChoice:
    name: str          # "input-split" | "relu-split" | "genbab" | "none"
    reason: str
    config: BabConfig  # the caller's config (knobs the strategy resolves stay None)


def _strategy_function(name: str) -> Callable | None:
    """The BaB entry point of a strategy, or None when its module is absent."""
    try:
        if name == "input-split":
            from bab.input_split import input_split_bab
            return input_split_bab
        if name == "relu-split":
            from bab.relu_split import relu_split_bab
            return relu_split_bab
        if name == "genbab":
            from bab.genbab import genbab_bab  # type: ignore[attr-defined]
            return genbab_bab
    except ImportError:
        return None
    return None


def free_input_dims(graph: Graph, spec=None) -> int:
    """Input values that vary: the widest count of non-degenerate intervals
    over the spec's boxes (nn4sys mscn: 154 inputs, 3 of them free), else all."""
    if spec is None or not spec.properties:
        return graph.input_numel
    return max(int(np.count_nonzero(np.asarray(p.box.upper) > np.asarray(p.box.lower))) for p in spec.properties)


def choose_strategy(graph: Graph, config: BabConfig | None = None, spec=None) -> StrategyChoice:
    """Pick the strategy from the (free) input size and the operators of ``graph``."""
    config = config or BabConfig()
    # every strategy bounds through the whole graph: an operator without a linear rule rules BaB out
    unbounded = sorted({n.op.op_type for n in graph.nodes if not n.op.has_backward})
    if unbounded:
        return StrategyChoice("none", f"no linear relaxation for {unbounded}: no applicable BaB", config)
    if config.strategy != "auto":
        if config.strategy not in STRATEGIES:
            raise ValueError(f"unknown BaB strategy {config.strategy!r}; expected auto or one of {STRATEGIES}")
        return StrategyChoice(config.strategy, "forced by configuration", config)
    dim = free_input_dims(graph, spec)
    nonlinear = {n.op.op_type for n in graph.nonlinear_nodes()}
    general = sorted(nonlinear - PIECEWISE_LINEAR)
    if dim <= INPUT_SPLIT_MAX_DIM:
        return StrategyChoice("input-split", f"{dim} free inputs <= {INPUT_SPLIT_MAX_DIM}", config)
    if not general:
        return StrategyChoice("relu-split", f"{dim} inputs, piecewise-linear ({', '.join(sorted(nonlinear)) or 'no'} "
                                            "activations)", config)
    if _strategy_function("genbab") is not None:
        return StrategyChoice("genbab", f"{dim} inputs, general nonlinearities {general}", config)
    if dim <= GENERAL_INPUT_SPLIT_MAX_DIM:
        return StrategyChoice("input-split", f"{dim} inputs, general nonlinearities {general}, no GenBaB", config)
    return StrategyChoice("none", f"{dim} inputs with general nonlinearities {general}: no applicable BaB", config)


def stacked_rows(prop) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Every clause's rows of a property stacked: ``(matrix, offset, clause_of_row)``."""
    matrix = np.concatenate([c.matrix for c in prop.clauses], axis=0)
    offset = np.concatenate([c.offset for c in prop.clauses], axis=0)
    clause_of_row = [k for k, c in enumerate(prop.clauses) for _ in range(c.num_rows)]
    return matrix, offset, clause_of_row


def _groups(properties: Sequence, batch_roots: bool) -> list[list[int]]:
    """Indices of properties searched together: equal clause layout (and only
    when the strategy batches roots), in first-seen order."""
    if not batch_roots:
        return [[i] for i in range(len(properties))]
    by_layout: dict[tuple, list[int]] = {}
    for i, prop in enumerate(properties):
        layout = tuple(c.num_rows for c in prop.clauses)
        by_layout.setdefault(layout, []).append(i)
    return list(by_layout.values())


def _merge_stats(total: dict, part: dict) -> None:
    for key, value in part.items():
        if key in ("domains_visited", "passes", "candidates_checked", "roots"):
            total[key] = total.get(key, 0) + value
        elif key == "max_depth":
            total[key] = max(total.get(key, 0), value)
        elif key.startswith("time") and isinstance(value, (int, float)):
            total[key] = total.get(key, 0.0) + value
        elif key not in total:
            total[key] = value


def solve_spec(graph: Graph, spec, config: BabConfig | None = None, deadline: float | None = None,
               validator: Validator | None = None, progress=None,
               skip: Sequence[int] = (), roots: Mapping[int, object] | None = None) -> BabOutcome:
    """Decide every property of ``spec`` by BaB: ``sat`` at the first validated
    counterexample, ``unsat`` when all are verified, else ``timeout`` (deadline)
    or ``unknown``.  ``validator`` checks a flattened point against the whole
    spec; ``skip`` lists properties already proven (e.g. by the incomplete stage).
    ``roots``: per-property root bound results (a batch-1
    :class:`bounds.engine.BoundResult` over that property's box and stacked
    rows, e.g. from the incomplete stage) handed to ReLU-split / GenBaB,
    which reuse their intermediate boxes instead of recomputing them.
    """
    config = config or BabConfig()
    deadline = float("inf") if deadline is None else deadline
    choice = choose_strategy(graph, config, spec)
    stats: dict = {"strategy": choice.name, "strategy_reason": choice.reason}
    if progress is not None and hasattr(progress, "note"):
        progress.note(f"strategy {choice.name}: {choice.reason}")
    solver = _strategy_function(choice.name) if choice.name != "none" else None
    if solver is None:
        stats["message"] = f"strategy {choice.name} not available"
        return BabOutcome("unknown", None, stats)
    todo = [i for i in range(len(spec.properties)) if i not in set(skip)]
    properties = [spec.properties[i] for i in todo]
    undecided = None
    for group in _groups(properties, batch_roots=choice.name == "input-split"):
        if time.monotonic() > deadline:
            undecided = "timeout"
            break
        members = [properties[i] for i in group]
        rows = [stacked_rows(p) for p in members]
        if len(members) == 1:
            lower, upper = members[0].box.lower, members[0].box.upper
            matrix, offset = rows[0][0], rows[0][1]
        else:
            lower = np.stack([p.box.lower for p in members])
            upper = np.stack([p.box.upper for p in members])
            matrix = np.stack([r[0] for r in rows])
            offset = np.stack([r[1] for r in rows])
        extra = {}
        root = (roots or {}).get(todo[group[0]]) if len(members) == 1 else None
        if root is not None and choice.name in ("relu-split", "genbab"):
            extra["root"] = root
        outcome = solver(graph, lower, upper, matrix, offset, rows[0][2], config, deadline, validator, progress,
                         **extra)
        _merge_stats(stats, outcome.stats)
        if outcome.status == "sat":
            return BabOutcome("sat", outcome.counterexample, stats)
        if outcome.status != "unsat":
            if outcome.status == "timeout" or undecided is None:
                undecided = outcome.status
            if outcome.status == "timeout":
                break
    return BabOutcome(undecided or "unsat", None, stats)
