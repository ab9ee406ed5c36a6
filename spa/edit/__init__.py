"""Editing the model: the plan (which channels go), compensation of the weights
that stay, and the rewrite into smaller tensors."""

from .compensate import Update, apply_shift, bias_of, fold_means
from .interface import (adapt_feeds, adapt_outputs, adapt_shapes, interface_changes, mask_feeds, resized, sidecar, sidecar_path,
                        with_sizes)
from .plan import MAX_RATIO, NORMALIZE, TARGET_SLACK, auto_keep, global_plan, local_plan, normalised
from .rewrite import apply, export, keep_map, write_const

__all__ = ["Update", "apply_shift", "bias_of", "fold_means", "adapt_feeds", "adapt_outputs",
           "adapt_shapes", "interface_changes", "mask_feeds", "resized", "sidecar", "sidecar_path", "with_sizes", "MAX_RATIO", "NORMALIZE", "TARGET_SLACK", "auto_keep", "global_plan",
           "local_plan", "normalised", "apply", "export", "keep_map", "write_const"]
