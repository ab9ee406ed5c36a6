"""Importance criteria. Each scores every channel of a group, member by member.

A criterion is `fn(members, channels, rng) -> array [len(members), channels]`.
Each member is one parameter slice of the group (see importance.Member).
"""

from . import data, magnitude, obs  # noqa: F401
from .registry import CRITERIA, get  # noqa: F401
