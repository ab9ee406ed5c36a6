"""Plain result values returned by the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass


@dataclass(frozen=True)
class GroupInfo:
    """One coupled channel group."""

    id: int
    channels: int
    members: tuple  # "tensor[axis]" of every parameter slice in the group
    nodes: tuple  # names of the nodes that touch it
    macs_share: float
    prunable: bool
    reason: str  # why it is blocked; "" when prunable
    elements: int  # largest number of elements one channel spans in a single tensor axis
    kind: str  # "heads", "hidden" (passes a norm: pruning is not exactly zeroing) or "mlp"


@dataclass(frozen=True)
class Stats:
    params: int
    macs: int
    file_size: int


@dataclass(frozen=True)
class Analysis:
    model: str
    stats: Stats
    groups: tuple
    blocked_ops: tuple  # op types without a rule, as (op, count)
    notes: tuple = ()  # what the user should know (the sizes SPA chose for dynamic input dims)

    @property
    def prunable(self):
        return tuple(g for g in self.groups if g.prunable)

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    checker: bool
    runs: bool
    outputs_match: bool
    deterministic: bool


@dataclass(frozen=True)
class GroupChange:
    id: int
    before: int
    after: int


@dataclass(frozen=True)
class PruneResult:
    input: str
    output: str | None
    before: Stats
    after: Stats
    changes: tuple  # GroupChange for every pruned group
    blocked: int  # groups that could not be pruned
    prunable: int
    verdict: Verdict
    timings: dict = field(default_factory=dict)
    sinks: tuple = ()  # (tensor, axis, removed indices) read by removed channels: the oracle's mask
    model: object = field(default=None, repr=False, compare=False)  # the pruned onnx.ModelProto
    exact: bool = True  # every pruned group is equivalent to zeroing (no "hidden" group)
    updates: tuple = ()  # compensate.Update records: part of the oracle
    criterion: str = ""  # the importance criterion used
    keep: dict = field(default_factory=dict, repr=False, compare=False)  # {(tensor, axis): kept indices}
    notes: tuple = ()  # what the user should know about the result (a MACs target out of reach)
    recovery: object = None  # recover.RecoveryReport when weights were refitted on calibration data
    sensitivity: dict = field(default_factory=dict)  # {group id: ((channels removed, output error), ...)} measured

    @property
    def macs_reduction(self):
        return 1 - self.after.macs / self.before.macs if self.before.macs else 0.0

    @property
    def params_reduction(self):
        return 1 - self.after.params / self.before.params if self.before.params else 0.0

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sinks", "model", "updates", "keep", "recovery")}
        d = {k: asdict(v) if is_dataclass(v) else v for k, v in d.items()}
        d["changes"] = [asdict(c) for c in self.changes]
        d["macs_reduction"] = self.macs_reduction
        d["params_reduction"] = self.params_reduction
        d["recovery"] = None if self.recovery is None else self.recovery.to_dict()
        return d
