"""Recovery: refit a pruned model's weights, layer by layer, so that on a few hundred
unlabeled samples each layer reproduces the unpruned model's outputs."""

from .core import recover
from .report import LayerFit, RecoveryReport

__all__ = ["recover", "RecoveryReport", "LayerFit"]
