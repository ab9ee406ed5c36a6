"""--threads: prune and compare take a thread count for onnxruntime and numpy's BLAS, and give the
previous setting back."""

import ctypes

import onnx
import pytest
from click.testing import CliRunner

import spa
from spa import runtime
from spa.cli import main
from spa.errors import UsageError
from spa.testing.nets import ALL


def _blas_threads():
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    for path in paths:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, name):
                return getattr(lib, name)()
    return None


def test_set_threads_reaches_sessions_and_blas():
    before = _blas_threads()
    old = runtime.set_threads(1)
    try:
        assert runtime.options().intra_op_num_threads == 1
        assert runtime.options(3).intra_op_num_threads == 3  # an explicit count wins
        if before is not None:
            assert _blas_threads() == 1
    finally:
        runtime.set_threads(old)
    assert runtime.threads() == old
    assert _blas_threads() == before  # 0 gives OpenBLAS back its own count, not the CPU count


def test_prune_with_threads_restores_the_setting(tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(ALL["resnet"](), path)
    r = spa.prune(path, ratio=0.3, threads=1)
    assert r.verdict.runs and runtime.threads() == 0
    with pytest.raises(UsageError, match="--threads"):
        spa.prune(path, ratio=0.3, threads=-1)


def test_cli_threads(tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(ALL["resnet"](), path)
    out = str(tmp_path / "p.onnx")
    r = CliRunner().invoke(main, ["prune", path, out, "--ratio", "0.3", "--threads", "1", "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["compare", path, out, "--threads", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["prune", path, out, "--ratio", "0.3", "--threads", "-2", "--force"])
    assert r.exit_code == 2 and "Traceback" not in r.output
