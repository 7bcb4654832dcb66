"""BICCOS: cutting planes inferred from verified BaB subproblems.

(Zhou, Brix, Hanasusanto, Zhang, NeurIPS 2024.)  A domain of ReLU-split BaB
is the box plus split decisions ``S``; a split ``x_i >= 0`` fixes the
indicator ``z_i = 1``, ``x_i <= 0`` fixes ``z_i = 0``.  When the domain is
verified, no counterexample satisfies all of ``S`` (strictly, at least one
split's pre-activation has the opposite sign), so every counterexample obeys
the *no-good* cut

    sum_{i in S+} z_i + sum_{j in S-} (1 - z_j)  <=  |S| - 1,

which is valid in every other domain and enters bound propagation through a
multiplier (:mod:`bounds.cuts`).  Shorter cuts prune more:

* **inference**: each verified child's history gives a cut; its splits are
  ranked by influence (the magnitude of their beta multipliers);
* **strengthening**: candidate subsets that keep only the most influential
  splits are re-verified in one batched pass over the root box cut by the
  subset's splits (with the pool's cuts on); the shortest verified subset
  is kept.  A subset that verifies is itself a verified domain, so the cut
  is sound whatever the ranking;
* **pool**: cuts are de-duplicated, a cut implied by a shorter one (a
  superset of splits) is dropped, the pool is capped, and cuts whose
  multiplier never became positive are retired first;
* **multi-tree search**: before the main BaB, short searches with other
  branching orders (FSB; BaBSR with perturbed scores) harvest cuts into the
  shared pool (and may decide the property outright);
* **pruning**: an open domain whose history contains a cut's split set lies
  inside a verified domain and is dropped.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from bab.splits import History, Split, apply_to_boxes, split_nodes, unpad_betas
from bab.types import PROOF_TOLERANCE
from bounds.cuts import INDICATOR, Cut, CutConstraints, CutTerm
from bounds.graph import Graph


@dataclass
class BiccosSettings:
    """Limits of cut inference (defaults measured on the dev set, see
    ``benchmarks/biccos_effect.py``)."""

    max_cuts: int = 400              # pool cap
    max_cut_length: int = 12         # longer no-goods are too weak to pay
    strengthen_per_step: int = 48    # candidate subsets re-verified per BaB step
    strengthen_iterations: int = 10  # alpha/beta iterations of the re-verification
    multi_tree_fraction: float = 0.15  # of the remaining time, for the extra trees
    multi_tree_max_seconds: float = 10.0
    tree_after_domains: int = 400    # the trees run once the main search proves hard:
    tree_after_fraction: float = 0.1  # this many domains, or this share of the budget spent
    trees: tuple[tuple[str, float], ...] = (("fsb", 0.0), ("babsr", 0.5))  # (branching, score noise)
    retire_after: int = 30           # bound passes without a positive multiplier
    cuts_in_bounds: bool = True      # cuts as Lagrangian terms of every pass (else: pruning + propagation only)
    multiplier_init: float = 0.0     # starting value of every cut multiplier


@dataclass
class _Entry:
    splits: frozenset
    cut: Cut
    idle: int = 0
    used: bool = False
    origin: int | None = None   # the tree whose own verified path this is (None: shortened)


class CutPool:
    """De-duplicated, capped set of no-good cuts (as split sets)."""

    def __init__(self, relu_of: dict[str, str], settings: BiccosSettings):
        self.relu_of = relu_of          # split node (ReLU input) -> ReLU node
        self.settings = settings
        self.entries: list[_Entry] = []
        self._cache: tuple[tuple[int, int | None], CutConstraints] | None = None  # ((version, tree), cuts)
        self.version = 0
        self.stats = {"cuts_inferred": 0, "cuts_retired": 0, "cuts_used": 0}

    def __len__(self) -> int:
        return len(self.entries)

    def to_cut(self, splits: Sequence[Split]) -> Cut:
        terms, positives = [], 0
        for s in splits:
            terms.append(CutTerm(self.relu_of[s.node], s.index, 1.0 if s.direction > 0 else -1.0, INDICATOR))
            positives += s.direction > 0
        return Cut(tuple(terms), float(positives - 1))

    def add(self, splits: Sequence[Split], origin: int | None = None) -> bool:
        """Add the no-good of a verified split set; False when implied already.
        ``origin``: the tree the set is a whole verified path of (see
        :meth:`constraints`); None for shortened sets."""
        key = frozenset(splits)
        if not key or len(key) > self.settings.max_cut_length:
            return False
        if any(e.splits <= key for e in self.entries):
            return False
        self.entries = [e for e in self.entries if not key <= e.splits]
        self.entries.append(_Entry(key, self.to_cut(sorted(key, key=lambda s: (s.node, s.index))), origin=origin))
        self.stats["cuts_inferred"] += 1
        if len(self.entries) > self.settings.max_cuts:  # drop idle, then long cuts
            self.entries.sort(key=lambda e: (e.idle > self.settings.retire_after, not e.used, len(e.splits)))
            retired = len(self.entries) - self.settings.max_cuts
            self.entries = self.entries[:self.settings.max_cuts]
            self.stats["cuts_retired"] += retired
        self.version += 1
        return True

    def _literals(self) -> tuple[dict, "sp.csr_matrix", np.ndarray]:
        """Literal ids, the ``(K, L)`` 0/1 cut-literal matrix and cut sizes (per version)."""
        import scipy.sparse as sp  # lazily: cuts are off by default, the import costs ~70 ms per run

        if getattr(self, "_index", None) is None or self._index[0] != self.version:
            ids: dict[Split, int] = {}
            rows, cols = [], []
            for k, e in enumerate(self.entries):
                for s in e.splits:
                    rows.append(k), cols.append(ids.setdefault(s, len(ids)))
            matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)),
                                   shape=(len(self.entries), max(len(ids), 1)))
            sizes = np.array([len(e.splits) for e in self.entries], dtype=np.int32)
            self._index = (self.version, ids, matrix, sizes)
        return self._index[1], self._index[2], self._index[3]

    def match_batch(self, histories: Sequence[History]) -> tuple[list[bool], list[list[Split]]]:
        """Per history: does it contain a cut's splits (``subsumed``), and the
        single missing split of every cut it contains all but one of.

        One sparse product ``cuts (K, L) @ histories (L, B)`` counts each cut's
        literals present in each history (a Python loop over postings cost a
        fifth of the search time on safenlp)."""
        import scipy.sparse as sp  # lazily, see _literals

        batch = len(histories)
        if not self.entries or not batch:
            return [False] * batch, [[] for _ in range(batch)]
        ids, matrix, sizes = self._literals()
        rows, cols = [], []
        for b, history in enumerate(histories):
            for s in history:
                j = ids.get(s)
                if j is not None:
                    rows.append(j), cols.append(b)
        present = sp.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)),
                                shape=(matrix.shape[1], batch))
        absent = sizes[:, None] - (matrix @ present).toarray()          # (K, B)
        subsumed = (absent == 0).any(axis=0).tolist()
        missing: list[list[Split]] = [[] for _ in range(batch)]
        have: dict[int, set] = {}
        for k, b in zip(*np.nonzero(absent == 1)):
            if subsumed[b]:
                continue
            held = have.setdefault(int(b), set(histories[b]))
            missing[b].extend(self.entries[k].splits - held)
        return subsumed, missing

    def matches(self, history: History) -> tuple[bool, list[Split]]:
        """``(subsumed, missing)`` of one history (:meth:`match_batch`)."""
        subsumed, missing = self.match_batch([history])
        return subsumed[0], ([] if subsumed[0] else missing[0])

    def subsumed(self, history: History) -> bool:
        """Does the domain lie inside a verified one (contains a cut's splits)?"""
        return bool(history) and self.matches(history)[0]

    def constraints(self, graph: Graph, like: torch.Tensor,
                    tree: int | None = None) -> tuple[CutConstraints | None, list[int]]:
        """The cuts a bounding pass of ``tree`` uses, and their pool indices.

        A whole verified path of the same tree is left out: every other
        domain of a tree leaves the verified one where their common
        ancestor was split, so it holds the opposite of one of the path's
        splits and the path's no-good is slack there (its indicator is
        fixed to the false side).  Such a cut costs a multiplier per row and
        domain in every pass and can never bind; it still prunes other trees
        and is the seed of shortened cuts."""
        keep = [k for k, e in enumerate(self.entries) if tree is None or e.origin != tree]
        if not keep:
            return None, []
        if self._cache is None or self._cache[0] != (self.version, tree):
            self._cache = ((self.version, tree), CutConstraints.build(graph, [self.entries[k].cut for k in keep], like))
        return self._cache[1], keep

    def record(self, multipliers: torch.Tensor, version: int, indices: Sequence[int] | None = None) -> None:
        """Bookkeeping after a pass: ``multipliers (B, S, K)`` of the pool's
        cuts ``indices`` (default: all) at ``version``."""
        indices = list(range(len(self.entries))) if indices is None else list(indices)
        if version != self.version or multipliers.shape[-1] != len(indices):
            return
        binding = (multipliers > 1e-8).flatten(0, 1).any(0).tolist()
        for entry, hit in zip((self.entries[k] for k in indices), binding):
            if hit:
                if not entry.used:
                    self.stats["cuts_used"] += 1
                entry.used, entry.idle = True, 0
            else:
                entry.idle += 1


_TREE_IDS = itertools.count()


@dataclass
class Biccos:
    """The hooks ReLU-split BaB calls (see :mod:`bab.relu_split`)."""

    graph: Graph
    settings: BiccosSettings = field(default_factory=BiccosSettings)
    pool: CutPool | None = None
    root_boxes: dict | None = None
    score_noise: float = 0.0
    in_tree: bool = False
    stats: dict = field(default_factory=lambda: {"strengthen_candidates": 0, "strengthened": 0,
                                                 "domains_pruned": 0, "trees": 0, "tree_time": 0.0})

    def __post_init__(self) -> None:
        self.tree_id = next(_TREE_IDS)
        if self.pool is None:
            relu_of = {n.inputs[0]: n.name for n in self.graph.nodes if n.op.op_type == "Relu"}
            self.pool = CutPool(relu_of, self.settings)
        self._generator = torch.Generator().manual_seed(0)
        self._pending_version = -1

    # ------------------------------------------------------------ bounding
    def extra(self, batch: int, num_rows: int, like: torch.Tensor):
        """Cut constraints and zero multipliers to append to a bounding pass."""
        constraint, self._pending_indices = (self.pool.constraints(self.graph, like, self.tree_id)
                                             if self.settings.cuts_in_bounds else (None, []))
        if constraint is None:
            self._pending_version = -1
            return [], []
        self._pending_version = self.pool.version
        mu = torch.full((batch, num_rows, constraint.num_constraints), self.settings.multiplier_init,
                        dtype=like.dtype, device=like.device)
        return [constraint], [mu]

    def observe_betas(self, betas: Sequence[torch.Tensor] | None) -> None:
        if betas and self._pending_version >= 0:
            self.pool.record(betas[-1], self._pending_version, self._pending_indices)

    def rescore(self, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Multi-tree variation: perturb branching scores multiplicatively."""
        if self.score_noise <= 0:
            return scores
        out = {}
        for name, s in scores.items():
            noise = torch.rand(s.shape, generator=self._generator).to(s)
            out[name] = torch.where(torch.isfinite(s), s * (1 + self.score_noise * noise), s)
        return out

    def propagate(self, histories: Sequence[History], boxes: dict) -> dict:
        """Unit propagation of the no-goods into the domains' boxes.

        A domain whose history holds every split of a cut but one, ``s``, has
        no counterexample on ``s``'s side (a counterexample must violate some
        split of the cut strictly, and the others hold), so the box of ``s``'s
        neuron is cut to the opposite side.  An emptied box means no
        counterexample at all, which any bound then states correctly."""
        if not self.pool.entries:
            return boxes
        forced: list[tuple[Split, ...]] = []
        count = 0
        _, missing_all = self.pool.match_batch(histories)
        for history, missing in zip(histories, missing_all):
            have = set(history)
            extra = []
            for s in dict.fromkeys(missing):
                opposite = Split(s.node, s.index, s.point, -s.direction)
                if opposite not in have:
                    extra.append(opposite)
            forced.append(tuple(extra))
            count += len(extra)
        if not count:
            return boxes
        self.stats["propagated"] = self.stats.get("propagated", 0) + count
        return apply_to_boxes(boxes, forced)

    def tree_due(self, domains_visited: int, elapsed: float, deadline: float) -> bool:
        """Run the multi-tree phase now?  Once, in the main search only, when it
        has visited enough domains or used enough of its time."""
        if self.in_tree or self.stats["trees"] or not self.settings.trees:
            return False
        budget = elapsed + max(0.0, deadline - time.monotonic())
        return domains_visited >= self.settings.tree_after_domains or \
            elapsed >= self.settings.tree_after_fraction * min(budget, 600.0)

    def prune(self, domains: list) -> list:
        subsumed, _ = self.pool.match_batch([d.history for d in domains])
        kept = [d for d, gone in zip(domains, subsumed) if not (gone and d.history)]
        self.stats["domains_pruned"] += len(domains) - len(kept)
        return kept

    # ------------------------------------------------- inference/strengthen
    def learn(self, search, histories: Sequence[History], betas: Sequence[torch.Tensor] | None,
              verified: Sequence[bool], alphas: dict | None = None) -> None:
        """Cuts from the verified children, strengthened by one batched pass.

        ``alphas``: the children's optimized slopes ``{node: {name: (B, ...)}}``
        (any slope is sound); with the children's split multipliers they
        warm-start the re-verification of the shortened sets -- cold, 10
        iterations re-verified only 7 of 62 *unshortened* histories on
        safenlp 4056 (warm: most of them)."""
        chosen = [i for i, v in enumerate(verified) if v and histories[i]]
        if not chosen:
            return
        nodes = split_nodes(histories, search.order)
        per_domain = unpad_betas(list(betas or [])[:len(nodes)], histories, nodes) if betas else None
        candidates: list[tuple[int, History]] = []
        for i in chosen:
            history = tuple(s for s in histories[i] if s.point == 0.0)
            if len(history) != len(histories[i]):
                continue
            ranked = self._rank(history, None if per_domain is None else per_domain[i])
            self.pool.add(history, origin=self.tree_id)
            for keep in self._schedule(ranked):
                if keep > self.settings.max_cut_length:   # the pool would refuse it
                    continue
                kept = {s for s, _ in ranked[:keep]}
                candidates.append((i, tuple(s for s in history if s in kept)))  # history order
        if candidates and self.root_boxes is not None:
            # about half a BaB batch: a fraction of the cost of bounding the children
            limit = min(self.settings.strengthen_per_step, max(4, search.settings.batch_size // 2))
            self._strengthen(search, candidates[:limit], histories, per_domain, alphas)

    @staticmethod
    def _rank(history: History, betas: dict | None) -> list[tuple[Split, float]]:
        """Splits by influence: summed beta magnitude over rows (newest first on ties)."""
        influence = []
        seen: dict[str, int] = {}
        for pos, s in enumerate(history):
            k = seen.get(s.node, 0)
            seen[s.node] = k + 1
            value = 0.0
            if betas is not None and s.node in betas and betas[s.node].shape[1] > k:
                value = float(betas[s.node][:, k].abs().sum())
            influence.append((value, pos, s))
        influence.sort(key=lambda t: (-t[0], -t[1]))
        return [(s, v) for v, _, s in influence]

    @staticmethod
    def _schedule(ranked: list[tuple[Split, float]]) -> list[int]:
        """How many of the top-ranked splits each candidate keeps."""
        n = len(ranked)
        active = sum(1 for _, v in ranked if v > 0)
        sizes = {active, n // 2, n // 4, n - 1, 1}
        return sorted(k for k in sizes if 1 <= k < n)

    def _strengthen(self, search, candidates: list[tuple[int, tuple]], sources: Sequence[History] = (),
                    source_betas: list[dict] | None = None, source_alphas: dict | None = None) -> None:
        """Re-verify candidate split sets on the root boxes cut by their own
        splits (sound: those boxes hold on the shortened domain), warm-started
        from the verified domain each candidate came from."""
        subsumed, _ = self.pool.match_batch([h for _, h in candidates])
        candidates = [c for c, gone in zip(candidates, subsumed) if not gone]
        if not candidates:
            return
        histories = [h for _, h in candidates]
        self.stats["strengthen_candidates"] += len(histories)
        boxes = apply_to_boxes(self.root_boxes, histories)
        boxes = {k: (lo.expand(len(histories), *lo.shape[1:]), up.expand(len(histories), *up.shape[1:]))
                 for k, (lo, up) in boxes.items()}
        betas: list = [None] * len(histories)
        if source_betas is not None:
            betas = [_kept_betas(sources[i], h, source_betas[i]) for i, h in candidates]
        alphas = None
        if source_alphas and all(v.shape[0] == len(sources) for p in source_alphas.values() for v in p.values()):
            index = torch.tensor([i for i, _ in candidates], device=self.root_boxes_device())
            alphas = {n: {k: v[index] for k, v in p.items()} for n, p in source_alphas.items()}
        result = search.bound(histories, boxes, alphas, betas, optimize=True,
                              iterations=self.settings.strengthen_iterations)
        scores = search.clauses.score(result.lower)
        for history, score in zip(histories, scores.tolist()):
            if score > PROOF_TOLERANCE and self.pool.add(history):
                self.stats["strengthened"] += 1

    def root_boxes_device(self):
        return next(iter(self.root_boxes.values()))[0].device

    # ----------------------------------------------------------- multi-tree
    def multi_tree(self, run: Callable[[str, float, "Biccos"], object], deadline: float):
        """Short searches with other branching orders sharing this pool.

        ``run(branching, deadline, hooks)`` runs one BaB tree and returns its
        outcome; a decided outcome (``sat``/``unsat``) is returned at once."""
        budget = min(self.settings.multi_tree_max_seconds,
                     self.settings.multi_tree_fraction * max(0.0, deadline - time.monotonic()))
        per_tree = budget / max(1, len(self.settings.trees))
        started = time.perf_counter()
        for branching, noise in self.settings.trees:
            if per_tree < 0.5:
                break
            hooks = Biccos(self.graph, self.settings, self.pool, self.root_boxes, noise, True, self.stats)
            self.stats["trees"] += 1
            outcome = run(branching, time.monotonic() + per_tree, hooks)
            self.stats["tree_domains"] = self.stats.get("tree_domains", 0) + outcome.stats.get("domains_visited", 0)
            if outcome.status in ("sat", "unsat"):
                self.stats["tree_time"] += time.perf_counter() - started
                return outcome
        self.stats["tree_time"] += time.perf_counter() - started
        return None

    def summary(self) -> dict:
        return {**self.pool.stats, **{k: v for k, v in self.stats.items()}, "pool_size": len(self.pool)}


def _kept_betas(history: History, kept: History, betas: dict) -> dict:
    """The multipliers of ``kept``'s splits, taken from ``history``'s
    ``{node: (S, k)}`` (slot order: splits on the node in history order)."""
    out = {}
    for node, tensor in betas.items():
        on_node = [s for s in history if s.node == node]
        keep = {s for s in kept if s.node == node}
        cols = [j for j, s in enumerate(on_node) if s in keep and j < tensor.shape[1]]
        if cols:
            out[node] = tensor[:, cols]
    return out


def cuts_enabled(config_value: bool | None, graph: Graph) -> bool:
    """Zero-config default of ``BabConfig.use_cuts`` (see the measurement in
    ``benchmarks/biccos_effect.py``)."""
    if config_value is not None:
        return bool(config_value)
    return DEFAULT_ON


#: measured default (benchmarks/biccos_effect.py, one thread): off.
#: safenlp 4056 without the MIP hand-over (quiet machine): BaB unsat 16.8 s /
#: 47,306 domains; BaB+BICCOS unsat 59.0 s / 47,162 domains (+15,806 in the
#: extra trees; 66.1 s before a tree's own whole paths were left out of its
#: passes).  Why no domains are saved: a tree's own unshortened no-goods are
#: slack in all its other domains (:meth:`CutPool.constraints`), and
#: shortening rarely verifies -- 121 of 3,266 candidates; dropping a single
#: split of a verified path cost 0.03-0.44 of a bound that needed > 0,
#: dropping half of them 1-6 -- so cuts stay 8-11 splits long and other
#: subtrees, which branch on other neurons, never contain them (3 domains
#: pruned).  resnet_2b prop_32: BaB 1,732 domains / 52.5 s, BICCOS 1,674
#: (+262 tree) / 75.3 s.  Other branching orders do not help either: 30%
#: score noise gave 1,702-1,738 domains there.
DEFAULT_ON = False
