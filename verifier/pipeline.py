"""The verification pipeline shared by every front door (CLI, VNN-COMP
scripts, Python API, benchmark harness).

Stages, cheap and decisive first, each bounded by WORK (points, restarts x
steps) and a small time cap rather than by a share of the budget, and all by
the deadline ``start + config.timeout``:

1. **onnxruntime falsification** (:func:`verifier.attack.ort_falsify`): box
   centres and up to a few thousand samples on the original model, before
   torch is imported (a sat ACAS Xu instance ends in well under a second;
   on large inputs sampling stops after 256 points when every margin is far
   from zero);
2. **import** of the model into a :class:`bounds.graph.Graph` (torch);
3. **CROWN** over every property at once (:func:`incomplete_stage` with
   ``method="crown"``; many boxes are the domain axis of one pass);
4. a **short PGD** run (``pgd_steps`` steps, ``pgd_time_cap`` seconds at most);
5. **alpha-CROWN** on the properties CROWN left open;
6. **branch and bound** (:func:`complete_stage`) on the properties still
   open, with their open clauses only, starting from the incomplete stage's
   root bounds; it attacks inside;
7. longer PGD runs with fresh seeds, only while time remains.

The answer is ``sat`` only with a counterexample confirmed on onnxruntime,
``unsat`` only when every clause is proven, ``timeout`` when the deadline
passed first, ``unknown`` when every stage gave up earlier.  ``stats``
records each stage's seconds (``stats["stages"]``) and what proved the
property (``stats["proven_by"]``: ``crown``, ``alpha-crown`` or ``bab``).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from verifier.attack import AttackStats, ort_falsify, pgd_falsify
from verifier.config import VerifyConfig
from verifier.errors import InputError
from verifier.results import Result
from verifier.validate import OrtModel, check_spec_fits, read_model_bytes


@dataclass
class _Run:
    """Book-keeping of one call: the clock, the stats and the log switch."""

    config: VerifyConfig
    start: float = field(default_factory=time.monotonic)
    stats: dict = field(default_factory=dict)

    @property
    def deadline(self) -> float:
        return self.start + self.config.timeout

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def log(self, message: str) -> None:
        if self.config.verbose:
            print(f"nnverify: [{self.elapsed():7.2f}s] {message}", file=sys.stderr, flush=True)

    def result(self, status: str, **kwargs) -> Result:
        return Result(status=status, time=self.elapsed(), stats=self.stats, **kwargs)

    def out_of_time(self) -> Result:
        return self.result("timeout", message="deadline reached")


# ------------------------------------------------------------------ inputs
def parse_property(path: str | os.PathLike):
    """Parse a VNN-LIB file into a :class:`vnnlib.spec.Spec` (``.gz`` accepted
    where the parser accepts it).  Raises ``InputError`` for a missing file and
    ``VnnlibError`` for a malformed one."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a VNN-LIB file")
    from vnnlib import parse_vnnlib

    return parse_vnnlib(path)


def load_graph(model_path: str | os.PathLike, config: VerifyConfig):
    """Import the ONNX model as a Graph on the configured device (imports torch)."""
    import torch

    from verifier.onnx_import import load_onnx

    threads = config.torch_threads()
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    graph = load_onnx(os.fspath(model_path))
    return graph.to(device=config.torch_device())


# ------------------------------------------------------------------ public
def run(model_path: str | os.PathLike, property_path: str | os.PathLike, config: VerifyConfig | None = None) -> Result:
    """Verify the property file against the ONNX model; see the module docstring.

    Raises :class:`verifier.errors.NNVerifyError` / ``vnnlib.VnnlibError`` on bad
    input (the CLI turns them into an ``error`` result and exit code 3).
    """
    config = config or VerifyConfig()
    state = _Run(config)
    model_path = os.fspath(model_path)
    model = OrtModel.load(model_path, read_model_bytes(model_path))
    spec = parse_property(property_path)
    check_spec_fits(spec, model.num_inputs, model.num_outputs, model_path)
    state.stats.update(num_inputs=spec.num_inputs, num_outputs=spec.num_outputs,
                       num_boxes=len(spec.properties), num_clauses=spec.num_clauses)
    state.log(f"loaded {model_path} and {spec.source or property_path}: {spec.num_inputs} inputs, "
              f"{spec.num_outputs} outputs, {len(spec.properties)} boxes, {spec.num_clauses} clauses")
    return _verify(state, model, spec, lambda: load_graph(model_path, config))


def verify_spec(graph, spec, model: bytes | str | os.PathLike, config: VerifyConfig | None = None) -> Result:
    """Verify an already parsed ``spec`` on an imported ``graph``; ``model`` (the
    ONNX bytes or path of the same network) is what counterexamples are
    validated on."""
    config = config or VerifyConfig()
    state = _Run(config)
    if isinstance(model, (bytes, bytearray)):
        ort_model = OrtModel.load("<model bytes>", bytes(model))
    else:
        ort_model = OrtModel.load(model, read_model_bytes(model))
    check_spec_fits(spec, ort_model.num_inputs, ort_model.num_outputs, ort_model.path)
    if graph.input_numel != spec.num_inputs or graph.output_numel != spec.num_outputs:
        raise InputError(f"graph has {graph.input_numel} inputs and {graph.output_numel} outputs, "
                         f"property has {spec.num_inputs} and {spec.num_outputs}")
    return _verify(state, ort_model, spec, lambda: graph)


# ------------------------------------------------------------------ stages
def incomplete_stage(graph, spec, deadline: float, config: VerifyConfig, stats: dict,
                     method: str = "alpha-crown", previous=None):
    """Incomplete verification of every clause of every property by bound
    propagation (:func:`verifier.incomplete.bound_spec`): CROWN, then (with
    ``method="alpha-crown"``) alpha-CROWN on the properties CROWN left open.
    Properties of equal clause layout are batched as the domain axis of one
    pass.

    Returns a :class:`verifier.incomplete.SpecBounds`: per-clause lower bounds
    (``.flat()`` in the ``Result.clause_bounds`` layout), ``.all_proven``, the
    proven properties and clauses, and per-property root results that BaB
    starts from.  ``previous``: the result of an earlier (CROWN) call, whose
    proven properties are skipped.  Stops starting new batches at
    ``deadline`` (``time.monotonic()`` clock); whatever it returns is sound.
    """
    from verifier.incomplete import bound_spec

    bounds = previous
    # alpha-CROWN optimizes slopes through the spec's backward pass; an operator
    # without a linear rule (ArgMax, OneHot, ...) leaves the spec to IBP, so
    # there is nothing to optimize (carvana: 14.5 s spent for no change)
    crossable = all(n.op.has_backward for n in graph.nodes)
    for step in ("crown", "alpha-crown"):
        if step == "crown" and previous is not None:
            continue  # the earlier call's CROWN bounds stand: re-running it bought nothing
        if step == "alpha-crown" and (method == "crown" or not crossable):
            break
        if bounds is not None and (bounds.all_proven or time.monotonic() > deadline):
            break
        bounds = bound_spec(graph, spec, step, deadline, previous=bounds)
    proven = bounds.proven_properties()
    stats["incomplete"] = {"method": method, "seconds": round(bounds.seconds, 4),
                           "proven_properties": len(proven), "properties": len(spec.properties),
                           "proven_clauses": int(sum(int(b.sum()) for b in
                                                     (bounds.proven_clauses(i) for i in range(len(spec.properties)))))}
    return bounds


def open_part(spec, bounds):
    """The part of ``spec`` the incomplete stage left open: ``(spec', skip, roots)``
    where ``spec'`` keeps every property (so indices stay valid) but only
    the open clauses of each, ``skip`` lists the fully proven properties and
    ``roots`` maps an open property whose clauses were all kept to its root
    bound result (its rows are exactly that property's stacked rows)."""
    from dataclasses import replace as dc_replace

    if bounds is None:
        return spec, [], {}
    properties, skip, roots = [], [], {}
    for index, prop in enumerate(spec.properties):
        done = bounds.proven_clauses(index)
        if done.all():
            skip.append(index)
            properties.append(prop)
        elif done.any():
            properties.append(dc_replace(prop, clauses=[c for c, d in zip(prop.clauses, done) if not d]))
        else:
            properties.append(prop)
            if index in bounds.roots:
                roots[index] = bounds.roots[index]
    return dc_replace(spec, properties=properties), skip, roots


#: Open boxes above which alpha-CROWN is left to input-split BaB: BaB re-bounds
#: every open box anyway and splits cost less than per-box slope optimization
#: there (nn4sys mscn, 488 open boxes, one free input each: alpha 6.4 s + BaB
#: 5.0 s against BaB alone 8.5 s).
MANY_OPEN_BOXES = 64


def _alpha_pays(graph, spec, bounds, config: VerifyConfig) -> bool:
    """Run the alpha-CROWN stage?  Not when BaB follows with input splitting
    over more than :data:`MANY_OPEN_BOXES` open boxes."""
    if not config.bab or bounds is None:
        return True
    open_boxes = len(spec.properties) - len(bounds.proven_properties())
    if open_boxes <= MANY_OPEN_BOXES:
        return True
    from bab.strategy import choose_strategy
    from bab.types import BabConfig

    return choose_strategy(graph, BabConfig(strategy=config.bab_strategy), spec).name != "input-split"


def complete_stage(graph, model: OrtModel, spec, deadline: float, config: VerifyConfig, stats: dict,
                   skip=(), roots=None) -> Result | None:
    """Complete verification by branch and bound (:func:`bab.strategy.solve_spec`,
    strategy chosen from the instance unless ``config.bab_strategy`` forces one).

    Returns a decided ``Result`` (``sat`` with a counterexample validated on
    onnxruntime, or ``unsat``), or None (timeout / unknown); BaB statistics
    go to ``stats["bab"]``.  ``skip``: properties already proven; ``roots``:
    per-property root bound results to start from (see :func:`open_part`).
    """
    from bab.progress import BabProgress
    from bab.strategy import solve_spec
    from bab.types import BabConfig

    bab_config = BabConfig(strategy=config.bab_strategy, batch_size=config.bab_batch_size,
                           branching=config.bab_branching, alpha_iterations=config.bab_alpha_iterations,
                           use_cuts=config.bab_cuts, verbose=config.verbose)
    validator = _SpecValidator(model, spec)
    with BabProgress(verbose=config.verbose) as progress:
        outcome = solve_spec(graph, spec, bab_config, deadline, validator, progress, skip=skip, roots=roots)
    stats["bab"] = dict(outcome.stats, status=outcome.status)
    if outcome.status == "sat" and validator.found is not None:
        return Result("sat", counterexample=validator.found, message=f"{outcome.stats.get('strategy', 'BaB')} BaB")
    if outcome.status == "unsat":
        return Result("unsat", message=f"proven by {outcome.stats.get('strategy', '')} branch and bound")
    return None


class _SpecValidator:
    """A BaB validator for a whole spec: a point is a counterexample when, for
    some property whose box holds it, onnxruntime's output meets one of the
    clauses (:func:`verifier.validate.validate_point`); the first one found is kept."""

    def __init__(self, model: OrtModel, spec):
        import numpy as np

        self.model, self.spec = model, spec
        self.lower = np.stack([np.asarray(p.box.lower, np.float64) for p in spec.properties])
        self.upper = np.stack([np.asarray(p.box.upper, np.float64) for p in spec.properties])
        self.found = None

    def __call__(self, x) -> bool:
        import numpy as np

        from verifier.validate import validate_point

        x = np.asarray(x, np.float64).reshape(-1)
        slack = 1e-6 * (1 + np.maximum(np.abs(self.lower), np.abs(self.upper)))
        inside = np.flatnonzero(np.all((x >= self.lower - slack) & (x <= self.upper + slack), axis=1))
        for index in inside:
            found = validate_point(self.model, self.spec.properties[int(index)], x, int(index))
            if found is not None:
                self.found = found
                return True
        return False


def _verify(state: _Run, model: OrtModel, spec, get_graph) -> Result:
    config = state.config
    attack_stats = AttackStats()
    stages: dict[str, float] = {}
    state.stats["attack"] = attack_stats.as_dict()
    state.stats["stages"] = stages

    def finish(result: Result) -> Result:
        state.stats["attack"] = attack_stats.as_dict()
        result.stats = state.stats
        result.time = state.elapsed()
        return result

    def timed(name: str, started: float) -> None:
        stages[name] = round(stages.get(name, 0.0) + time.monotonic() - started, 4)

    def proven(bounds, by: str) -> Result:
        state.stats["proven_by"] = by
        return finish(state.result("unsat", message=f"proven by {by}", clause_bounds=bounds.flat()))

    # 1. onnxruntime falsification, before torch is imported
    if config.attack:
        t0 = time.monotonic()
        found = ort_falsify(model, spec, min(state.deadline, t0 + config.ort_time_cap), seed=config.seed,
                            samples=config.ort_samples, descent_max_dims=config.ort_descent_max_dims,
                            stats=attack_stats)
        timed("ort", t0)
        if found is not None:
            state.log("counterexample found by onnxruntime sampling")
            return finish(state.result("sat", counterexample=found, message="onnxruntime falsification"))
    if state.remaining() <= 0:
        return finish(state.out_of_time())

    # 2. import
    t0 = time.monotonic()
    graph = get_graph()
    timed("import", t0)
    state.log(f"imported graph: {len(graph.nodes)} nodes")
    if state.remaining() <= 0:
        return finish(state.out_of_time())

    def bound_stage(method: str, previous):
        """CROWN (``previous`` None) or alpha-CROWN over the open properties,
        in half the remaining time at most when BaB follows (many boxes on a
        slow net: BaB re-bounds whatever stays open)."""
        t0 = time.monotonic()
        deadline = state.deadline if not config.bab else t0 + 0.5 * state.remaining()
        result = incomplete_stage(graph, spec, deadline, config, state.stats, method=method, previous=previous)
        timed("crown" if method == "crown" else "alpha", t0)
        label = "CROWN" if method == "crown" else "alpha-CROWN"
        state.log(f"{label}: {len(result.proven_properties())} of {len(spec.properties)} properties proven")
        return result

    # 3. CROWN over every property (milliseconds on most nets)
    bounds = None
    if config.verify:
        bounds = bound_stage("crown", None)
        if bounds.all_proven:
            return proven(bounds, "crown")
        if state.remaining() <= 0:
            return finish(state.out_of_time())

    # 4. short PGD (bounded by steps and a time cap)
    if config.attack:
        t0 = time.monotonic()
        found = _pgd(state, graph, model, spec, config.seed, attack_stats, config.pgd_steps,
                     min(state.deadline, t0 + config.pgd_time_cap))
        timed("pgd", t0)
        if found is not None:
            return finish(found)
    if state.remaining() <= 0:
        return finish(state.out_of_time())

    # 5. alpha-CROWN on what CROWN left open
    skip_alpha = config.verify and not _alpha_pays(graph, spec, bounds, config)
    if skip_alpha:
        state.log(f"alpha-CROWN skipped: more than {MANY_OPEN_BOXES} open boxes go to input-split BaB")
    if config.verify and not skip_alpha:
        bounds = bound_stage("alpha-crown", bounds)
        if bounds.all_proven:
            return proven(bounds, "alpha-crown")
        if state.remaining() <= 0:
            return finish(state.out_of_time())

    # 6. complete verification on the open properties and clauses
    if config.verify and config.bab:
        t0 = time.monotonic()
        open_spec, skip, roots = open_part(spec, bounds)
        decided = complete_stage(graph, model, open_spec, state.deadline, config, state.stats, skip=skip, roots=roots)
        timed("bab", t0)
        if decided is not None:
            if decided.status == "unsat":
                state.stats["proven_by"] = "bab"
            return finish(decided)

    # 7. longer attack rounds with fresh seeds, while time remains
    if config.attack:
        for round_index in range(1, config.pgd_rounds):
            if state.remaining() <= 0:
                return finish(state.out_of_time())
            t0 = time.monotonic()
            share = state.remaining() / (config.pgd_rounds - round_index)
            found = _pgd(state, graph, model, spec, config.seed + round_index, attack_stats,
                         4 * config.pgd_steps, time.monotonic() + share)
            timed("pgd", t0)
            if found is not None:
                return finish(found)
    if state.remaining() <= 0:
        return finish(state.out_of_time())
    clause_bounds = None if bounds is None else bounds.flat()
    return finish(state.result("unknown", message="no counterexample found and not proven", clause_bounds=clause_bounds))


def _pgd(state: _Run, graph, model: OrtModel, spec, seed: int, attack_stats: AttackStats, steps: int,
         deadline: float) -> Result | None:
    config = state.config
    try:
        found = pgd_falsify(graph, model, spec, deadline, seed=seed, restarts=config.pgd_restarts,
                            steps=steps, stats=attack_stats)
    except (RuntimeError, NotImplementedError) as exc:
        # an operator without a differentiable forward; the attack just gives up
        state.stats["pgd_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        state.log(f"PGD skipped: {state.stats['pgd_error']}")
        return None
    if found is None:
        return None
    state.log(f"counterexample found by PGD (seed {seed})")
    return state.result("sat", counterexample=found, message="PGD falsification")
