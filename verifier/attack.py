"""Falsification: look for an input of the box whose output violates a clause.

The objective, per point and property, is the smallest clause margin

    m(x) = min over clauses c of  max_j (C_cj y(x) - d_cj)

and ``m(x) <= 0`` means ``y(x)`` is in the unsafe set.  Every candidate found
here is only a *candidate*: the caller confirms it on onnxruntime with
:func:`verifier.validate.validate_point` before reporting ``sat``.

Two stages:

* :func:`ort_falsify` runs on onnxruntime only (no torch import, so a sat
  instance can finish before torch would even have loaded): the box centres,
  uniform samples and random vertices, then, for inputs of at most ~20
  dimensions, a finite-difference sign-gradient descent from the best samples.
* :func:`pgd_falsify` runs projected gradient descent on a
  :class:`bounds.graph.Graph` in torch (any device): batched random restarts,
  sign-gradient steps with a geometrically decaying step size, projection onto
  the box, bounded by a deadline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from verifier.results import Counterexample
from verifier.validate import OrtModel, property_margins, validate_point


@dataclass
class AttackStats:
    """What the attacks spent: points evaluated and seconds, per stage."""

    ort_points: int = 0
    ort_seconds: float = 0.0
    pgd_steps: int = 0
    pgd_seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(vars(self))


def _validate_best(model: OrtModel, prop, prop_index: int, points: np.ndarray, margins: np.ndarray,
                   limit: int = 4) -> Counterexample | None:
    """Validate the best candidates with a non-positive margin (at most ``limit``)."""
    order = np.argsort(margins)[:limit]
    for i in order:
        if margins[i] > 0:
            break
        found = validate_point(model, prop, points[i], prop_index)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------- onnxruntime
_SAMPLE_CHUNK = 2048   # points per onnxruntime call between deadline checks
_DESCENT_STARTS = 8    # best samples per box that start the finite-difference descent

def ort_falsify(model: OrtModel, spec, deadline: float, seed: int = 0, samples: int = 4096,
                descent_max_dims: int = 20, stats: AttackStats | None = None) -> Counterexample | None:
    """Sampling (and low-dimensional finite-difference descent) on onnxruntime.

    ``samples`` bounds the random points per call, shared among the boxes (each
    box gets at least its centre and 8 points).  Returns a validated
    counterexample or ``None``.  Stops at ``deadline`` (``time.monotonic()``).
    """
    stats = stats or AttackStats()
    start = time.monotonic()
    rng = np.random.default_rng(seed)
    props = spec.properties
    try:
        # 1. every box centre, in one batch
        centres = np.stack([0.5 * (p.box.lower + p.box.upper) for p in props])
        outputs = model.evaluate(centres)
        stats.ort_points += len(centres)
        for index, prop in enumerate(props):
            found = _validate_best(model, prop, index, centres[index:index + 1],
                                   property_margins(outputs[index:index + 1], prop))
            if found is not None:
                return found
        # 2. uniform samples and random vertices, box by box, in deadline-checked chunks
        per_box = max(8, samples // max(1, len(props)))
        best: list[tuple[np.ndarray, np.ndarray]] = []
        for index, prop in enumerate(props):
            lower, upper = prop.box.lower, prop.box.upper
            kept_points, kept_margins = centres[index:index + 1], property_margins(outputs[index:index + 1], prop)
            for offset in range(0, per_box, _SAMPLE_CHUNK):
                if time.monotonic() > deadline:
                    return None
                count = min(_SAMPLE_CHUNK, per_box - offset)
                unit = rng.uniform(size=(count, len(lower)))
                unit[count // 2:] = np.round(unit[count // 2:])  # vertices: where ReLU nets often peak
                points = lower + unit * (upper - lower)
                margins = property_margins(model.evaluate(points), prop)
                stats.ort_points += count
                found = _validate_best(model, prop, index, points, margins)
                if found is not None:
                    return found
                # keep the best few of this box as descent starts
                kept_points = np.concatenate([kept_points, points])
                kept_margins = np.concatenate([kept_margins, margins])
                order = np.argsort(kept_margins)[:_DESCENT_STARTS]
                kept_points, kept_margins = kept_points[order], kept_margins[order]
            best.append((kept_points, kept_margins))
        # 3. finite-difference descent from the best samples (small inputs only)
        if spec.num_inputs <= descent_max_dims:
            for index, prop in enumerate(props):
                if time.monotonic() > deadline:
                    return None
                found = _fd_descent(model, prop, index, best[index][0], deadline, stats)
                if found is not None:
                    return found
        return None
    finally:
        stats.ort_seconds += time.monotonic() - start


def _fd_descent(model: OrtModel, prop, prop_index: int, starts: np.ndarray, deadline: float,
                stats: AttackStats, iterations: int = 60) -> Counterexample | None:
    """Sign-gradient descent on ``m(x)`` with forward differences, all starts
    batched: each iteration evaluates ``K (n + 1)`` points in one call."""
    lower, upper = prop.box.lower, prop.box.upper
    width = upper - lower
    free = width > 0
    if not free.any():
        return None
    n = len(lower)
    unit = np.where(free, (starts - lower) / np.where(free, width, 1.0), 0.0)
    step = 0.1
    h = 1e-4
    for _ in range(iterations):
        if time.monotonic() > deadline:
            return None
        k = len(unit)
        # forward differences: one probe per free coordinate (moved inwards at the upper face)
        direction = np.where(unit >= 1.0 - h, -1.0, 1.0)  # (k, n)
        probes = np.repeat(unit[:, None, :], n + 1, axis=1)
        idx = np.arange(n)
        probes[:, idx + 1, idx] += h * direction
        points = lower + probes.reshape(-1, n) * width
        margins = property_margins(model.evaluate(points), prop).reshape(k, n + 1)
        stats.ort_points += points.shape[0]
        base = margins[:, 0]
        found = _validate_best(model, prop, prop_index, points.reshape(k, n + 1, n)[:, 0], base)
        if found is not None:
            return found
        gradient = (margins[:, 1:] - base[:, None]) / h * direction
        unit = np.clip(unit - step * np.sign(gradient) * free, 0.0, 1.0)
        step *= 0.93
    points = lower + unit * width
    margins = property_margins(model.evaluate(points), prop)
    return _validate_best(model, prop, prop_index, points, margins)


# --------------------------------------------------------------------- torch
def _graph_dtype(graph):
    import torch

    for node in graph.nodes:
        for value in vars(node.op).values():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value.dtype, value.device
    return torch.float32, torch.device("cpu")


def pgd_falsify(graph, model: OrtModel, spec, deadline: float, seed: int = 0, restarts: int = 64,
                steps: int = 100, stats: AttackStats | None = None) -> Counterexample | None:
    """Projected gradient descent on every box of ``spec`` (torch, the graph's
    device and dtype); candidates with ``m(x) <= 0`` are validated on
    onnxruntime.  Returns a counterexample or ``None`` at the deadline."""
    import torch

    stats = stats or AttackStats()
    start = time.monotonic()
    dtype, device = _graph_dtype(graph)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    try:
        for index, prop in enumerate(spec.properties):
            if time.monotonic() > deadline:
                return None
            points, margins = _pgd_box(graph, prop, dtype, device, generator, restarts, steps, deadline, stats)
            found = _validate_best(model, prop, index, points, margins, limit=8)
            if found is not None:
                return found
        return None
    finally:
        stats.pgd_seconds += time.monotonic() - start


def _pgd_box(graph, prop, dtype, device, generator, restarts: int, steps: int, deadline: float,
             stats: AttackStats) -> tuple[np.ndarray, np.ndarray]:
    """One batched PGD run on a box; returns the best point of every restart
    (flattened, float64) and its margin as computed in torch."""
    import torch

    lower = torch.as_tensor(prop.box.lower, dtype=dtype, device=device)
    upper = torch.as_tensor(prop.box.upper, dtype=dtype, device=device)
    width = upper - lower
    matrices = [torch.as_tensor(c.matrix, dtype=dtype, device=device) for c in prop.clauses]
    offsets = [torch.as_tensor(c.offset, dtype=dtype, device=device) for c in prop.clauses]
    shape = tuple(graph.input_shape)

    unit = torch.rand((restarts, lower.numel()), generator=generator).to(device=device, dtype=dtype)
    # starts: the centre, both extreme corners, random vertices (a quarter), uniform points
    unit[0] = 0.5
    unit[1:2] = 0.0
    unit[2:3] = 1.0
    vertices = slice(3, 3 + restarts // 4)
    unit[vertices] = unit[vertices].round()
    rows = torch.arange(restarts, device=device)
    target = rows % len(matrices)
    targeted = (rows % 2 == 1) & (len(matrices) > 1)
    best_unit = unit.clone()
    best_margin = torch.full((restarts,), float("inf"), dtype=dtype, device=device)
    step = 0.1
    for _ in range(steps):
        if time.monotonic() > deadline:
            break
        unit.requires_grad_(True)
        x = lower + unit * width
        y = graph.forward(x.reshape((restarts,) + shape)).reshape(restarts, -1)
        per_clause = torch.stack([(y @ m.T - d).amax(dim=1) for m, d in zip(matrices, offsets)])
        margin = per_clause.amin(dim=0)
        # half the restarts chase one clause each (targeted), half the smallest margin
        loss = torch.where(targeted, per_clause[target, rows], margin)
        stats.pgd_steps += 1
        with torch.no_grad():
            improved = margin < best_margin
            best_margin = torch.where(improved, margin, best_margin)
            best_unit[improved] = unit[improved]
        if bool((best_margin <= 0).any()) or not loss.requires_grad:
            break  # found a candidate, or the output does not depend smoothly on x (e.g. Sign)
        (gradient,) = torch.autograd.grad(loss.sum(), unit, allow_unused=True)
        if gradient is None:
            break
        with torch.no_grad():
            unit = (unit - step * gradient.sign()).clamp(0.0, 1.0).detach()
            step = max(step * 0.96, 1e-3)
    points = (lower + best_unit * width).detach().to("cpu", torch.float64).numpy()
    return points, best_margin.detach().to("cpu", torch.float64).numpy()
