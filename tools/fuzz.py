"""Fuzz `spa prune` with mutated models, and report every traceback, hang, crash,
internal error, modified input and file left behind after an error.

Seeds are the test architectures of spa.testing.nets, models/mnist_cnn.onnx, and an
external-data model. Each case applies one to three mutations, at byte level (bit
flips, overwrites, truncation, insertion, deletion, splicing) or field level (op
types, attributes, inputs, initializer dims/types/data, graph inputs and outputs,
opsets, external-data locations), then runs `spa prune` on it with a time limit.
The generator is spa.testing.fuzz, the runner spa.testing.fuzz_run; this is the
command line.

    python tools/fuzz.py --cases 2000 --jobs 2             # each case a `spa prune` process
    python tools/fuzz.py --cases 200 --mode worker         # in-process, in killable workers

Case i is reproducible from (--seed, i); failing cases are kept under --save.
"""

from __future__ import annotations

import argparse
import sys
import time

from spa.testing.fuzz_run import PROBLEMS, fuzz


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
    kinds = PROBLEMS
    print(f"{counts['cases']} cases in {time.perf_counter() - t:.0f} s ({args.mode} mode, {args.timeout:g} s limit)")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k.startswith(("exit", "timeout"))))
    print("problems: " + ", ".join(f"{k} {counts[k]}" for k in kinds))
    print(f"slow (over {args.timeout:g} s, finished on the retry): {counts['slow']}")
    return 1 if any(counts[k] for k in kinds) else 0


if __name__ == "__main__":
    sys.exit(main())
