"""Conformance: `spa analyze` and `spa prune --ratio 0.3` on every model of a corpus.

    python tools/conformance.py --wheel                      # the onnx wheel's backend test data
    python tools/conformance.py /tmp/onnx-node --jobs 2      # a folder of onnx's node tests
    python tools/conformance.py --wheel --only 'test_sequence*' --spawn --json /tmp/c.json

A corpus is a folder of onnx backend tests: `<test>/model.onnx` with optional
`<test>/test_data_set_0/input_*.pb`, flat `*.onnx` files (the wheel's `light`), or
`<test>/data.json` naming a model elsewhere in the wheel (the wheel's `real`).
`--wheel` takes the five folders the installed onnx wheel ships
(`light`, `real`, `simple`, `pytorch-converted`, `pytorch-operator`); the `node` tests are
no longer in the wheel nor at onnx's HEAD: extract them from a checkout, e.g.
`git --git-dir=onnx/.git archive <commit> onnx/backend/test/data/node | tar -x`.

Each model runs through the CLI: `spa analyze MODEL --json`, then
`spa prune MODEL OUT --ratio 0.3 --json` into a fresh folder, each with a time limit
(--timeout, 60 s). By default a command runs in a process forked from this one after it
has imported `spa.cli` (the same `main` the `spa` entry point calls, with the same
arguments, minus 1.2 s of imports per command); `--spawn` starts `python -m spa.cli`
instead.

The corpus walk and the checks live in spa.testing.conformance (tests/test_conformance.py
runs the wheel's small models through them in CI). A model is flagged when:
- a command exits 10 (internal error), dies, or exits with a code the README does not list;
- a command prints a traceback, or refuses in more than one line of stderr (`spa: warning`
  lines aside);
- a command runs past the time limit (hang);
- prune fails and leaves anything in its output folder, or changes the model's folder;
- prune exits 0 and its output fails `onnx.checker` (full check) or onnxruntime, has other
  output shapes than the original on the same inputs, or, where nothing was pruned,
  other output values.

The summary gives counts per corpus and exit code, and per operator family: the rule
module of spa.rules that handles the model's ops (`none` when one has no rule, `mixed`
when they span several families). Exit status: 1 when any model is flagged.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

import spa.cli
from spa.testing.conformance import WHEEL_CORPORA, check_output, family, find_models, flags, listing, wheel_data

RATIO = "0.3"


# ---------------------------------------------------------------- running the CLI


def run_cli(args: list, timeout: float, spawn: bool) -> dict:
    """Run `spa ARGS`; returns rc (None on timeout), stdout, stderr and seconds."""
    t0 = time.perf_counter()
    if spawn:
        try:
            p = subprocess.run([sys.executable, "-m", "spa.cli", *args], capture_output=True, text=True,
                               timeout=timeout)
            return {"rc": p.returncode, "out": p.stdout, "err": p.stderr, "s": time.perf_counter() - t0}
        except subprocess.TimeoutExpired as exc:
            return {"rc": None, "out": _text(exc.stdout), "err": _text(exc.stderr), "s": timeout}
    return _forked(args, timeout, t0)


def _text(b):
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _forked(args, timeout, t0):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: `spa ARGS` with stdout and stderr on the files
            code = 1
            try:
                os.setsid()
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                spa.cli.main(args, prog_name="spa", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what the interpreter would print for an uncaught exception
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        rc = None
        while time.perf_counter() - t0 < timeout:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.02)
        if rc is None:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return {"rc": rc, "out": _text(out.read()), "err": _text(err.read()),
                "s": min(time.perf_counter() - t0, timeout)}


# ---------------------------------------------------------------- one model


def check_model(job) -> dict:
    """Analyze and prune one model through the CLI; its row for the report."""
    corpus, name, path, data, timeout, spawn = job
    row = {"corpus": corpus, "model": name, "path": path, "flags": []}
    try:
        row["family"] = family(path)
    except Exception:  # an unreadable model: spa must say so in one line
        row["family"] = "unreadable"
    before = listing(os.path.dirname(path))
    a = run_cli(["analyze", path, "--json"], timeout, spawn)
    row["analyze"], row["analyze_s"] = a["rc"], round(a["s"], 2)
    row["flags"] += flags("analyze", a["rc"], a["out"], a["err"], timeout)
    tmp = tempfile.mkdtemp(prefix="spa-conf-")
    try:
        out = os.path.join(tmp, "out.onnx")
        p = run_cli(["prune", path, out, "--ratio", RATIO, "--json"], timeout, spawn)
        row["prune"], row["prune_s"] = p["rc"], round(p["s"], 2)
        row["why"] = (p["err"].strip().splitlines() or [""])[-1][:240] if p["rc"] else ""
        row["flags"] += flags("prune", p["rc"], p["out"], p["err"], timeout)
        if p["rc"] == 0:
            try:
                res = json.loads(p["out"])
                nothing = not res.get("changes")
            except ValueError:
                row["flags"].append("prune: --json output is not JSON")
                nothing = False
            if not os.path.isfile(out):
                row["flags"].append("prune: exit 0 but no output file")
            else:
                row["flags"] += [f"output: {m}" for m in check_output(path, out, data, nothing)]
        elif p["rc"] is not None and os.listdir(tmp):
            row["flags"].append(f"prune: left {sorted(os.listdir(tmp))} after exit {p['rc']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if listing(os.path.dirname(path)) != before:
        row["flags"].append("the model's folder changed")
    return row


# ---------------------------------------------------------------- summary


def _table(header, rows) -> list:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def summary(rows) -> str:
    codes = sorted({r[s] for r in rows for s in ("analyze", "prune")}, key=lambda c: (c is None, c if c is not None else 0))
    label = {None: "hang"}
    lines = ["Exit codes per corpus (analyze / prune):", ""]
    by_corpus = defaultdict(list)
    for r in rows:
        by_corpus[r["corpus"]].append(r)
    body = []
    for corpus, rs in list(by_corpus.items()) + [("all", rows)]:
        ca, cp = Counter(r["analyze"] for r in rs), Counter(r["prune"] for r in rs)
        body.append([corpus, len(rs)] + [f"{ca[c]} / {cp[c]}" for c in codes]
                    + [sum(bool(r["flags"]) for r in rs)])
    lines += _table(["corpus", "models"] + [f"exit {label.get(c, c)}" for c in codes] + ["flagged"], body)
    lines += ["", "Prune exit codes per operator family:", ""]
    fams = defaultdict(list)
    for r in rows:
        fams[r["family"].split(":")[0]].append(r)
    pcodes = sorted({r["prune"] for r in rows}, key=lambda c: (c is None, c if c is not None else 0))
    body = [[f, len(rs)] + [Counter(r["prune"] for r in rs)[c] for c in pcodes] + [sum(bool(r["flags"]) for r in rs)]
            for f, rs in sorted(fams.items())]
    lines += _table(["family", "models"] + [f"exit {label.get(c, c)}" for c in pcodes] + ["flagged"], body)
    flagged = [r for r in rows if r["flags"]]
    lines += ["", f"Flagged: {len(flagged)}"]
    lines += [f"- {r['corpus']}/{r['model']}: {'; '.join(r['flags'])}" for r in flagged]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", help="corpus folders (each one corpus, named by its folder)")
    ap.add_argument("--wheel", action="store_true", help="the installed onnx wheel's backend test data")
    ap.add_argument("--only", nargs="*", default=(), help="globs on test names")
    ap.add_argument("--jobs", type=int, default=2, help="models at a time (default 2)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per command (default 60)")
    ap.add_argument("--spawn", action="store_true", help="a fresh `python -m spa.cli` per command")
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = ap.parse_args(argv)
    corpora = [(os.path.basename(os.path.normpath(f)), f) for f in args.folders]
    if args.wheel:
        corpora = [(c, os.path.join(wheel_data(), c)) for c in WHEEL_CORPORA] + corpora
    if not corpora:
        ap.error("give corpus folders or --wheel")
    jobs = [(c, name, path, data, args.timeout, args.spawn) for c, folder in corpora
            for name, path, data in find_models(folder)
            if not args.only or any(fnmatch.fnmatch(name, g) for g in args.only)]
    t0 = time.perf_counter()
    rows = []
    with cf.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for i, row in enumerate(pool.map(check_model, jobs), 1):
            rows.append(row)
            mark = " FLAGGED: " + "; ".join(row["flags"]) if row["flags"] else ""
            print(f"[{i}/{len(jobs)}] {row['corpus']}/{row['model']}: analyze {row['analyze']}, "
                  f"prune {row['prune']}{mark}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    print(summary(rows))
    print(f"\n{len(rows)} models, {wall:.0f} s wall, jobs {args.jobs}, "
          f"{'spawned' if args.spawn else 'forked'} commands, timeout {args.timeout:g} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"wall_s": round(wall, 1), "rows": rows}, f, indent=1)
    return 1 if any(r["flags"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
