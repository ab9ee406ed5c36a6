"""A two-node Ray cluster on this machine for tests and tools: `ray start --head` and a
second `ray start --address` node with its own resource label, each with `cpus` CPUs.
Both run with --block in their own process group, so stopping them ends exactly the
processes they started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodes:
    """Use as a context manager; `address` is the head's GCS address."""

    def __init__(self, cpus: int = 1, timeout: float = 90.0):
        self.cpus, self.timeout, self.procs = cpus, timeout, []
        self.ray = os.path.join(os.path.dirname(sys.executable), "ray")
        self.tmp = tempfile.mkdtemp(prefix="spa-ray-", dir="/tmp")  # short: Ray's socket paths have a limit
        self.address = f"127.0.0.1:{_free_port()}"

    def _start(self, *args):
        log = open(os.path.join(self.tmp, f"node{len(self.procs)}.log"), "w")
        self.procs.append(subprocess.Popen([self.ray, "start", "--block", "--disable-usage-stats",
                                            f"--num-cpus={self.cpus}", *args], stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        log.close()

    def __enter__(self):
        import ray
        self._start("--head", f"--port={self.address.rsplit(':', 1)[1]}", "--include-dashboard=false",
                    f"--temp-dir={self.tmp}", '--resources={"head_node": 1}')
        self._wait(ray, 1)
        self._start(f"--address={self.address}", '--resources={"second_node": 1}')
        self._wait(ray, 2)
        return self

    def _wait(self, ray, nodes):
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            if any(p.poll() is not None for p in self.procs):
                break
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level="error")
                alive = [n for n in ray.nodes() if n["Alive"]]
                ray.shutdown()
                if len(alive) >= nodes:
                    return
            except (ConnectionError, RuntimeError):
                pass
            time.sleep(1)
        self.__exit__()
        raise RuntimeError(f"the Ray test cluster did not start {nodes} node(s); logs in {self.tmp}")

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            _stop(p)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def _stop(p):
    """SIGTERM the node's process group, then SIGKILL what is left of it after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(timeout=wait)
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                break
        except subprocess.TimeoutExpired:
            continue
