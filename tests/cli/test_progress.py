"""`spa prune` as a person runs it: stage lines and a progress bar on a terminal (a
pseudo-terminal here), nothing but the result with -q, and Ctrl-C that exits 130 and
leaves nothing behind. These run the real command in a child process, on a ResNet-50
(the zoo's TorchScript export with seeded weights: 25.6M parameters, 4.1G MACs)."""

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import onnx
import pytest

from spa.testing import REPO
from spa.testing.zoo import fill

RESNET50 = os.path.join(REPO, "models", "zoo", "torchvision", "resnet50_ts.onnx")
COMMAND = [sys.executable, "-m", "spa.cli", "prune"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    path = tmp_path_factory.mktemp("r50") / "resnet50.onnx"
    onnx.save(fill(onnx.load(RESNET50), seed=0), path)
    return path


def in_pty(args, timeout=600) -> tuple:
    """(exit code, everything the terminal showed) of a command whose stdout and stderr are
    a pseudo-terminal 120 columns wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=ENV, close_fds=True)
    os.close(slave)
    out, end = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


def test_stage_lines_and_a_bar_on_a_terminal_nothing_but_the_result_with_q(resnet50, tmp_path):
    out = tmp_path / "o.onnx"
    rc, shown = in_pty(COMMAND + [str(resnet50), str(out), "--ratio", "0.3", "--criterion", "l2"])
    assert rc == 0, shown
    result = shown.index("criterion: l2")  # the summary, printed at the end
    before = shown[:result]
    for stage in ("load", "graph", "score", "plan", "rewrite", "verify"):
        assert re.search(rf"spa: {stage} \d+\.\d s\r?\n", before), (stage, before)
    bars = re.findall(r"spa: verify \[[#.]{30}\] (\d+)/(\d+) ETA", before)
    assert bars and len({i for i, _ in bars}) > 1, before  # a bar that advanced, with an ETA
    assert "\r" in before  # redrawn in place
    rc, quiet = in_pty(COMMAND + [str(resnet50), str(out), "--ratio", "0.3", "--criterion", "l2", "--force", "-q"])
    assert rc == 0, quiet
    assert quiet.strip().splitlines()[0].split() == ["before", "after", "change"], quiet  # the table comes first
    assert "spa:" not in quiet and "ETA" not in quiet and "wrote" in quiet.strip().splitlines()[-1]


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(args, marker, folder) -> tuple:
    """Run `args`, send SIGINT once stderr shows `marker`; (exit code, stderr)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True,
                            preexec_fn=_default_sigint)  # a shell's background job starts with SIGINT ignored
    err = ""
    for line in proc.stderr:
        err += line
        if marker in line:
            proc.send_signal(signal.SIGINT)
            break
    rest_out, rest_err = proc.communicate(timeout=300)
    return proc.returncode, err + rest_err


@pytest.mark.parametrize("marker, extra", [("spa: graph", []),  # interrupted while scoring
                                           ("spa: write", ["--external-data"])])  # while verifying staged files
def test_ctrl_c_exits_130_and_leaves_nothing(resnet50, tmp_path, marker, extra):
    folder = tmp_path / "out"
    folder.mkdir()
    rc, err = _interrupt_when(COMMAND + [str(resnet50), str(folder / "o.onnx"), "--ratio", "0.3", "--criterion",
                                         "l2"] + extra, marker, folder)
    assert rc == 130, err
    assert err.rstrip().endswith("spa: interrupted") and "Traceback" not in err
    assert os.listdir(folder) == []
