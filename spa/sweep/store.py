"""results.jsonl: one JSON line per candidate, sorted by candidate, rewritten whole through
a temporary file and a rename after every finished candidate, so an interrupted sweep
leaves the last complete file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

RESULTS = "results.jsonl"


def read(out_dir) -> dict:
    """{candidate id: record} of the sweep folder ({} when there is none)."""
    path = os.path.join(out_dir, RESULTS)
    if not os.path.isfile(path):
        return {}
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:  # a hand-edited or foreign line: measured again
                continue
            if isinstance(rec, dict) and "id" in rec:
                out[rec["id"]] = rec
    return out


def write(out_dir, records: dict, order=None):
    """Write every record, those of `order` (candidate ids) first in that order, then the rest by id."""
    order = [i for i in (order or []) if i in records]
    rest = sorted(set(records) - set(order))
    text = "".join(json.dumps(records[i], sort_keys=True) + "\n" for i in order + rest)
    write_text(os.path.join(out_dir, RESULTS), text)


def write_text(path, text: str):
    with _atomic(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def copy(src, dst):
    """Copy a file to dst through a temporary file and a rename."""
    with _atomic(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_bytes(path, data: bytes):
    with _atomic(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


class _atomic:
    """A temporary path beside `path`, renamed onto it when the block succeeds, removed otherwise."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __enter__(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".spa.tmp")
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)
        return False
