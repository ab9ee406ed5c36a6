"""Importance criteria. Each scores every channel of a group, member by member.

A criterion is `fn(members, channels, rng) -> array [len(members), channels]`.
Each member is one parameter slice of the group (see spa.score.importance.Member).
To add one: copy spa/score/criteria/magnitude.py's `l2`, register it under a new
name, and add a case to tests/score/test_criteria.py.
"""

from . import data, magnitude, obs
from .registry import CRITERIA, get, register

FAMILIES = (data, magnitude, obs)

__all__ = ["CRITERIA", "FAMILIES", "get", "register"]
