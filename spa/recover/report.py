"""What recovery did, per layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LayerFit:
    """One refitted layer. Errors are squared errors relative to the target's energy."""

    name: str
    kind: str  # conv | linear | affine
    rows: int  # least-squares rows accumulated (positions or tokens over all samples)
    before: float  # on all rows, current weights
    after: float  # on all rows, written weights (never above `before`)
    held_before: float  # on held-out samples, current weights
    held_after: float  # on held-out samples, weights fitted without them
    kept_old: float  # share of groups left at their current weights
    seconds: float
    skipped: str = ""  # why the layer was not refit ("" when it was)


@dataclass(frozen=True)
class RecoveryReport:
    layers: tuple  # LayerFit, in topological order
    samples: int
    passes: int  # groups of layers fitted together (each from the refits of all earlier groups)
    seconds: float
    forward_seconds: float  # of which running onnxruntime
    output_before: float = 0.0  # graph outputs' squared error vs the original, relative, held-out samples
    output_after: float = 0.0  # the same with the refitted weights
    reverted: bool = False  # the refits raised output_after above output_before: weights left as pruned

    @property
    def improved(self) -> int:
        return sum(f.after < f.before for f in self.layers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["improved"] = self.improved
        return d

    def summary(self) -> str:
        fitted = [f for f in self.layers if not f.skipped]
        mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
        return (f"recovered {self.improved}/{len(self.layers)} layers on {self.samples} samples in "
                f"{self.passes} passes, {self.seconds:.1f}s ({self.forward_seconds:.1f}s running the models); "
                f"mean relative error {mean([f.before for f in fitted]):.4f} -> {mean([f.after for f in fitted]):.4f}; "
                f"outputs {self.output_before:.4f} -> {self.output_after:.4f}"
                + (" (worse: weights left as pruned)" if self.reverted else ""))
