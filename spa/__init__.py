"""SPA: Structurally Prune Anything, at the ONNX graph level. The public API."""

from .api import analyze, prune
from .errors import ModelError, NothingToPrune, SpaError, UsageError, VerifyError
from .measure import block_warnings
from .results import Analysis, GroupInfo, PruneResult, Stats, Verdict
from .verify import masked

__all__ = ["analyze", "prune", "masked", "block_warnings", "Analysis", "GroupInfo", "PruneResult", "Stats", "Verdict",
           "SpaError", "UsageError", "ModelError", "NothingToPrune", "VerifyError"]
__version__ = "0.1.0"
