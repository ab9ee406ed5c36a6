"""Name -> criterion. Registering a name twice is an error."""

from ...errors import UsageError

CRITERIA: dict = {}


def register(name):
    def wrap(fn):
        if name in CRITERIA:
            raise ValueError(f"criterion {name!r} already registered")
        CRITERIA[name] = fn
        return fn
    return wrap


def get(name):
    if name not in CRITERIA:
        raise UsageError(f"unknown criterion {name!r}; choose from {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]
