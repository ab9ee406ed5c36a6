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
    kind: str  # "heads", "head_dim", "hidden" (passes a norm: pruning is not exactly zeroing) or "mlp"
    layers: tuple = ()  # names of the nodes whose weights the members are, in member order
    label: str = ""  # the kind in words: conv channels, MLP width, heads, head_dim, hidden size


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
    provenance: dict = field(default_factory=dict)  # what SPA recorded when it pruned this model (spa.report)
    notes: tuple = ()  # what the user should know (the sizes SPA chose for dynamic input dims)

    @property
    def prunable(self):
        return tuple(g for g in self.groups if g.prunable)

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class OutputFidelity:
    """How one output of the pruned model differs from the original's on the same inputs."""

    name: str
    shape: tuple  # the original's
    pruned_shape: tuple | None  # None when the pruned model lacks the output
    max_abs: float | None  # max |pruned - original|: the atol that would pass
    max_rel: float | None  # max |pruned - original| / |original|: the rtol that would pass
    mean_abs: float | None
    cosine: float | None  # of the flattened outputs; exactly 1.0 when they are identical
    top1: float | None  # classifier outputs ([N, C], C >= 2): share of rows with the same argmax
    top5: float | None  # share of rows whose original top-1 class is in the pruned top 5 (C > 5)
    note: str = ""  # why the metrics are missing
    within: bool | None = None  # |pruned - original| <= atol + rtol * |original| everywhere; None: not asked

    @property
    def comparable(self) -> bool:
        return self.cosine is not None


@dataclass(frozen=True)
class Verdict:
    """What verification checked (checker, onnxruntime runs, output names, shapes and
    types, determinism) and what it measured: `fidelity`, one OutputFidelity per output
    of the original, on `samples` inputs from `inputs`."""

    checker: bool
    runs: bool
    outputs_match: bool  # same output names, shapes and element types; not the same values
    deterministic: bool
    fidelity: tuple = ()
    inputs: str = ""  # what the figures were measured on: "generated (seed 0)", the --calib file
    samples: int = 0

    @property
    def cosine(self) -> float | None:
        """The lowest cosine over the outputs (None when none was comparable)."""
        values = [f.cosine for f in self.fidelity if f.cosine is not None]
        return min(values) if values else None

    @property
    def max_abs(self) -> float | None:
        values = [f.max_abs for f in self.fidelity if f.max_abs is not None]
        return max(values) if values else None

    @property
    def top1(self) -> float | None:
        """The lowest top-1 agreement over classifier outputs (None without one)."""
        values = [f.top1 for f in self.fidelity if f.top1 is not None]
        return min(values) if values else None


@dataclass(frozen=True)
class InterfaceChange:
    """A graph input or output that pruning shrank (allow_interface_change)."""

    name: str
    kind: str  # "input" or "output"
    old_shape: tuple  # as declared: an int, a symbolic dim's name, or None
    new_shape: tuple
    kept: dict  # {axis: kept indices}


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
    interface: tuple = ()  # InterfaceChange of each graph input and output that shrank (allow_interface_change)
    latency: object = None  # measure.target.LatencyReport of a --target-latency plan

    @property
    def macs_reduction(self):
        return 1 - self.after.macs / self.before.macs if self.before.macs else 0.0

    @property
    def params_reduction(self):
        return 1 - self.after.params / self.before.params if self.before.params else 0.0

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sinks", "model", "updates", "keep", "recovery", "latency")}
        d = {k: asdict(v) if is_dataclass(v) else v for k, v in d.items()}
        d["changes"] = [asdict(c) for c in self.changes]
        d["interface"] = [asdict(c) for c in self.interface]
        d["macs_reduction"] = self.macs_reduction
        d["params_reduction"] = self.params_reduction
        d["recovery"] = None if self.recovery is None else self.recovery.to_dict()
        d["latency"] = None if self.latency is None else self.latency.to_dict()
        d["verdict"].update(cosine=self.verdict.cosine, max_abs=self.verdict.max_abs, top1=self.verdict.top1)
        return d
