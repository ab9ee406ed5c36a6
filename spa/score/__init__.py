"""Scoring channel groups: the criteria (plug-ins), the statistics they read
(propagated moments, correlations, the synthetic probe, calibration data), and the
reduction of member scores to one score per channel."""

from . import criteria
from .calib import Measured, fixed_batch
from .calib import read as read_calib
from .importance import REDUCTIONS, Member, check_criterion, check_reduce, members, Releasing, score, statistics
from .moments import ChannelStats, Moments
from .probe import Probed, synthetic_inputs, with_probe
from .weights import consumer_of, read, weight

__all__ = ["criteria", "Measured", "fixed_batch", "read_calib", "REDUCTIONS", "Member", "check_criterion", "check_reduce", "members", "Releasing", "score", "statistics",
           "ChannelStats", "Moments", "Probed", "synthetic_inputs", "with_probe", "consumer_of", "read", "weight"]
