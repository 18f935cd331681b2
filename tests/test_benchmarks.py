"""benchmarks/: each benchmark runs at a tiny size (so it never rots), writes the documented
table/JSON, and its numbers agree with the library and the numpy reference.

The pair-sum benchmark doubles as a check of the fused native pair sum on shapes the
library tests do not pin down: M a multiple of the 16-column strip and not, d ≤ 16 (one
SIMD loop) and d > 16 (register-blocked strips).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import interact as bi
from benchmarks import sgd as bs
from benchmarks.common import fit_exponents
from meanfield.interact import NumpyBackend, TiledTorchBackend, native
from meanfield.models import Unit, gaussian_kernel

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {"N", "d", "backend", "baseline", "median_s", "min_s", "max_s", "pairs_per_s",
            "peak_rss_mb", "torch_speedup", "grad_rel_err", "check_against"}


def test_interact_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "interact.json"
    payload = bi.main(["--n", "37", "48", "--d", "3", "20", "--fit-min-n", "1",
                       "--backend", "torch", "torch-eager", "dense-autograd", "--repeat", "2",
                       "--json", str(out), "--quiet"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload, default=float))
    rows = payload["results"]
    assert len(rows) == 2 * 2 * 3 and not any(r.get("skipped") for r in rows)
    for r in rows:
        assert ROW_KEYS <= set(r), set(ROW_KEYS) - set(r)
        assert r["baseline"] == (r["backend"] == "dense-autograd")
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["pairs_per_s"] == pytest.approx(r["N"] ** 2 / r["median_s"])
        assert r["check_against"] == "numpy"
        assert r["grad_rel_err"] < 1e-4 and r["risk_rel_err"] < 1e-4, r
    assert {f["backend"] for f in payload["fits"]} == {"torch", "torch-eager", "dense-autograd"}
    table = capsys.readouterr().out
    assert "pairs/s" in table and "dense-autograd" in table and "time ∝ N^" in table


def test_interact_benchmark_tiny_float64(tmp_path):
    """``--dtype float64`` rows: the fused float64 loop and the eager tiles agree with the
    numpy reference to 1e-12, and every row says its dtype."""
    out = tmp_path / "interact64.json"
    payload = bi.main(["--n", "37", "--d", "3", "20", "--dtype", "float64", "--backend", "torch",
                       "torch-eager", "--repeat", "1", "--json", str(out), "--quiet"])
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 * 2 and rows == json.loads(json.dumps(payload["results"], default=float))
    for r in rows:
        assert r["dtype"] == "float64" and not r.get("skipped") and r["check_against"] == "numpy"
        assert r["grad_rel_err"] < 1e-12 and r["risk_rel_err"] < 1e-12, r
    assert {a["dtype"] for a in payload["auto"]} == {"float64"}
    assert payload["goals"] == []                         # measured at N = 30 000 only
    row = {"backend": "torch", "dtype": "float64", "N": 30000, "d": 10}
    (g,) = bi.goal_report([dict(row, pairs_per_s=4e8)])
    assert not g["reached"] and g["pairs_per_s"] == 4e8
    assert bi.goal_report([dict(row, pairs_per_s=6e8)])[0]["reached"]
    assert not bi.goal_report([dict(row, skipped="time budget")])[0]["reached"]


@pytest.mark.keops
def test_interact_benchmark_keops_backend(tmp_path):
    """The keops row (d = 5, float32: the formula tests/test_interact.py already compiled).
    The keops-autograd baseline is left to the benchmark runs themselves, which check its
    gradient against the numpy reference (grad_rel_err column): its two formulas cost about
    a minute of cold compilation, a tenth of the suite's budget."""
    payload = bi.main(["--n", "40", "--d", "5", "--backend", "torch", "keops",
                       "--repeat", "1", "--quiet"])
    rows = {r["backend"]: r for r in payload["results"]}
    assert set(rows) == {"torch", "keops"} and not any(r.get("skipped") for r in rows.values()), rows
    assert not rows["keops"]["baseline"]
    for r in rows.values():
        assert r["grad_rel_err"] < 1e-4, r


def test_interact_benchmark_skips_instead_of_crashing(capsys):
    rows = bi.run([30, 60], [3], ["torch", "dense-autograd"], repeat=1, max_seconds=1e-12,
                  log=lambda *_: None)
    by = {(r["N"], r["backend"]): r for r in rows}
    assert not by[(30, "torch")].get("skipped")
    assert "predicted" in by[(60, "torch")]["skipped"] and by[(60, "dense-autograd")]["skipped"]
    bi.print_table(rows, bi.COLUMNS)
    assert "skipped" in capsys.readouterr().out
    # the dense baseline would need N×N temporaries beyond the machine's memory
    assert "GiB" in bi.skip_reason("dense-autograd", 10 ** 6, 10, torch.device("cpu"), {}, 1e9)


def test_fitted_exponent():
    rows = [{"backend": "x", "d": 1, "N": n, "median_s": 3e-9 * n ** 2} for n in (100, 1000, 10000)]
    (fit,) = fit_exponents(rows, ["backend", "d"])
    assert fit["exponent"] == pytest.approx(2.0) and fit["N_range"] == [100, 10000]


@pytest.mark.skipif(not native.enabled(), reason="no C++ compiler")
@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("d,N,M", [(3, 37, 48), (20, 9, 33), (20, 50, 64), (1, 5, 1),
                                   (100, 9, 4100), (3, 5, 90000)])   # several column super-blocks
def test_native_pair_sum_matches_reference(act, d, N, M, gen, rel_err):
    unit = Unit(d, act, output_weight=True)
    kern = gaussian_kernel(unit)
    x = torch.randn(2, N, unit.D, generator=gen(d), dtype=torch.float64)
    be = TiledTorchBackend()
    for yb, cb in ((1, 1), (2, 1), (2, 2)):                   # sources and weights broadcast or not
        y = torch.randn(yb, M, unit.D, generator=gen(d + 1), dtype=torch.float64)
        y[0, :min(N, M)] = x[0, :min(N, M)]                  # include (near-)coincident pairs
        c = torch.randn(cb, M, generator=gen(d + 2), dtype=torch.float64)
        assert be.uses_native(kern, x.float(), y.float(), c.float())
        for grad in (True, False):
            S0, G0 = NumpyBackend().kernel_sum(kern, unit, x, y, c, grad=grad)
            S1, G1 = be.kernel_sum(kern, unit, x.float(), y.float(), c.float(), grad=grad)
            assert S1.dtype == torch.float32 and S1.shape == S0.shape
            assert rel_err(S1, S0) < 1e-5
            if grad:
                assert rel_err(G1, G0) < 1e-5
    # autograd, mixed dtypes and native=False take the eager tiles (float64 is fused too:
    # tests/test_interact.py::test_float64_fused_loop_matches_reference)
    assert be.uses_native(kern, x, y, c)
    assert not be.uses_native(kern, x, y.float(), c)
    assert not TiledTorchBackend(native=False).uses_native(kern, x.float(), y.float(), c.float())
    assert not be.uses_native(kern, x.float().requires_grad_(), y.float(), c.float())


def test_generated_cpp_comes_from_the_kernel_formulas():
    from meanfield.interact.tiled import kernel_cpp

    src = kernel_cpp(gaussian_kernel(Unit(2, "relu")), "f", "coeffs")
    assert "mf_acos(" in src and "std::sqrt(" in src and "o_b" in src
    src = kernel_cpp(gaussian_kernel(Unit(2, "erf")), "f", "value")
    assert "mf_asin(" in src and "o_a" not in src


def test_sgd_benchmark_tiny(tmp_path):
    out = tmp_path / "sgd.json"
    bs.main(["--n", "30", "--d", "5", "--replicas", "1", "3", "--steps", "20", "10", "40",
             "--check-steps", "25", "--repeat", "2", "--json", str(out), "--quiet"])
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 * len(bs.IMPLS)                   # naive step fast api api-step
    for r in rows:
        assert {"us_per_step", "updates_per_s", "fast_speedup", "max_rel_diff", "peak_rss_mb",
                "baseline"} <= set(r)
        assert r["updates_per_s"] == pytest.approx(r["replicas"] * 30 * 1e6 / r["us_per_step"])
        # all three implementations follow the same trajectory (same samples, same order)
        assert r["max_rel_diff"] < 1e-4, r
        assert r["baseline"] == (r["impl"] == "naive")
    assert all(r["fast_speedup"] == 1.0 for r in rows if r["impl"] == "fast")
    assert {r["impl"] for r in rows} == {"naive", "step", "fast", "api", "api-step"}
    for r in rows:                            # api and api-step: step counts default to fast's, step's
        assert r["steps"] == {"naive": 20, "step": 10, "fast": 40, "api": 40, "api-step": 10}[r["impl"]]
        assert ("api_goal" in r) == (r["impl"] == "api" and r["steps"] >= 100)


def test_sgd_benchmark_api_rows(tmp_path, capsys):
    # --impl api times what the README teaches (flow.run), api-step the step loop
    out = tmp_path / "api.json"
    bs.main(["--n", "20", "--d", "4", "--replicas", "1", "--impl", "api", "api-step", "fast",
             "--steps", "5", "6", "120", "120", "7", "--record-every", "50", "--check-steps", "9",
             "--repeat", "1", "--json", str(out), "--quiet"])
    rows = {r["impl"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"api", "api-step", "fast"}
    assert rows["api"]["record_every"] == 50 and rows["api"]["steps"] == 120
    assert rows["api-step"]["max_rel_diff"] == 0.0         # the step loop is the reference path
    assert rows["api"]["max_rel_diff"] < 1e-5 and rows["fast"]["max_rel_diff"] < 1e-5
    assert rows["api"]["fast_speedup"] == pytest.approx(rows["api"]["us_per_step"] / rows["fast"]["us_per_step"])
    assert rows["api"]["api_goal"].endswith(("met", "NOT met"))
    assert "api/fast ≤ 1.5" in capsys.readouterr().out
    # minibatch SGD (--batch-size): every implementation follows the step loop's trajectory
    bs.main(["--n", "20", "--d", "4", "--replicas", "2", "--batch-size", "3", "--steps", "6", "6", "30",
             "--check-steps", "9", "--repeat", "1", "--json", str(out), "--quiet"])
    rows = json.loads(out.read_text())["results"]
    assert {r["impl"] for r in rows} == set(bs.IMPLS) and all(r["batch_size"] == 3 for r in rows)
    assert all(r["max_rel_diff"] < 1e-5 for r in rows), rows


def test_resnet_benchmark_tiny(tmp_path, capsys):
    from benchmarks import resnet as br

    out = tmp_path / "resnet.json"
    payload = br.main(["--L", "2", "3", "--M", "4", "--n", "30", "--d", "3", "--repeat", "2",
                       "--json", str(out), "--quiet"])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "resnet" and data["results"] == json.loads(json.dumps(payload["results"]))
    rows = data["results"]
    assert [(r["L"], r["M"], r["impl"]) for r in rows] == [
        (2, 4, "flow"), (2, 4, "autograd"), (3, 4, "flow"), (3, 4, "autograd")]
    for r in rows:
        # one flow step is one SGD step of the plain module (lr = L·M·dt): parameters agree
        assert r["agree"] and r["max_rel_diff"] <= 1e-6 and r["moved"] > 1e-4, r
        assert r["ms_per_step"] > 0 and r["gflops"] > 0
    flow, ag = rows[0], rows[1]
    assert flow["speedup"] == ag["speedup"] == pytest.approx(ag["median_s"] / flow["median_s"])
    assert {(f["impl"], f["in"]) for f in data["fits"]} == {("flow", "L"), ("autograd", "L")}
    assert "autograd/flow" in capsys.readouterr().out
    # the goal is reported at L = 16, M = 128 only
    assert not any("goal" in r for r in rows)


def test_benchmarks_run_as_modules(tmp_path):
    out = tmp_path / "s.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.sgd", "--n", "20", "--d", "3",
                          "--replicas", "2", "--impl", "step", "fast", "--steps", "5", "5", "20",
                          "--check-steps", "5", "--repeat", "1", "--json", str(out), "--quiet"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "µs/step" in res.stdout and json.loads(out.read_text())["benchmark"] == "sgd"
    res = subprocess.run([sys.executable, "-m", "benchmarks.interact", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "--backend" in res.stdout


def test_no_compiler_falls_back_with_one_warning(monkeypatch, gen, rel_err):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    monkeypatch.setattr(native, "_WARNED", set())
    unit = Unit(3, "relu")
    kern = gaussian_kernel(unit)
    x = torch.randn(1, 9, unit.D, generator=gen(0))
    c = torch.full((1, 9), 1 / 9)
    be = TiledTorchBackend()
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as rec:
        S, G = be.kernel_sum(kern, unit, x, x, c)
        be.kernel_sum(kern, unit, x, x, c)
    assert len(rec) == 1
    S0, G0 = NumpyBackend().kernel_sum(kern, unit, x.double(), x.double(), c.double())
    assert rel_err(G, G0) < 1e-5


def test_movies_benchmark_tiny(tmp_path):
    from benchmarks import movies as bm

    out = tmp_path / "m.json"
    payload = bm.main(["--n", "50", "--frames", "6", "--repeat", "1", "--dpi", "30", "--views", "cloud",
                       "--json", str(out), "--quiet"])
    [row] = json.loads(out.read_text())["results"]
    assert row["view"] == "cloud" and row["frames"] == 6 and row["N"] == 50
    assert row["median_s"] > 0 and row["s_per_frame"] == pytest.approx(row["median_s"] / 6)
    assert payload["results"][0]["meets_goal"] == (row["median_s"] < 30)


# ---- threads: the API chooses as the command line does (meanfield.threads) ----------------
def test_api_threads_benchmark_tiny(tmp_path, capsys):
    """The API and the command line run the same flow (the same final risk, to float
    rounding), each row in a fresh process: the API on meanfield's one thread, the
    torch-default row on torch's own count."""
    from benchmarks import api_threads as bt

    out = tmp_path / "t.json"
    payload = bt.main(["--steps", "20", "--default-steps", "5", "--load", "0", "--json", str(out),
                       "--quiet"])
    rows = {r["row"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"cli", "api", "api-torch-default"} and payload["benchmark"] == "api_threads"
    cli, api, dflt = rows["cli"], rows["api"], rows["api-torch-default"]
    assert api["final_risk"] == pytest.approx(cli["final_risk"], rel=1e-5)
    assert api["threads"] == 1 and dflt["threads"] >= 1 and dflt["steps"] == 5
    assert api["ms_per_step"] == pytest.approx(1e3 * api["seconds"] / 20)
    assert api["vs_cli"] == pytest.approx(api["ms_per_step"] / cli["ms_per_step"])
    assert "api / cli =" in capsys.readouterr().out


def test_importing_meanfield_chooses_one_thread_unless_told(monkeypatch):
    """A fresh process gets one thread on import; the rule (``threads.api_default``) gives
    MEANFIELD_THREADS when set (0: torch's own count) and leaves a set OMP_NUM_THREADS to
    torch."""
    from meanfield import threads

    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MEANFIELD_THREADS")}
    res = subprocess.run([sys.executable, "-c", "import torch, meanfield; print(torch.get_num_threads())"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.split() == ["1"], res.stderr
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MEANFIELD_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert threads.api_default() == 1
    monkeypatch.setenv("MEANFIELD_THREADS", "3")
    assert threads.api_default() == 3
    monkeypatch.setenv("MEANFIELD_THREADS", "0")
    assert threads.api_default() == threads.TORCH_DEFAULT
    monkeypatch.delenv("MEANFIELD_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.api_default() == torch.get_num_threads()


def test_set_threads_and_using_threads_change_and_restore_the_count(monkeypatch, capsys):
    import meanfield as mf
    from meanfield import cli, threads
    from meanfield.errors import ConfigError

    start = torch.get_num_threads()
    try:
        assert mf.set_threads(2) == start and torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):
            with mf.using_threads(1) as n:
                assert n == 1 == torch.get_num_threads()
                raise RuntimeError
        assert torch.get_num_threads() == 2
        assert mf.set_threads(0) == 2 and torch.get_num_threads() == threads.TORCH_DEFAULT
        for bad in (-1, 1.5, True):
            with pytest.raises(ConfigError, match="threads must be an integer >= 0"):
                mf.set_threads(bad)
        # a command runs on torch's default (each experiment's Plan.threads chooses inside)
        # and gives the API's count back afterwards
        mf.set_threads(1)
        seen = []
        monkeypatch.setattr(cli, "_cmd_list", lambda args: seen.append(torch.get_num_threads()))
        assert cli.main(["list"]) == 0
        assert seen == [threads.TORCH_DEFAULT] and torch.get_num_threads() == 1
        monkeypatch.setenv("MEANFIELD_THREADS", "2")
        assert cli.main(["list"]) == 0 and seen[-1] == 2 and threads.api_default() == 2
        monkeypatch.setenv("MEANFIELD_THREADS", "many")
        assert cli.main(["list"]) == 2                # one line naming the variable, status 2
        assert "MEANFIELD_THREADS must be an integer >= 0" in capsys.readouterr().err
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            monkeypatch.delenv(var, raising=False)
        assert threads.api_default() == 1             # …and ignored by the import-time rule
    finally:
        torch.set_num_threads(start)
