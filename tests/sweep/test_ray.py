"""spa sweep on a two-node Ray cluster started on this machine (`ray start --head` plus a
second node with its own resource label, one CPU each): tasks run on both nodes and the
records equal the local sweep's, timings aside. Skipped where Ray is not installed."""

import json

import pytest

from spa.sweep import comparable

from .conftest import FAST, GRID, invoke, records

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install \"spa-prune[ray]\")")
from spa.testing.raycluster import TwoNodes  # noqa: E402


def test_ray_two_nodes_match_local(local_sweep, nets, tmp_path):
    out, _ = local_sweep
    with TwoNodes(cpus=1) as cluster:
        res = json.loads(invoke("sweep", nets, *GRID, *FAST, "--out", tmp_path / "ray", "--ray-address",
                                cluster.address, "--json", "-q").stdout)
    recs = records(tmp_path / "ray")
    assert res["missing"] == [] and len(recs) == 8
    assert len({r["node"]["ray_node"] for r in recs}) == 2  # spread over both nodes, each marked
    assert [comparable(r) for r in recs] == [comparable(r) for r in records(out)]
    for r in recs:  # the pruned files came back through the object store
        assert (tmp_path / "ray" / r["file"]).read_bytes() == (out / r["file"]).read_bytes()
