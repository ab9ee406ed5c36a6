"""Writing a model: one file through a temporary file and a rename, or a model file
with its external data file, staged in a hidden folder and moved into place."""

from __future__ import annotations

import os
import shutil
import tempfile

import onnx

from ..errors import UsageError


def data_path(output: str) -> str:
    """Where the external data of `output` goes: `<output>.data` beside it."""
    return os.fspath(output) + ".data"


def write_atomic(proto: onnx.ModelProto, output: str) -> int:
    """Write to a temporary file beside `output`, then rename; returns the byte size."""
    data = proto.SerializeToString()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(output)), suffix=".spa.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a plain file's mode
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(data)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class Staged:
    """A hidden folder beside `output` holding the model file and its data file under
    their final names. commit() renames the data file, then the model, into place;
    leaving the `with` block removes whatever is still staged."""

    def __init__(self, output: str):
        self.output = os.path.abspath(output)
        self.dir = tempfile.mkdtemp(prefix=".spa-", suffix=".tmp", dir=os.path.dirname(self.output))
        self.model = os.path.join(self.dir, os.path.basename(self.output))
        self.data = data_path(self.model)

    def write(self, proto: onnx.ModelProto) -> int:
        """Write the model file; returns the bytes of model and data file together."""
        with open(self.model, "wb") as f:
            f.write(proto.SerializeToString())
        return sum(os.path.getsize(p) for p in (self.model, self.data) if os.path.exists(p))

    def commit(self):
        if os.path.exists(self.data) and os.path.getsize(self.data):
            os.replace(self.data, data_path(self.output))
        os.replace(self.model, self.output)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def default_output(path) -> str:
    """<stem>.pruned.onnx beside the input."""
    root, _ = os.path.splitext(os.fspath(path))
    return root + ".pruned.onnx"


def check_output(src, output, force):
    """Refuse an output that is the input, exists without `force`, or has no folder."""
    if output is None:
        return
    if isinstance(src, (str, os.PathLike)) and os.path.abspath(output) == os.path.abspath(src):
        raise UsageError(f"{output}: output would overwrite the input model")
    if os.path.exists(output) and not force:
        raise UsageError(f"{output}: file exists (use --force to overwrite)")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"{output}: directory {parent} does not exist")


def check_targets(m, output, external, force):
    """Refuse to write over the input model or its external data, or over a data file
    that exists, without `force`."""
    if output is None:
        return
    inputs = set(m.store.paths) | ({os.path.realpath(m.path)} if m.path else set())
    targets = [output] + ([data_path(output)] if external else [])
    for target in targets:
        if os.path.realpath(target) in inputs:
            raise UsageError(f"{target}: writing it would overwrite the input model or its data")
    if external and os.path.exists(targets[1]) and not force:
        raise UsageError(f"{targets[1]}: file exists (use --force to overwrite)")
