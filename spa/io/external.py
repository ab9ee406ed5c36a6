"""External tensor data: resolve it safely, map it read-only, and write it streamed.

A model may keep tensor bytes in files beside it. SPA reads only regular files that
lie inside the model's folder, maps them read-only and lazily, and writes a pruned
model's external data one tensor at a time.
"""

from __future__ import annotations

import mmap
import os
import stat

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from ..errors import ModelError
from ..protos import model_tensors

INLINE_BELOW = 64 * 1024  # external tensors smaller than this are read into the proto at load
WRITE_FROM = 1024  # tensors of at least this many bytes go to the data file (as onnx.save does)
CHUNK = 16 * 1024 * 1024
SYNC_EVERY = 256 * 1024 * 1024  # bytes a DataFile writes between syncs
SUB_BYTE = {TensorProto.UINT4: 4, TensorProto.INT4: 4, TensorProto.FLOAT4E2M1: 4,
            TensorProto.UINT2: 2, TensorProto.INT2: 2}
NOT_MAPPED = set(SUB_BYTE) | {TensorProto.UNDEFINED, TensorProto.STRING,
                              TensorProto.FLOAT6E2M3, TensorProto.FLOAT6E3M2}
VALID_TYPES = set(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}


def bad_name(graph: onnx.GraphProto) -> bytes | None:
    """The first name in a graph (or its subgraphs) that is not valid UTF-8, if any.
    Protobuf hands such proto2 strings over as bytes."""
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info) + list(graph.initializer):
        if not isinstance(vi.name, str):
            return vi.name
    for node in graph.node:
        for v in [node.name, node.op_type, node.domain, *node.input, *node.output]:
            if not isinstance(v, str):
                return v
        for a in node.attribute:
            if not isinstance(a.name, str):
                return a.name
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                found = bad_name(g)
                if found is not None:
                    return found
    return None


def elements(t: TensorProto) -> int:
    n = 1
    for d in t.dims:
        if d < 0:
            raise ModelError(f"tensor '{t.name}' has a negative dim {d}")
        n *= d
    return n


def nbytes(t: TensorProto) -> int | None:
    """Bytes the tensor's data takes in raw form, or None for strings."""
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    n = elements(t)
    bits = SUB_BYTE.get(t.data_type) or {TensorProto.FLOAT6E2M3: 6, TensorProto.FLOAT6E3M2: 6}.get(t.data_type)
    if bits:
        return (n * bits + 7) // 8
    return n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def external_info(t: TensorProto) -> tuple[str, int, int | None]:
    """(location, offset, length or None) of an external tensor."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if not location:
        raise ModelError(f"tensor '{t.name}' has external data without a location")
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError as exc:
        raise ModelError(f"tensor '{t.name}' has a bad external-data offset or length") from exc
    if offset < 0 or (length is not None and length < 0):
        raise ModelError(f"tensor '{t.name}' has a negative external-data offset or length")
    return location, offset, length


def resolve(base: str, location: str, name: str, where: str = "") -> str:
    """The real path of `location` under the folder `base`; refuse anything that leaves it."""
    what = f"{where + ': ' if where else ''}external data '{location}' of tensor '{name}'"
    if "\0" in location:
        raise ModelError(f"{what}: the location holds a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise ModelError(f"{what}: absolute paths are refused; external data must lie in the model's folder")
    root = os.path.realpath(base)
    path = os.path.join(base, location)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise ModelError(f"{what}: the location points outside the model's folder; refused")
    if os.path.islink(path):
        raise ModelError(f"{what}: the file is a symbolic link; refused")
    try:
        st = os.stat(real)
    except OSError as exc:
        raise ModelError(f"{what}: missing file ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{what}: not a regular file")
    return real


def open_plain(path: str) -> int:
    """A read-only descriptor for a checked path; a link swapped in since is not followed."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))


class Files:
    """Read-only memory maps of external data files, one per file, released on demand."""

    def __init__(self):
        self._maps: dict = {}

    def array(self, path: str, offset: int, dtype, shape) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        size = count * np.dtype(dtype).itemsize
        if size == 0:
            return np.zeros(shape, dtype)
        mm = self._maps.get(path)
        if mm is None or len(mm) < offset + size:  # a data file being written may have grown
            fd = open_plain(path)
            try:
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            self._maps[path] = mm
        if offset + size > len(mm):
            raise ModelError(f"{path}: external data ends before byte {offset + size}")
        return np.frombuffer(mm, dtype=dtype, count=count, offset=offset).reshape(shape)

    def release(self):
        """Drop mapped pages from this process's memory; they are read again if touched."""
        for mm in self._maps.values():
            if hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_DONTNEED)


class ExternalValues(LazyValues):
    """gs lazy values backed by a byte range of a data file, read through a memory map."""

    def __init__(self, tensor: TensorProto, files: Files, path: str, offset: int):
        super().__init__(tensor)
        self.files, self.path, self.offset = files, path, offset

    def load(self) -> np.ndarray:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(self.tensor.data_type)
        return self.files.array(self.path, self.offset, dtype, tuple(self.tensor.dims))


class Store:
    """The external data of one loaded model: its folder, mapped files, total bytes."""

    def __init__(self, base: str):
        self.base = base
        self.files = Files()
        self.paths: set = set()
        self.data_bytes = 0


def attach(model: onnx.ModelProto, base: str | None, where: str) -> Store:
    """Check every tensor's data; read small external tensors into the proto.

    Large external tensors stay on disk (see bind). Raises ModelError for data that
    is missing, short, of an unknown type, or outside `base`.
    """
    store = Store(base or "")
    for t in model_tensors(model):
        if t.data_type not in VALID_TYPES:
            raise ModelError(f"{where}: tensor '{t.name}' has an unknown data type {t.data_type}")
        size = nbytes(t)
        if t.data_location != TensorProto.EXTERNAL:
            if t.HasField("raw_data") and size is not None and len(t.raw_data) != size:
                raise ModelError(f"{where}: tensor '{t.name}' declares {size} bytes but holds {len(t.raw_data)}")
            store.data_bytes += len(t.raw_data) if t.HasField("raw_data") else 0
            continue
        if base is None:
            raise ModelError(f"{where}: tensor '{t.name}' keeps its data in an external file; "
                             "pass the model's path instead of a ModelProto")
        if size is None:
            raise ModelError(f"{where}: tensor '{t.name}' of type STRING cannot use external data")
        location, offset, length = external_info(t)
        path = resolve(base, location, t.name, where)
        if length is not None and length != size:
            raise ModelError(f"{where}: tensor '{t.name}' declares {size} bytes but its external data holds {length}")
        have = os.path.getsize(path)
        if offset + size > have:
            raise ModelError(f"{where}: external data '{location}' of tensor '{t.name}' is truncated "
                             f"(needs bytes {offset}..{offset + size}, the file has {have})")
        store.paths.add(path)
        store.data_bytes += size
        if size < INLINE_BELOW or t.data_type in NOT_MAPPED:
            fd = open_plain(path)
            try:
                t.raw_data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
    return store


def bind(graph, store: Store) -> None:
    """Give every gs Constant whose tensor is external an ExternalValues (recursively)."""
    for t in constants(graph):
        v = t._values
        if isinstance(v, LazyValues) and not isinstance(v, (ExternalValues, SparseValues)) \
                and v.tensor.data_location == TensorProto.EXTERNAL:
            location, offset, _ = external_info(v.tensor)
            t.values = ExternalValues(v.tensor, store.files, resolve(store.base, location, v.tensor.name), offset)


def tensor_array(t: TensorProto, store: Store) -> np.ndarray:
    """A tensor's value; an external one is read through the store's read-only maps."""
    if t.data_location != TensorProto.EXTERNAL:
        return onnx.numpy_helper.to_array(t)
    location, offset, _ = external_info(t)
    return ExternalValues(t, store.files, resolve(store.base, location, t.name), offset).load()


def constants(graph):
    """Every gs.Constant of a graph: its tensors, node attributes, and subgraphs' ones."""
    seen = {}
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.nodes:
            for t in list(node.inputs) + list(node.outputs):
                if isinstance(t, gs.Constant):
                    seen.setdefault(id(t), t)
            for value in node.attrs.values():
                if isinstance(value, gs.Constant):
                    seen.setdefault(id(value), value)
                elif isinstance(value, gs.Graph):
                    stack.append(value)
        for t in list(g.inputs) + list(g.outputs):
            if isinstance(t, gs.Constant):
                seen.setdefault(id(t), t)
    return list(seen.values())


class DataFile:
    """The external data file of a model being written; tensors are appended in turn."""

    def __init__(self, path: str, files: Files):
        self.path, self.location, self.files = path, os.path.basename(path), files
        self._f = open(path, "wb")
        self.size = 0
        self._synced = 0

    def _write(self, data):
        """Append; every SYNC_EVERY bytes, push the written range to disk and drop it from
        the page cache: a large dirty cache slows page-cache writes several times over
        (tools/memory_bench.py), and nothing here reads those pages soon."""
        self._f.write(data)
        pos = self._f.tell()
        if pos - self._synced >= SYNC_EVERY:
            self._f.flush()
            os.fdatasync(self._f.fileno())
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._f.fileno(), self._synced, pos - self._synced, os.POSIX_FADV_DONTNEED)
            self._synced = pos

    def _start(self, n: int) -> int:
        align = 4096 if n >= 1 << 20 else 16  # page-aligned large tensors can be mapped by onnxruntime
        pad = -self.size % align
        if pad:
            self._write(b"\0" * pad)
            self.size += pad
        return self.size

    def put_array(self, value: np.ndarray) -> int:
        value = np.ascontiguousarray(value)
        offset = self._start(value.nbytes)
        data = memoryview(value.reshape(-1).view(np.uint8))
        for i in range(0, len(data), CHUNK):
            self._write(data[i:i + CHUNK])
        self.size += value.nbytes
        return offset

    def put_copy(self, src: str, src_offset: int, n: int) -> int:
        offset = self._start(n)
        fd = open_plain(src)
        try:
            done = 0
            while done < n:
                chunk = os.pread(fd, min(CHUNK, n - done), src_offset + done)
                if not chunk:
                    raise ModelError(f"{src}: external data ends early")
                self._write(chunk)
                done += len(chunk)
        finally:
            os.close(fd)
        self.size += n
        return offset

    def values(self, name: str, data_type: int, dims, offset: int, length: int) -> ExternalValues:
        """Lazy values for a tensor stored here, whose proto points at this file."""
        t = TensorProto(name=name, data_type=data_type, dims=list(dims), data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self._f.flush()
        return ExternalValues(t, self.files, self.path, offset)

    def close(self):
        if not self._f.closed:
            self._f.close()
