"""benchmarks/shard.py at a tiny size (so it never rots): one spawned pair of gloo ranks runs
the unsharded reference and the 1x1, 1x2 and 2x1 configs; every config ends bitwise on the
unsharded trajectory, and the communication it counts is the all-gather volume on paper."""
from __future__ import annotations

import json

import pytest

from benchmarks import shard as bsh
from meanfield.dynamics.sharded import shard_ranges


def test_shard_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "shard.json"
    N, d = 70, 3
    payload = bsh.main(["--n", str(N), "--d", str(d), "--steps", "2", "--json", str(out), "--quiet"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload, default=float))
    rows = {r["config"]: r for r in payload["results"]}
    assert list(rows) == ["unsharded", "1x1", "1x2", "2x1"]
    for r in rows.values():
        assert r["bitwise_equal"] is True, r
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["cpu_s"] > 0
        assert r["speedup_vs_1x1"] == pytest.approx(rows["1x1"]["median_s"] / r["median_s"])
        assert r["speedup_vs_unsharded"] == pytest.approx(rows["unsharded"]["median_s"] / r["median_s"])
    # per step each rank receives the other shard's rows, padded to ⌈N/P⌉ rounded up to 8
    # rows (here 40), of D = 1 + d float32 numbers, plus the 4-byte divergence flag
    (lo, hi), _ = shard_ranges(N, 2)
    assert hi - lo == 40
    assert rows["2x1"]["recv_kb_per_step"] == pytest.approx((40 * (1 + d) * 4 + 4) / 1e3)
    assert rows["2x1"]["comm_calls_per_step"] == {"all_gather": 1, "all_reduce": 1}
    assert rows["2x1"]["pairs_per_rank"] == 40 * N and rows["1x1"]["pairs_per_rank"] == N * N
    assert rows["1x1"]["recv_kb_per_step"] == pytest.approx(4 / 1e3)     # one rank: the flag only
    assert (rows["1x2"]["threads_per_rank"], rows["2x1"]["threads_per_rank"]) == (2, 1)
    assert "recv KB/step/rank" in capsys.readouterr().out


def test_shard_benchmark_rejects_bad_configs():
    with pytest.raises(SystemExit, match="PxT"):
        bsh.parse_config("2by1")
    with pytest.raises(SystemExit, match=">= 1"):
        bsh.parse_config("0x2")
