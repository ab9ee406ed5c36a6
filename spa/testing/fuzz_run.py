"""Running fuzz cases: in a `spa prune` process each or in killable in-process workers,
and the checks that make a finished case a problem (traceback, hang, crash, internal
error, leftover file, modified input, multi-line error, invalid output).
"""

from __future__ import annotations

import collections
import hashlib
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import onnx
from click.testing import CliRunner

from spa.cli import main

from . import message_lines
from .fuzz import make_case, seeds

OK_CODES = {0, 2, 3, 4, 5}
INTERNAL = 10
MEMORY_LIMIT = 8 * 1024 ** 3
PROBLEMS = ["traceback", "hang", "crash", "internal", "leftover", "input-modified", "multiline", "bad-output"]


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
        """(exit code, output) of one case; (None, "") when it took over `timeout` s."""
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
        """Stop the worker process."""
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
        lines = message_lines(text)
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
