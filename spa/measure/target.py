"""The plan for `spa prune --target-latency R`: measure, plan on the latency model, bench, correct.

1. Profile the original under the bench settings and build its latency model
   (spa.measure.latency): what each group's channels cost in ms. Time a probe variant
   (every group less PROBE of its channels) against the original and make a share of every
   term fixed so that the model predicts what the probe measured (latency.calibrated).
2. Plan globally (spa.edit.global_plan with the latency model as the cost): the cheapest
   importance (or measured error) per ms saved goes first, until the predicted latency is R.
3. Rewrite the plan (no compensation: latency does not depend on weight values) and time it
   against the original, interleaved (spa.bench; the median ratio of neighbouring runs).
   Unless the measured ratio is within R x (1 - TOLERANCE) .. R x (1 + NOISE), move the
   predicted target by what the measurements showed (between the nearest attempts on either
   side of R once there are some, else along a slope kept within a factor of 2 of the
   model's) and plan again, at most CORRECTIONS times. The plan is the least pruned attempt
   measured at or under R x (1 + NOISE); else the closest at or under R x (1 + TOLERANCE);
   else the fastest. (Every channel beyond what R needs costs accuracy: where latency
   hardly moves with the channels, 1% of latency can be 10% of the MACs.)
4. If even that one measures above R x (1 + MISS), the target is out of reach with these
   settings (`--max-ratio`, `--exclude`, or a launch-bound GPU run: spa.measure.profile):
   TargetMissed says what was measured and what is reachable, and nothing is written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..edit import apply, global_plan, keep_map, local_plan
from ..edit.plan import CostModel, MacsModel
from ..errors import TargetMissed
from ..graph import removed_elements
from .bench import BenchSettings
from .explain import LAUNCH_BOUND
from .latency import calibrated, latency_model, measured_ratio

TOLERANCE = 0.02  # a measured ratio at most this share under the target ends the corrections
NOISE = 0.01  # a measured ratio up to this share over the target meets it (spread of paired timings: ~0.5%)
MISS = 0.05  # a best measured ratio above target x (1 + MISS) is a miss: nothing is written
CORRECTIONS = 3
PROBE = 0.5  # share of every group's channels the probe variant (spa.measure.latency.calibrated) removes
SLOPE = 2.0  # a correction trusts the measured slope (measured / predicted) within this factor of 1
SECONDS = 2.0  # timing per model and attempt (interleaved), after the warm-up
RUNS = (5, 60)  # fewest and most timed runs per model and attempt


@dataclass(frozen=True)
class Attempt:
    planned: float  # the latency ratio the model was asked to reach
    predicted: float  # what the latency model predicts for the plan
    measured: float  # pruned / original p50, interleaved
    macs: float  # MACs ratio of the plan


@dataclass(frozen=True)
class LatencyReport:
    target: float
    device: str
    batch: int
    threads: int
    original_ms: float  # p50 of the original in the chosen attempt's run
    pruned_ms: float
    attempts: tuple  # Attempt per plan tried
    chosen: int  # index of the attempt whose plan was kept
    mapped: float  # share of profiled kernel time mapped to graph nodes by name
    issue_ms: float | None = None  # CUDA: host time to issue a run of the original (spa.measure.profile)
    wall_ms: float | None = None  # the original's run in the same measurement

    @property
    def measured(self) -> float:
        return self.attempts[self.chosen].measured

    @property
    def predicted(self) -> float:
        return self.attempts[self.chosen].predicted

    def summary(self) -> str:
        a = self.attempts[self.chosen]
        tries = "; ".join(f"planned {t.planned:.3f}: predicted {t.predicted:.3f}, measured {t.measured:.3f}"
                          for t in self.attempts)
        return (f"latency: x{a.measured:.3f} measured (run by run; p50 {self.original_ms:.2f} -> {self.pruned_ms:.2f} ms, "
                f"{self.device}, batch {self.batch}, threads {self.threads or 'default'}), x{a.predicted:.3f} "
                f"predicted, target x{self.target:g}; MACs x{a.macs:.3f}" + self._issue() +
                (f" ({len(self.attempts)} plans: {tries})" if len(self.attempts) > 1 else ""))

    def _issue(self) -> str:
        if self.issue_ms is None or not self.wall_ms:
            return ""
        return f"; host issue time {self.issue_ms:.2f} of {self.wall_ms:.2f} ms per run"

    def to_dict(self):
        return {"target": self.target, "device": self.device, "batch": self.batch, "threads": self.threads,
                "original_ms": self.original_ms, "pruned_ms": self.pruned_ms, "measured": self.measured,
                "predicted": self.predicted, "mapped": self.mapped, "chosen": self.chosen,
                "issue_ms": self.issue_ms, "wall_ms": self.wall_ms, "attempts": [asdict(a) for a in self.attempts]}


def latency_plan(source, c, scores, target, settings: BenchSettings, round_to, normalize, max_ratio,
                 curves=None, progress=None) -> tuple[dict, LatencyReport]:
    """({group id: channels}, LatencyReport) meeting pruned / original latency `target`.

    Args:
        source: the original model (path or proto) that `c` (graph.couple's result) describes.
        scores: {group id: channel scores}; curves: measured sensitivity, as for global_plan.
        settings: bench settings (device, one batch, threads, input shapes).
        progress: optional callable(i, n, name) after each measurement.
    """
    lat = latency_model(source, c.cg, settings)
    runs = int(min(RUNS[1], max(RUNS[0], SECONDS * 1000 / max(lat.wall_ms, 1e-3))))
    timing = replace(settings, seconds=None, runs=runs)
    if round_to == "auto" and lat.blocks:  # whole NCHWc blocks: a step inside one saves no time
        round_to = max(lat.blocks.values())
    groups = [gr for gr in c.groups if gr.id in scores]
    probe = local_plan(groups, scores, min(PROBE, max_ratio or PROBE), round_to)
    if probe:
        variant = _rewritten(c, probe)
        lat = calibrated(lat, c.cg, groups, probe, measured_ratio(source, variant, timing)[0])
    macs_terms = MacsModel(c.cg, c.groups)
    cost = (lat.terms, lat.fixed_ms, lat.blocks)
    planned, attempts, found = target, [], []
    for i in range(CORRECTIONS + 1):
        plan = global_plan(c.cg, c.groups, scores, round_to, target_macs=1 - planned, normalize=normalize,
                           max_ratio=max_ratio, curves=curves, cost=cost)
        predicted = 1 - _model(c, scores, cost).of_plan(plan)
        measured, a_ms, b_ms = measured_ratio(source, _rewritten(c, plan), timing)
        attempts.append(Attempt(planned, predicted, measured, 1 - macs_terms.of_plan(plan)))
        found.append((plan, a_ms, b_ms))
        if progress is not None:
            progress(i + 1, CORRECTIONS + 1, f"x{measured:.3f}")
        if target * (1 - TOLERANCE) <= measured <= target * (1 + NOISE) or not plan:
            break
        planned = _next_target(target, attempts)
    best = _choose(target, attempts)
    plan, a_ms, b_ms = found[best]
    report = LatencyReport(target, settings.device, settings.batches[0], settings.threads, a_ms, b_ms,
                           tuple(attempts), best, lat.mapped, lat.issue_ms, lat.wall_ms)
    if attempts[best].measured > target * (1 + MISS):
        raise TargetMissed(_miss_text(report, max_ratio))
    return plan, report


def _rewritten(c, plan):
    return apply(c.cg.copy(), keep_map(c.cg, removed_elements(c.all, plan)))


def _miss_text(r: LatencyReport, max_ratio) -> str:
    a = r.attempts[r.chosen]
    text = (f"--target-latency {r.target:g} is out of reach on {r.device} at batch {r.batch}: the fastest of "
            f"{len(r.attempts)} plans measured x{a.measured:.3f} ({r.original_ms:.2f} -> {r.pruned_ms:.2f} ms p50) "
            f"with MACs x{a.macs:.3f}")
    if r.issue_ms is not None and r.wall_ms and r.issue_ms >= LAUNCH_BOUND * r.wall_ms:
        text += (f"; the run is launch-bound: the host needs {r.issue_ms:.2f} of its {r.wall_ms:.2f} ms to issue "
                 "the work, which fewer channels do not shorten (a larger --batch gives the GPU more work per launch)")
    elif max_ratio is not None:
        text += f" within --max-ratio {max_ratio:g}"
    return text + f"; nothing was written (x{math.ceil(a.measured * 100) / 100:.2f} or more is reachable here)"


def _model(c, scores, cost):
    by_id = {gr.id: gr for gr in c.groups}
    return CostModel(c.cg, [by_id[g] for g in scores], *cost)


def _next_target(target, attempts) -> float:
    """The predicted ratio to plan for next: between the two attempts nearest the target on
    either side of it when there are such, else from the last attempt along the measured
    slope (the last two points), kept within a factor SLOPE of 1: two timings of plans a
    little apart can differ by noise alone, and their secant would jump far."""
    a = attempts[-1]
    under = [t for t in attempts if t.measured <= target]
    over = [t for t in attempts if t.measured > target]
    if under and over:
        lo, hi = max(under, key=lambda t: t.measured), min(over, key=lambda t: t.measured)
        if hi.predicted > lo.predicted:
            w = (target - lo.measured) / (hi.measured - lo.measured)
            return lo.predicted + w * (hi.predicted - lo.predicted)
    slope = 1.0
    if len(attempts) >= 2 and abs(a.predicted - attempts[-2].predicted) > 1e-3:
        b = attempts[-2]
        slope = min(SLOPE, max(1 / SLOPE, (a.measured - b.measured) / (a.predicted - b.predicted)))
    elif a.predicted > 0 and a.measured > 0:
        slope = a.measured / a.predicted
    guess = a.predicted + (target - a.measured) / slope
    return min(0.99, max(0.05, guess))


def _choose(target, attempts) -> int:
    """The least pruned attempt (highest predicted ratio) among those measured at or under
    target x (1 + NOISE); else the closest among those at or under target x (1 + TOLERANCE);
    else the fastest."""
    ok = [i for i, a in enumerate(attempts) if a.measured <= target * (1 + NOISE)]
    if ok:
        return max(ok, key=lambda i: (attempts[i].predicted, attempts[i].macs))
    ok = [i for i, a in enumerate(attempts) if a.measured <= target * (1 + TOLERANCE)]
    if ok:
        return min(ok, key=lambda i: abs(attempts[i].measured - target))
    return min(range(len(attempts)), key=lambda i: attempts[i].measured)
