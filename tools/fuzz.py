"""Fuzz `spa prune` with mutated models, and report every traceback, hang, crash,
internal error, modified input and file left behind after an error.

Seeds are the test architectures of tests/graphs.py, models/mnist_cnn.onnx, and an
external-data model. Each case applies one to three mutations, at byte level (bit
flips, overwrites, truncation, insertion, deletion, splicing) or field level (op
types, attributes, inputs, initializer dims/types/data, graph inputs and outputs,
opsets, external-data locations), then runs `spa prune` on it with a time limit.

    python tools/fuzz.py --cases 2000 --jobs 2             # each case a `spa prune` process
    python tools/fuzz.py --cases 200 --mode worker         # in-process, in killable workers

Case i is reproducible from (--seed, i); failing cases are kept under --save.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import multiprocessing as mp
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OK_CODES = {0, 2, 3, 4, 5}
INTERNAL = 10
MEMORY_LIMIT = 8 * 1024 ** 3
ARGS = [["--ratio", "0.3"], ["--ratio", "0.5", "--global"], ["--target-macs", "0.3"],
        ["--ratio", "0.3", "--round-to", "4"], ["--ratio", "0.3", "--external-data"]]
OPS = ["Relu", "Conv", "Add", "Mul", "Gemm", "MatMul", "Reshape", "Concat", "Split", "Slice", "Flatten",
       "Transpose", "BatchNormalization", "Identity", "Foo", "If", "Loop", "QuantizeLinear", "Resize", "Pad"]
INTS = [0, 1, -1, 2, 3, 7, 64, -2 ** 31, 2 ** 31 - 1, 2 ** 40, -(2 ** 63), 2 ** 63 - 1]
FLOATS = [0.0, -1.0, 1e30, float("nan"), float("inf"), -float("inf")]
LOCATIONS = ["../escape.data", "/etc/passwd", "/dev/zero", "missing.data", "model.onnx", "sub/../../x.data",
             "link.data", ".", "", "data.bin"]


# -- seeds ------------------------------------------------------------------------
def seeds(folder) -> list[tuple[str, bytes, bytes | None]]:
    """(name, model bytes, data-file bytes or None) for every seed model."""
    from graphs import ALL

    out = [(name, fn().SerializeToString(), None) for name, fn in sorted(ALL.items())]
    with open(os.path.join(ROOT, "models", "mnist_cnn.onnx"), "rb") as f:
        out.append(("mnist_cnn", f.read(), None))
    path = os.path.join(folder, "model.onnx")
    onnx.save(ALL["reshape_head"](), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="data.bin", size_threshold=0)
    with open(path, "rb") as f, open(os.path.join(folder, "data.bin"), "rb") as d:
        out.append(("external", f.read(), d.read()))
    return out


# -- byte-level mutations -----------------------------------------------------------
def flip_bits(rng, b, _):
    b = bytearray(b)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def set_bytes(rng, b, _):
    b = bytearray(b)
    for _ in range(rng.randint(1, 16)):
        b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    return bytes(b)


def truncate(rng, b, _):
    return b[:rng.randrange(len(b))]


def insert(rng, b, _):
    i = rng.randrange(len(b) + 1)
    return b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))) + b[i:]


def delete(rng, b, _):
    i = rng.randrange(len(b))
    return b[:i] + b[i + rng.randint(1, 64):]


def splice(rng, b, other):
    i, j = rng.randrange(len(b)), rng.randrange(len(other))
    return b[:i] + other[j:j + rng.randint(1, 4096)] + b[i:]


BYTE_MUTATIONS = [flip_bits, set_bytes, truncate, insert, delete, splice]


# -- field-level mutations ------------------------------------------------------------
def _names(m):
    names = [i.name for i in m.graph.input] + [t.name for t in m.graph.initializer]
    return names + [o for n in m.graph.node for o in n.output]


def op_type(rng, m):
    if m.graph.node:
        rng.choice(m.graph.node).op_type = rng.choice(OPS)


def attribute(rng, m):
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return
    a = rng.choice(rng.choice(nodes).attribute)
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice(INTS)
    elif a.type == onnx.AttributeProto.INTS and len(a.ints):
        a.ints[rng.randrange(len(a.ints))] = rng.choice(INTS)
        if rng.random() < 0.3:
            a.ints.append(rng.choice(INTS))
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice(FLOATS)
    elif a.type == onnx.AttributeProto.TENSOR:
        a.t.dims.append(rng.choice([0, 2, 3]))
    else:
        a.type = rng.choice([onnx.AttributeProto.INT, onnx.AttributeProto.FLOATS, onnx.AttributeProto.GRAPH])


def rewire(rng, m):
    if m.graph.node:
        n = rng.choice(m.graph.node)
        if n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(_names(m) + ["", "nowhere"])


def drop_node(rng, m):
    if m.graph.node:
        del m.graph.node[rng.randrange(len(m.graph.node))]


def duplicate_output(rng, m):
    if len(m.graph.node) > 1:
        a, b = rng.sample(list(m.graph.node), 2)
        a.output[0] = b.output[0]


def init_dims(rng, m):
    if m.graph.initializer:
        t = rng.choice(m.graph.initializer)
        if t.dims and rng.random() < 0.7:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 3, 10 ** 6, 2 ** 40, -1])
        else:
            t.dims.append(rng.choice([1, 2, 10 ** 9]))


def init_data(rng, m):
    if not m.graph.initializer:
        return
    t = rng.choice(m.graph.initializer)
    choice = rng.randrange(4)
    if choice == 0:
        t.data_type = rng.choice([0, 2, 8, 16, 22, 55, rng.randrange(30)])
    elif choice == 1 and t.raw_data:
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data) + 1)]
    elif choice == 2:
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * rng.randint(0, 8))
    else:
        t.raw_data = t.raw_data + b"\0" * rng.randint(1, 64)


def graph_input(rng, m):
    vi = rng.choice(list(m.graph.input))
    dims = vi.type.tensor_type.shape.dim
    if dims and rng.random() < 0.7:
        d = dims[rng.randrange(len(dims))]
        d.Clear()
        if rng.random() < 0.8:
            d.dim_value = rng.choice([0, 1, 2, 10 ** 5, 10 ** 9, 2 ** 40])
        else:
            d.dim_param = rng.choice(["N", "M", ""])
    else:
        vi.type.tensor_type.elem_type = rng.choice([0, 2, 7, 8, 10, 11, 16, 99])


def graph_output(rng, m):
    choice = rng.randrange(3)
    if choice == 0 and len(m.graph.output) > 0:
        del m.graph.output[rng.randrange(len(m.graph.output))]
    elif choice == 1:
        m.graph.output.add().CopyFrom(m.graph.output[0] if m.graph.output else onnx.ValueInfoProto(name="y"))
    else:
        out = rng.choice(list(m.graph.output)) if m.graph.output else m.graph.output.add()
        out.name = rng.choice(_names(m) + ["nowhere"])


def opset(rng, m):
    choice = rng.randrange(4)
    if choice == 0 and m.opset_import:
        m.opset_import[0].version = rng.choice([0, 1, 6, 9, 11, 13, 21, 23, 30, 999])
    elif choice == 1:
        m.ir_version = rng.choice([0, 1, 3, 4, 7, 10, 11, 99])
    elif choice == 2 and m.graph.node:
        rng.choice(m.graph.node).domain = rng.choice(["com.microsoft", "ai.onnx.ml", "com.evil", "ai.onnx"])
        if rng.random() < 0.5:
            m.opset_import.append(helper.make_opsetid("com.evil", 1))
    else:
        del m.opset_import[:]


def external(rng, m):
    if not m.graph.initializer:
        return
    t = rng.choice(m.graph.initializer)
    if t.data_location != TensorProto.EXTERNAL:
        t.data_location = TensorProto.EXTERNAL
        t.ClearField("raw_data")
        t.external_data.add(key="location", value="data.bin")
    entries = {e.key: e for e in t.external_data}
    choice = rng.randrange(3)
    if choice == 0 and "location" in entries:
        entries["location"].value = rng.choice(LOCATIONS)
    elif choice == 1:
        t.external_data.add(key="offset", value=str(rng.choice([-1, 0, 3, 10 ** 12, 4096])))
    else:
        t.external_data.add(key="length", value=rng.choice(["-5", "0", "1", "x", str(10 ** 12)]))


def subgraph(rng, m):
    """Wrap one node in the then-branch of an If on a constant condition."""
    if not m.graph.node:
        return
    i = rng.randrange(len(m.graph.node))
    n = m.graph.node[i]
    body = helper.make_graph([n], "then", [], [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", [n.input[0] if n.input else "x"], [n.output[0] + "_e"])],
                              "else", [], [helper.make_tensor_value_info(n.output[0] + "_e", TensorProto.FLOAT, None)])
    cond = f"cond_{i}"
    m.graph.initializer.append(numpy_helper.from_array(np.array(True), cond))
    node = helper.make_node("If", [cond], [n.output[0]], then_branch=body, else_branch=other)
    del m.graph.node[i]
    m.graph.node.insert(i, node)


def weights(rng, m):
    """Valid but odd weights: NaN, inf, zeros, huge values, a zeroed channel."""
    floats = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT and t.dims
              and t.data_location != TensorProto.EXTERNAL]
    if not floats:
        return
    t = rng.choice(floats)
    try:
        a = numpy_helper.to_array(t).copy()
    except Exception:  # an earlier mutation broke this tensor
        return
    choice = rng.randrange(3)
    if choice == 0:
        a.reshape(-1)[rng.randrange(a.size)] = rng.choice(FLOATS)
    elif choice == 1:
        a[rng.randrange(a.shape[0])] = 0
    else:
        a[...] = rng.choice([0.0, 1.0, 1e-30])
    t.CopyFrom(numpy_helper.from_array(a, t.name))


def spatial(rng, m):
    """Small valid-looking changes: input sizes, small attribute values."""
    if rng.random() < 0.5 and m.graph.input:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        if len(dims) > 2:
            dims[rng.randrange(2, len(dims))].dim_value = rng.randint(1, 40)
        return
    nodes = [n for n in m.graph.node if any(a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)
                                            for a in n.attribute)]
    if nodes:
        a = rng.choice([a for a in rng.choice(nodes).attribute
                        if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)])
        if a.type == onnx.AttributeProto.INT:
            a.i = rng.randint(0, 3)
        elif len(a.ints):
            a.ints[rng.randrange(len(a.ints))] = rng.randint(0, 3)


BENIGN = [weights, spatial]
FIELD_MUTATIONS = [op_type, attribute, rewire, drop_node, duplicate_output, init_dims, init_data,
                   graph_input, graph_output, opset, external, subgraph] + BENIGN * 3


def mutate(rng, data, others):
    """One to three mutations; field-level ones parse, change and re-serialise."""
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.4 or not data:
            fn = rng.choice(BYTE_MUTATIONS)
            data = fn(rng, data or b"\0", rng.choice(others)) if data else data
            continue
        m = onnx.ModelProto()
        try:
            m.ParseFromString(data)
        except Exception:  # already broken bytes: mutate them at byte level instead
            data = rng.choice(BYTE_MUTATIONS)(rng, data, rng.choice(others))
            continue
        if not m.graph.input:
            continue
        rng.choice(FIELD_MUTATIONS)(rng, m)
        try:
            data = m.SerializeToString()
        except Exception:  # a field made the message unserialisable; keep the last bytes
            pass
    return data


def make_case(seed, index, seed_models, folder, command="prune"):
    """Write case `index` into `folder`; returns (args, label)."""
    rng = random.Random(f"{seed}:{index}")
    name, data, ext = rng.choice(seed_models)
    data = mutate(rng, data, [s[1] for s in seed_models])
    with open(os.path.join(folder, "model.onnx"), "wb") as f:
        f.write(data)
    if ext is not None:
        cut = len(ext) if rng.random() < 0.8 else rng.randrange(len(ext))
        with open(os.path.join(folder, "data.bin"), "wb") as f:
            f.write(ext[:cut])
    if rng.random() < 0.05:  # a link out of the folder, for locations that name it
        os.symlink("/etc/hostname", os.path.join(folder, "link.data"))
    args = rng.choice(ARGS)
    if command == "analyze":
        return ["analyze", os.path.join(folder, "model.onnx"), "--json"], name
    return ["prune", os.path.join(folder, "model.onnx"), os.path.join(folder, "out.onnx")] + args, name


# -- running ------------------------------------------------------------------------
def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_subprocess(args, timeout):
    """(exit code or None on timeout, stdout+stderr) of `spa ...` in a new process."""
    cmd = [sys.executable, "-c", "from spa.cli import main; main()"] + args
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired as exc:
        return None, (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
    return p.returncode, p.stdout + p.stderr


def _worker(conn):
    _limit_memory()
    from click.testing import CliRunner

    from spa.cli import main

    while True:
        args = conn.recv()
        if args is None:
            return
        res = CliRunner().invoke(main, args)
        text = res.output
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            text += "\nTraceback (unhandled): " + repr(res.exception)
        conn.send((res.exit_code, text))


class Worker:
    """A process that runs cases in-process; killed and replaced when a case hangs."""

    def __init__(self):
        self.ctx = mp.get_context("spawn")
        self._start()

    def _start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()

    def run(self, args, timeout):
        self.conn.send(args)
        if self.conn.poll(timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        else:
            self.proc.kill()
            self.proc.join()
            self._start()
            return None, ""
        code = self.proc.exitcode
        self.proc.join()
        self._start()
        return -abs(code or 1), "worker died"

    def close(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def _digest(folder, names):
    h = {}
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isfile(p) and not os.path.islink(p):
            with open(p, "rb") as f:
                h[n] = hashlib.sha256(f.read()).hexdigest()
    return h


def check_case(folder, code, text, command="prune"):
    """The problems of one finished case: a list of (kind, detail)."""
    problems = []
    inputs = {"model.onnx", "data.bin", "link.data"}
    left = sorted(set(os.listdir(folder)) - inputs)
    if code is None:
        return [("hang", "")]
    if "Traceback" in text:
        problems.append(("traceback", text.strip().splitlines()[-1][:200]))
    if code == INTERNAL:
        problems.append(("internal", text.strip().splitlines()[-1][:200]))
    elif code not in OK_CODES:
        problems.append(("crash", f"exit {code}: {text.strip()[-200:]}"))
    if code != 0:
        if left:
            problems.append(("leftover", ", ".join(left)))
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if code in OK_CODES and len(lines) != 1:
            problems.append(("multiline", text.strip()[:200]))
        return problems
    written = {"out.onnx", "out.onnx.data"} if command == "prune" else set()
    extra = [n for n in left if n not in written]
    if extra:
        problems.append(("leftover", ", ".join(extra)))
    if command == "prune":
        try:
            onnx.checker.check_model(os.path.join(folder, "out.onnx"))
        except Exception as exc:  # the written model must be valid
            problems.append(("bad-output", str(exc).splitlines()[0][:200]))
    return problems


def one_case(i, seed, seed_models, root, run, timeout, save, retry=0.0, command="prune"):
    """Make, run and check case i; returns (outcome, problems, label, args).

    A case over `timeout` is run again (after removing what the killed run left) with
    `retry` seconds: finishing then makes it "slow" (a loaded machine), not a hang."""
    folder = os.path.join(root, f"case{i}")
    os.makedirs(folder)
    args, label = make_case(seed, i, seed_models, folder, command)
    before = _digest(folder, ["model.onnx", "data.bin"])
    code, text = run(args, timeout)
    slow = False
    if code is None and retry:
        for name in set(os.listdir(folder)) - {"model.onnx", "data.bin", "link.data"}:
            p = os.path.join(folder, name)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        code, text = run(args, retry)
        slow = code is not None
    problems = check_case(folder, code, text, command) + ([("slow", "")] if slow else [])
    if before != _digest(folder, ["model.onnx", "data.bin"]):
        problems.append(("input-modified", ""))
    if problems and save:
        shutil.copytree(folder, os.path.join(save, f"case{i}"), symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    return (f"exit {code}" if code is not None else "timeout"), problems, label, args


def fuzz(cases, seed=0, start=0, mode="subprocess", timeout=10.0, save=None, progress=True, jobs=1, retry=0.0,
         command="prune"):
    """Run `cases` cases; returns (counts by outcome, list of failures).

    jobs > 1 runs that many cases at once (subprocess mode only); retry > 0 gives a
    timed-out case a second run with that limit (see one_case)."""
    from concurrent.futures import ThreadPoolExecutor

    root = tempfile.mkdtemp(prefix="spa-fuzz-")
    counts = collections.Counter()
    failures = []
    worker = Worker() if mode == "worker" else None
    run = worker.run if worker else run_subprocess
    try:
        seed_models = seeds(tempfile.mkdtemp(dir=root))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1 if worker else jobs) as pool:
            results = pool.map(lambda i: (i, one_case(i, seed, seed_models, root, run, timeout, save, retry, command)),
                               range(start, start + cases))
            for done, (i, (outcome, problems, label, args)) in enumerate(results, 1):
                counts["cases"] += 1
                counts[outcome] += 1
                for kind, _ in problems:
                    counts[kind] += 1
                if problems:
                    failures.append((i, label, args[3:], problems))
                if progress and done % 100 == 0:
                    rate = done / (time.perf_counter() - t0)
                    print(f"{done} cases, {rate:.2f}/s, problems so far: {sum(len(f[3]) for f in failures)}",
                          file=sys.stderr, flush=True)
    finally:
        if worker:
            worker.close()
        shutil.rmtree(root, ignore_errors=True)
    return counts, failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=["subprocess", "worker"], default="subprocess")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--save", help="copy failing cases into this folder")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once (subprocess mode)")
    ap.add_argument("--command", choices=["prune", "analyze"], default="prune")
    ap.add_argument("--retry", type=float, default=0.0,
                    help="seconds for a second run of a timed-out case; finishing then counts as slow, not a hang")
    args = ap.parse_args()
    t = time.perf_counter()
    counts, failures = fuzz(args.cases, args.seed, args.start, args.mode, args.timeout, args.save,
                            jobs=args.jobs, retry=args.retry, command=args.command)
    for i, label, extra, problems in failures:
        for kind, detail in problems:
            print(f"case {i} ({label}, {' '.join(extra)}): {kind}: {detail}")
    kinds = ["traceback", "hang", "crash", "internal", "leftover", "input-modified", "multiline", "bad-output"]
    print(f"{counts['cases']} cases in {time.perf_counter() - t:.0f} s ({args.mode} mode, {args.timeout:g} s limit)")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k.startswith(("exit", "timeout"))))
    print("problems: " + ", ".join(f"{k} {counts[k]}" for k in kinds))
    print(f"slow (over {args.timeout:g} s, finished on the retry): {counts['slow']}")
    return 1 if any(counts[k] for k in kinds) else 0


if __name__ == "__main__":
    sys.exit(main())
