"""`spa sweep`: prune each model at several settings and criteria, measure every candidate's
fidelity (the `spa compare` protocol) and latency (the `spa bench` protocol), and report
the trade-off: results.jsonl, a table, a Pareto report (report.html), and --pick."""

from .core import SweepResult, sweep
from .engines import WorkerDied, cpu_slots
from . import plan
from .plan import DEFAULT, KNOBS, Candidate, Pick, Settings, criteria, parse_pick, values
from .task import TIMING_KEYS, comparable, run_candidate
from .text import sweep_text
from ..view.pareto import front

__all__ = ["sweep", "SweepResult", "WorkerDied", "cpu_slots", "DEFAULT", "KNOBS", "Candidate", "Pick", "Settings",
           "criteria", "parse_pick", "values", "TIMING_KEYS", "comparable", "run_candidate", "sweep_text", "front"]
