"""Decide which channels of which groups go.

Local: every prunable group loses `ratio` of its channels. Global: channels are
ranked across groups by score normalised by the group mean (or max, or not at all),
and removed lowest first until `ratio` of all channels, or `target_macs` of the MACs,
are gone; no group loses more than `max_ratio` of its channels (a criterion that
finds a layer nearly idle would otherwise empty it).
Channel counts stay multiples of `round_to` (counted in elements: a head of 64 is
already a multiple of 8); no group is ever emptied. `round_to="auto"` (the default) keeps,
per group, the multiple of 8, 4, 2 or 1 elements (the coarsest that fits) nearest the
requested count, where "fits" means the removal lands within half of what the ratio
asks: multiples of 8 suit onnxruntime's blocked (NCHWc) kernels (tools/roundto_bench.py),
and small groups still prune.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from ..graph import node_macs


def channel_step(group, round_to):
    """Channels per rounding step: a channel spanning e elements (a head of 64, a conv
    group of 8) needs only round_to / gcd(round_to, e) channels for the element counts
    to stay multiples of round_to."""
    span = max((int(np.bincount(ch).max()) for _, ch in group.spaces.values() if len(ch)), default=1)
    return round_to // math.gcd(round_to, span)


AUTO_STEPS = (8, 4, 2, 1)


def auto_keep(group, ratio):
    """Channels to keep under round_to="auto" (see the module doc)."""
    n = group.channels
    want = n * (1 - ratio)
    for r in AUTO_STEPS:
        step = channel_step(group, r)
        kept = min(n, max(step, round(want / step) * step))
        if n > step and abs(kept - want) <= 0.5 * n * ratio:
            return kept
    return keep_count(n, ratio, 1)


def group_step(group, round_to):
    """Channels per rounding step of one group; global ranking under "auto" takes the
    coarsest of 8, 4, 2, 1 elements that the group holds at least twice."""
    if round_to != "auto":
        return channel_step(group, round_to)
    return next((s for s in map(lambda r: channel_step(group, r), AUTO_STEPS) if group.channels >= 2 * s), 1)


def keep_count(n, ratio, round_to):
    """Channels to keep of n when removing `ratio`, rounded up to a multiple of round_to."""
    if n <= round_to:
        return n
    kept = math.ceil(n * (1 - ratio) / round_to - 1e-9) * round_to
    return min(n, max(kept, round_to))


def chunks(order, n, round_to, max_ratio=1.0):
    """Removal steps for one group: lowest channels first, each step ending on a multiple,
    removing at most `max_ratio` of the n channels in all."""
    floor = max(round_to if n > round_to else n, n - math.floor(max_ratio * n + 1e-9))
    steps, removed = [], 0
    first = n % round_to or round_to
    size = first
    while n - removed - size >= floor:
        steps.append(order[removed:removed + size])
        removed += size
        size = round_to
    return steps


def local_plan(groups, scores, ratio, round_to, kind_ratios=None) -> dict:
    """`kind_ratios` ({"heads": r, ...}) overrides `ratio` for groups of that kind."""
    plan = {}
    for gr in groups:
        r = (kind_ratios or {}).get(gr.kind, ratio)
        if gr.id not in scores or not r:
            continue
        order = np.argsort(scores[gr.id], kind="stable")
        kept = auto_keep(gr, r) if round_to == "auto" else keep_count(gr.channels, r, channel_step(gr, round_to))
        drop = gr.channels - kept
        if drop > 0:
            plan[gr.id] = np.sort(order[:drop])
    return plan


class CostModel:
    """Running estimate of a cost as channels are removed: a sum of terms (cost, factor
    spaces), each scaling with kept / size of its spaces, plus a fixed part. MACs are such
    a sum (MacsModel); so is a latency model (spa.measure.latency), whose kernels work on
    spaces padded to a block ({space: block}: kept and size count in whole blocks)."""

    def __init__(self, cg, groups, terms, fixed=0.0, blocks=None):
        self.size = {s: cg.g.nodes[s]["size"] for s in cg.g.nodes}
        self.blocks = blocks or {}
        self.kept = dict(self.size)
        self.ops = []
        self.by_space: dict = {}
        for cost, factors in terms:
            if cost:
                factors = [s for s in factors if s in self.size]
                for s in factors:
                    self.by_space.setdefault(s, []).append(len(self.ops))
                self.ops.append((cost, factors))
        self.base = sum(m for m, _ in self.ops) + fixed
        self.total = self.base
        self.counts = {gr.id: {s: np.bincount(ch, minlength=gr.channels) for s, (_, ch) in gr.spaces.items()}
                       for gr in groups}

    def _padded(self, s, n):
        b = self.blocks.get(s)
        return -(-n // b) * b if b else n

    def _op(self, i):
        cost, factors = self.ops[i]
        return cost * math.prod(self._padded(s, self.kept[s]) / self._padded(s, self.size[s]) for s in factors)

    def remove(self, gid, chans, commit=True):
        """Remove channels of a group; returns the reduction after it (undone unless `commit`)."""
        touched = {i for s in self.counts[gid] for i in self.by_space.get(s, ())}
        before = sum(self._op(i) for i in touched)
        for s, c in self.counts[gid].items():
            self.kept[s] -= int(c[chans].sum())
        delta = sum(self._op(i) for i in touched) - before
        if commit:
            self.total += delta
        else:
            for s, c in self.counts[gid].items():
                self.kept[s] += int(c[chans].sum())
        return 1 - (self.total + (0 if commit else delta)) / self.base if self.base else 0.0

    def reduction(self):
        return 1 - self.total / self.base if self.base else 0.0

    def shares(self) -> list:
        """Each term's cost now as a share of its full cost (terms in the order given, zero-cost ones left out)."""
        return [self._op(i) / self.ops[i][0] for i in range(len(self.ops))]

    def of_plan(self, plan) -> float:
        """The reduction a whole plan ({group id: channels}) gives, from the start; this model is left as it was."""
        kept, total = dict(self.kept), self.total
        self.kept, self.total = dict(self.size), self.base
        for gid, chans in plan.items():
            if gid in self.counts:
                self.remove(gid, np.asarray(chans, dtype=np.int64))
        out = self.reduction()
        self.kept, self.total = kept, total
        return out


class MacsModel(CostModel):
    """Running MACs estimate as channels are removed."""

    def __init__(self, cg, groups):
        super().__init__(cg, groups, [node_macs(node, cg.ctx) for node, _, _ in cg.flows])


NORMALIZE = ("mean", "max", "none")  # what a group's scores are divided by before global ranking


def normalised(sc, how="mean"):
    if how == "none":
        return sc
    scale = sc.mean() if how == "mean" else np.abs(sc).max()
    return sc / (scale or 1.0)


MAX_RATIO = 0.8  # default share of one group's channels a global plan may remove
TARGET_SLACK = 0.02  # a MACs target is met within this much; a step overshooting more waits


def global_plan(cg, groups, scores, round_to, ratio=None, target_macs=None, normalize="mean",
                max_ratio=MAX_RATIO, curves=None, cost=None) -> dict:
    """Remove the cheapest chunks across groups until the goal is met. A chunk's price is
    its mean normalised score or, for groups with a measured sensitivity curve
    (`curves`, {group id: verify.sensitivity.Curve}), the output error it adds per MACs it
    saves (per channel under a channel ratio). `cost` ((terms, fixed): see CostModel, e.g. a
    latency model) replaces MACs: `target_macs` is then the share of that cost to remove, a
    chunk with a curve is priced by its measured error added per unit of cost saved, and one
    without by its mean normalised score, as a MACs plan prices it (a chunk that saves
    nothing is never taken). Normalised scores are not comparable across groups per unit of
    cost the way measured errors are: priced per ms, then per ms^0.5, they emptied the groups
    with the most time per channel (attention heads, the first high-resolution layers); by
    score alone the data-free latency plans of tools/latency_accuracy.py are ahead of the
    MACs plans at the same latency in 7 of 8 MNIST cells (up to +41 points) and level in the
    eighth (the ViT at 0.5: -1.1), where per ms^0.5 the ViT was 25 points behind, and ahead
    on ImageNet MobileNetV2 (+18.6 at 0.7; per ms^0.5: -32)."""
    by_id = {gr.id: gr for gr in groups}
    curves = curves or {}
    heap, steps, norms, done = [], {}, {}, {}
    if cost is not None:
        model = CostModel(cg, [by_id[g] for g in scores], *cost)
    else:
        model = MacsModel(cg, [by_id[g] for g in scores]) if target_macs is not None else None

    def price(gid, k):
        """(price, tie-break): equal prices go to the chunk that saves most per channel."""
        step = steps[gid][k]
        gr, before = by_id[gid], done[gid]
        if cost is None and gid not in curves:
            return float(norms[gid][step].mean()), 0.0
        if cost is not None:
            saved = model.remove(gid, step, commit=False) - model.reduction()
        else:
            saved = len(step) * (gr.macs / gr.channels if target_macs is not None else 1.0)
        if saved <= 0:
            return math.inf, 0.0
        if gid not in curves:
            return float(norms[gid][step].mean()), -saved / len(step)
        return (curves[gid].at(before + len(step)) - curves[gid].at(before)) / saved, 0.0

    for gid, sc in scores.items():
        norms[gid] = normalised(sc, normalize)
        order = np.argsort(norms[gid], kind="stable")
        steps[gid], done[gid] = chunks(order, len(sc), group_step(by_id[gid], round_to), max_ratio), 0
        if steps[gid]:
            heapq.heappush(heap, (price(gid, 0), gid, 0))
    total = sum(len(sc) for sc in scores.values())
    removed, plan, deferred = 0, {}, []
    while heap:
        if ratio is not None and removed >= ratio * total:
            break
        if model is not None and model.reduction() >= target_macs:
            break
        p, gid, k = heapq.heappop(heap)
        if p[0] == math.inf:
            break
        step = steps[gid][k]
        if model is not None and plan:
            now, after = model.reduction(), model.remove(gid, step, commit=False)
            over = after - target_macs
            if over > target_macs - now or over > TARGET_SLACK:  # overshoots more than it gets closer,
                deferred.append((after, gid, step))  # or too far: try smaller steps of other groups first
                continue
        plan.setdefault(gid, []).extend(step.tolist())
        removed += len(step)
        done[gid] += len(step)
        if model is not None:
            model.remove(gid, step)
        if k + 1 < len(steps[gid]):
            heapq.heappush(heap, (price(gid, k + 1), gid, k + 1))
    if model is not None and deferred and model.reduction() < target_macs:
        gid, step = _last_step(model, deferred, by_id, plan, round_to, target_macs)
        plan.setdefault(gid, []).extend(step.tolist())
    return {gid: np.sort(np.asarray(ch)) for gid, ch in plan.items()}


LAYOUT_STEP = 4  # the finest multiple (elements) a last step may end on: see _last_step


def _last_step(macs, deferred, by_id, plan, round_to, target):
    """The step that meets the target (a floor) with the least overshoot: a deferred step,
    or under round_to "auto" the lowest channels of one, ending on a finer multiple of
    LAYOUT_STEP elements or more. (A count off a multiple of 4 makes onnxruntime's blocked
    NCHWc CPU kernels skip the Conv that reads it: ending on 55 channels, an MNIST VGG's
    --target-macs 0.3 plan ran at x1.09 of the original; on 60, at x0.80.)"""
    best = min(deferred, key=lambda d: d[0])
    if round_to != "auto":
        return best[1:]
    for _, gid, step in deferred:
        gr = by_id[gid]
        left = gr.channels - len(plan.get(gid, ()))
        for r in (r for r in AUTO_STEPS[1:] if r >= LAYOUT_STEP):
            fine = channel_step(gr, r)
            for p in range(1, len(step)):
                if (left - p) % fine == 0:
                    after = macs.remove(gid, step[:p], commit=False)
                    if target <= after < best[0]:
                        best = (after, gid, step[:p])
    return best[1:]
