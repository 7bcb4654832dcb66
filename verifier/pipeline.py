"""The verification pipeline shared by every front door (CLI, VNN-COMP
scripts, Python API, benchmark harness).

Stages, in order, each bounded by the deadline ``start + config.timeout``
(time is checked between stages and inside every attack loop):

1. **onnxruntime falsification** (:func:`verifier.attack.ort_falsify`) on the
   original model, before torch is imported, so easy ``sat`` instances finish
   within about a second;
2. **import** of the model into a :class:`bounds.graph.Graph` (torch);
3. **PGD falsification** (:func:`verifier.attack.pgd_falsify`);
4. **incomplete verification** (:func:`incomplete_stage`): proves clauses with
   bound propagation; a property is ``unsat`` when every clause of every box
   is proven;
5. **complete verification** (:func:`complete_stage`, branch and bound);
6. more PGD restarts with fresh seeds while the time and round budget last.

The answer is ``sat`` only with a counterexample confirmed on onnxruntime,
``unsat`` only when every clause is proven, ``timeout`` when the deadline
passed first, ``unknown`` when every stage gave up earlier.
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

    def stage_deadline(self, fraction: float) -> float:
        """Deadline for a stage that may use ``fraction`` of the remaining time."""
        return time.monotonic() + max(0.0, self.remaining()) * fraction

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

    if config.threads is not None:
        torch.set_num_threads(config.threads)
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
def incomplete_stage(graph, spec, deadline: float, config: VerifyConfig, stats: dict) -> tuple[bool, list | None]:
    """Plug-in point of incomplete verification (bound propagation).

    Must return ``(proven, clause_bounds)``: ``proven`` is True only when, for
    every property ``p`` and every clause ``c`` of ``spec``, a sound lower bound
    of ``min over the box of max_j (C_cj y - d_cj)`` is > 0; ``clause_bounds``
    lists those lower bounds (one per clause, properties in order) or is None.
    Must return by ``deadline`` (``time.monotonic()`` clock).

    Not wired yet: the bound engine (``verifier/incomplete.py``) plugs in here.
    """
    return False, None


def complete_stage(graph, model: OrtModel, spec, deadline: float, config: VerifyConfig, stats: dict) -> Result | None:
    """Complete verification by branch and bound (:func:`bab.strategy.solve_spec`,
    strategy chosen from the instance unless ``config.bab_strategy`` forces one).

    Returns a decided ``Result`` (``sat`` with a counterexample validated on
    onnxruntime, or ``unsat``), or None (timeout / unknown); BaB statistics
    go to ``stats["bab"]``.
    """
    from bab.progress import BabProgress
    from bab.strategy import solve_spec
    from bab.types import BabConfig

    bab_config = BabConfig(strategy=config.bab_strategy, batch_size=config.bab_batch_size,
                           branching=config.bab_branching, alpha_iterations=config.bab_alpha_iterations,
                           verbose=config.verbose)
    validator = _SpecValidator(model, spec)
    with BabProgress(verbose=config.verbose) as progress:
        outcome = solve_spec(graph, spec, bab_config, deadline, validator, progress)
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
    state.stats["attack"] = attack_stats.as_dict()

    def finish(result: Result) -> Result:
        state.stats["attack"] = attack_stats.as_dict()
        result.stats = state.stats
        result.time = state.elapsed()
        return result

    # 1. onnxruntime falsification, before torch is imported
    if config.attack:
        found = ort_falsify(model, spec, state.stage_deadline(config.ort_time_fraction), seed=config.seed,
                            samples=config.ort_samples, descent_max_dims=config.ort_descent_max_dims,
                            stats=attack_stats)
        if found is not None:
            state.log("counterexample found by onnxruntime sampling")
            return finish(state.result("sat", counterexample=found, message="onnxruntime falsification"))
    if state.remaining() <= 0:
        return finish(state.out_of_time())

    # 2. import
    graph = get_graph()
    state.log(f"imported graph: {len(graph.nodes)} nodes")
    if state.remaining() <= 0:
        return finish(state.out_of_time())

    # 3. PGD
    if config.attack:
        found = _pgd(state, graph, model, spec, config.seed, attack_stats)
        if found is not None:
            return finish(found)
    if state.remaining() <= 0:
        return finish(state.out_of_time())

    # 4. incomplete verification
    clause_bounds = None
    if config.verify:
        proven, clause_bounds = incomplete_stage(graph, spec, state.deadline, config, state.stats)
        if proven:
            return finish(state.result("unsat", message="proven by bound propagation", clause_bounds=clause_bounds))
        if state.remaining() <= 0:
            return finish(state.out_of_time())

    # 5. complete verification
    if config.verify:
        decided = complete_stage(graph, model, spec, state.deadline, config, state.stats)
        if decided is not None:
            return finish(decided)

    # 6. more attack rounds with fresh seeds
    if config.attack:
        for round_index in range(1, config.pgd_rounds):
            if state.remaining() <= 0:
                return finish(state.out_of_time())
            found = _pgd(state, graph, model, spec, config.seed + round_index, attack_stats)
            if found is not None:
                return finish(found)
    if state.remaining() <= 0:
        return finish(state.out_of_time())
    return finish(state.result("unknown", message="no counterexample found and not proven", clause_bounds=clause_bounds))


def _pgd(state: _Run, graph, model: OrtModel, spec, seed: int, attack_stats: AttackStats) -> Result | None:
    config = state.config
    try:
        found = pgd_falsify(graph, model, spec, state.stage_deadline(config.pgd_time_fraction), seed=seed,
                            restarts=config.pgd_restarts, steps=config.pgd_steps, stats=attack_stats)
    except (RuntimeError, NotImplementedError) as exc:
        # an operator without a differentiable forward; the attack just gives up
        state.stats["pgd_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        state.log(f"PGD skipped: {state.stats['pgd_error']}")
        return None
    if found is None:
        return None
    state.log(f"counterexample found by PGD (seed {seed})")
    return state.result("sat", counterexample=found, message="PGD falsification")
