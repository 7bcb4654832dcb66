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
    ort_hopeless_groups: int = 0   # layout groups whose sampling stopped early (see _hopeless)
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


# ----------------------------------------------------------- stacked layouts
@dataclass
class LayoutGroup:
    """Properties whose clauses have the same row counts, stacked so that
    margins of many boxes are computed at once: ``matrix (G, S, n_out)``,
    ``offset (G, S)``, ``member (S, K)`` (row ``s`` belongs to clause ``k``)."""

    indices: np.ndarray   # (G,) property indices into spec.properties
    lower: np.ndarray     # (G, n_in)
    upper: np.ndarray     # (G, n_in)
    matrix: np.ndarray
    offset: np.ndarray
    member: np.ndarray

    def margins(self, outputs: np.ndarray, box: np.ndarray) -> np.ndarray:
        """``m(x)`` per point: ``outputs (N, n_out)`` of points in boxes ``box (N,)`` (group positions)."""
        rows = np.einsum("nso,no->ns", self.matrix[box], outputs) - self.offset[box]
        per_clause = np.where(self.member[None], rows[:, :, None], -np.inf).max(axis=1)
        return per_clause.min(axis=1)


def layout_groups(spec) -> list[LayoutGroup]:
    """Group the spec's properties by clause layout (first-seen order)."""
    by_layout: dict[tuple, list[int]] = {}
    for i, prop in enumerate(spec.properties):
        by_layout.setdefault(tuple(c.num_rows for c in prop.clauses), []).append(i)
    groups = []
    for layout, indices in by_layout.items():
        props = [spec.properties[i] for i in indices]
        clause_of_row = np.repeat(np.arange(len(layout)), layout)
        groups.append(LayoutGroup(
            np.asarray(indices), np.stack([np.asarray(p.box.lower, np.float64) for p in props]),
            np.stack([np.asarray(p.box.upper, np.float64) for p in props]),
            np.stack([np.concatenate([c.matrix for c in p.clauses]) for p in props]),
            np.stack([np.concatenate([c.offset for c in p.clauses]) for p in props]),
            clause_of_row[:, None] == np.arange(len(layout))[None, :]))
    return groups


def _validate_candidates(model: OrtModel, spec, prop_indices: np.ndarray, points: np.ndarray,
                         margins: np.ndarray, limit: int = 4) -> Counterexample | None:
    """Validate the best points with a non-positive margin, each on its own property."""
    for i in np.argsort(margins)[:limit]:
        if margins[i] > 0:
            break
        index = int(prop_indices[i])
        found = validate_point(model, spec.properties[index], points[i], index)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------- onnxruntime
_SAMPLE_CHUNK = 8192   # most points per onnxruntime call between deadline checks
_FIRST_CHUNK = 256     # the first call is small: the deadline and the hopeless test come early
_HOPELESS_MIN_POINTS = 256
_HOPELESS_Z = 12.0     # stop when every margin is positive and mean >= 12 standard deviations
_DESCENT_STARTS = 8    # best samples (over all boxes) that start the finite-difference descent
_DESCENT_BOXES = 4     # boxes the descent visits at most (the ones holding the best samples)


def ort_falsify(model: OrtModel, spec, deadline: float, seed: int = 0, samples: int = 4096,
                descent_max_dims: int = 20, stats: AttackStats | None = None) -> Counterexample | None:
    """Sampling (and low-dimensional finite-difference descent) on onnxruntime.

    Work is bounded by counts, not by time: every box centre, then
    ``max(samples, number of boxes)`` random points spread over the boxes
    (half uniform, half vertices), evaluated in a few batched calls whatever
    the number of boxes; then, for inputs of at most ``descent_max_dims``
    values, a 60-step descent from the best few points.  The samples run in
    growing chunks (256, 512, ...); for larger inputs a group's sampling
    stops once its margins look hopeless (:meth:`_MarginMoments.hopeless`).
    ``deadline`` (``time.monotonic()``) only cuts it short.  Returns a
    validated counterexample or ``None``.
    """
    stats = stats or AttackStats()
    start = time.monotonic()
    rng = np.random.default_rng(seed)
    try:
        groups = layout_groups(spec)
        total = max(samples, len(spec.properties))
        best_points, best_margins, best_props = [], [], []
        for group in groups:
            count = len(group.indices)
            # 1. every box centre, in one batch
            centres = 0.5 * (group.lower + group.upper)
            boxes = np.arange(count)
            margins = group.margins(model.evaluate(centres), boxes)
            stats.ort_points += count
            found = _validate_candidates(model, spec, group.indices[boxes], centres, margins)
            if found is not None:
                return found
            best_points.append(centres)
            best_margins.append(margins)
            best_props.append(group.indices)
            # 2. random points, spread evenly over the group's boxes, in growing chunks
            share = max(count, int(round(total * count / len(spec.properties))))
            seen = _MarginMoments()
            offset, chunk = 0, _FIRST_CHUNK
            while offset < share:
                if time.monotonic() > deadline:
                    return None
                n = min(chunk, share - offset)
                box = (np.arange(offset, offset + n) % count)
                offset, chunk = offset + n, min(2 * chunk, _SAMPLE_CHUNK)
                unit = rng.uniform(size=(n, group.lower.shape[1]))
                unit[n // 2:] = np.round(unit[n // 2:])  # vertices: where ReLU nets often peak
                points = group.lower[box] + unit * (group.upper[box] - group.lower[box])
                margins = group.margins(model.evaluate(points), box)
                stats.ort_points += n
                found = _validate_candidates(model, spec, group.indices[box], points, margins)
                if found is not None:
                    return found
                keep = np.argsort(margins)[:_DESCENT_STARTS]
                best_points.append(points[keep])
                best_margins.append(margins[keep])
                best_props.append(group.indices[box[keep]])
                seen.add(margins)
                # large inputs only: there the samples cost real time and no descent follows
                if spec.num_inputs > descent_max_dims and seen.hopeless():
                    stats.ort_hopeless_groups += 1
                    break
        # 3. finite-difference descent from the best samples (small inputs only)
        if spec.num_inputs <= descent_max_dims:
            points, margins = np.concatenate(best_points), np.concatenate(best_margins)
            props = np.concatenate(best_props)
            order = np.argsort(margins)[:_DESCENT_STARTS]
            for index in list(dict.fromkeys(props[order].tolist()))[:_DESCENT_BOXES]:
                if time.monotonic() > deadline:
                    return None
                starts = points[order][props[order] == index]
                found = _fd_descent(model, spec.properties[index], index, starts, deadline, stats)
                if found is not None:
                    return found
        return None
    finally:
        stats.ort_seconds += time.monotonic() - start


@dataclass
class _MarginMoments:
    """Running count, mean, spread and minimum of sampled margins."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    smallest: float = float("inf")

    def add(self, margins: np.ndarray) -> None:
        finite = margins[np.isfinite(margins)]
        self.count += len(finite)
        self.total += float(finite.sum())
        self.total_sq += float((finite * finite).sum())
        if len(margins):
            self.smallest = min(self.smallest, float(margins.min()))  # NaN stays: never hopeless

    def hopeless(self) -> bool:
        """No cheap counterexample in sight: at least ``_HOPELESS_MIN_POINTS``
        samples, all margins positive (and finite), and the mean ``mu`` at
        least ``_HOPELESS_Z`` standard deviations ``sigma`` above zero.  A
        uniform sample's margin is a sum of many small input effects, close to
        normal: the smallest of N more samples is then near
        ``mu - sigma sqrt(2 ln N)`` (about ``mu - 4 sigma`` for N = 4096), far
        from zero; PGD (gradients, after CROWN) is the tool there.  Measured on
        the anchor set's inputs > 20 values: every instance sampling finds has
        ``mu / sigma < 8`` in its first 512 samples, or a hit among them; mnist_fc
        has ``mu / sigma ~ 300-2000``, oval21/cifar resnets 20-280."""
        if self.count < _HOPELESS_MIN_POINTS or self.count < 2 or not self.smallest > 0:
            return False
        mean = self.total / self.count
        variance = max(self.total_sq / self.count - mean * mean, 0.0)
        return mean >= _HOPELESS_Z * variance ** 0.5


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
def pgd_falsify(graph, model: OrtModel, spec, deadline: float, seed: int = 0, restarts: int = 64,
                steps: int = 100, stats: AttackStats | None = None,
                max_points: int = 4096) -> Counterexample | None:
    """Projected gradient descent on every box of ``spec`` at once (torch, the
    graph's device and dtype); candidates with ``m(x) <= 0`` are validated on
    onnxruntime.

    Work is bounded by ``steps`` and by the batch: ``restarts`` starting points
    per box while ``boxes * restarts <= max_points``; with more boxes, each box
    gets ``max_points // boxes`` of them (at least one; with more boxes than
    ``max_points``, the boxes whose centres have the smallest margins).
    ``deadline`` (``time.monotonic()``) cuts it short.  Returns a
    counterexample or ``None``."""
    import torch

    stats = stats or AttackStats()
    start = time.monotonic()
    dtype, device = graph.dtype_device()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    try:
        for group in layout_groups(spec):
            if time.monotonic() > deadline:
                return None
            tensors = _GroupTensors.of(group, dtype, device)
            boxes = _pick_boxes(graph, tensors, max_points)
            per_box = max(1, min(restarts, max_points // len(boxes)))
            points, margins, box = _pgd_group(graph, tensors, boxes, per_box, generator, steps, deadline, stats)
            found = _validate_candidates(model, spec, group.indices[box], points, margins, limit=8)
            if found is not None:
                return found
        return None
    finally:
        stats.pgd_seconds += time.monotonic() - start


@dataclass
class _GroupTensors:
    """A :class:`LayoutGroup` as torch tensors on the graph's device."""

    lower: "torch.Tensor"
    upper: "torch.Tensor"
    matrix: "torch.Tensor"
    offset: "torch.Tensor"
    member: "torch.Tensor"

    @classmethod
    def of(cls, group: LayoutGroup, dtype, device) -> "_GroupTensors":
        import torch

        def t(a):
            return torch.as_tensor(a, dtype=dtype, device=device)

        return cls(t(group.lower), t(group.upper), t(group.matrix), t(group.offset),
                   torch.as_tensor(group.member, device=device))

    def clause_margins(self, y, box):
        """``(N, K)``: ``max_j (C_kj y - d_kj)`` per point and clause."""
        rows = (self.matrix[box] @ y.unsqueeze(-1)).squeeze(-1) - self.offset[box]
        return rows.unsqueeze(-1).masked_fill(~self.member, -float("inf")).amax(dim=1)


def _pick_boxes(graph, tensors: _GroupTensors, max_points: int):
    """All boxes when they fit, else the ``max_points`` whose centres have the smallest margins."""
    import torch

    count = tensors.lower.shape[0]
    if count <= max_points:
        return torch.arange(count, device=tensors.lower.device)
    with torch.no_grad():
        centres = (tensors.lower + tensors.upper) / 2
        margins = []
        for begin in range(0, count, max_points):
            part = centres[begin:begin + max_points]
            y = graph.forward(part.reshape((-1,) + tuple(graph.input_shape))).reshape(part.shape[0], -1)
            box = torch.arange(begin, begin + part.shape[0], device=part.device)
            margins.append(tensors.clause_margins(y, box).amin(dim=1))
    return torch.argsort(torch.cat(margins))[:max_points]


def _pgd_group(graph, tensors: _GroupTensors, boxes, per_box: int, generator, steps: int, deadline: float,
               stats: AttackStats):
    """One batched PGD run, ``per_box`` starts in each of ``boxes``; returns
    the best point of every start (flattened, float64), its margin as
    computed in torch, and its box (position in the group)."""
    import torch

    box = boxes.repeat_interleave(per_box)
    count = box.numel()
    lower, upper = tensors.lower[box], tensors.upper[box]
    width = upper - lower
    shape = tuple(graph.input_shape)
    num_clauses = tensors.member.shape[1]
    unit = torch.rand((count, lower.shape[1]), generator=generator).to(device=lower.device, dtype=lower.dtype)
    # starts per box: the centre, both extreme corners, random vertices (a quarter), uniform points
    slot = torch.arange(count, device=lower.device) % per_box
    unit[slot == 0] = 0.5
    unit[slot == 1] = 0.0
    unit[slot == 2] = 1.0
    vertices = (slot >= 3) & (slot < 3 + per_box // 4)
    unit[vertices] = unit[vertices].round()
    target = slot % num_clauses
    targeted = (slot % 2 == 1) & (num_clauses > 1)
    rows = torch.arange(count, device=lower.device)
    best_unit = unit.clone()
    best_margin = torch.full((count,), float("inf"), dtype=lower.dtype, device=lower.device)
    step = 0.1
    for _ in range(steps):
        if time.monotonic() > deadline:
            break
        unit.requires_grad_(True)
        x = lower + unit * width
        y = graph.forward(x.reshape((count,) + shape)).reshape(count, -1)
        per_clause = tensors.clause_margins(y, box)
        margin = per_clause.amin(dim=1)
        # half the starts chase one clause each (targeted), half the smallest margin
        loss = torch.where(targeted, per_clause[rows, target], margin)
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
    return points, best_margin.detach().to("cpu", torch.float64).numpy(), box.cpu().numpy()
