"""Input arrays from files: an .npz archive or a folder of <input name>.npy files
(`spa compare --inputs`, `spa prune --inputs`)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import UsageError


def load_arrays(path) -> dict:
    """Arrays by input name from an .npz file or a folder of <input name>.npy files."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if not files:
            raise UsageError(f"{path}: folder has no .npy files")
        return {f[:-4]: np.load(os.path.join(path, f), allow_pickle=False) for f in files}
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file or folder")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({exc})") from exc
    if not hasattr(data, "files"):
        raise UsageError(f"{path}: expected an .npz archive or a folder of .npy files")
    with data:
        return {k: data[k] for k in data.files}
