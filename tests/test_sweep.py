"""Sweeps: grid expansion, summary.csv, restarts, failures, replicas, and Dask with a killed worker."""
import functools
import json
import sys

import numpy as np
import pytest

from meanfield import io, runner, sweep
from meanfield.cli import main
from meanfield.errors import ConfigError

# a teacher-student run of ~40 steps: well under a second of simulation per point
TINY = ["d=3", "steps=40", "backend=torch", "log_every=5", "save_every=10", "checkpoint_every=10"]


def _metrics(run_dir):
    return io.read_metrics(run_dir / io.METRICS)


@pytest.mark.parametrize("specs, expected", [
    (["N=100,200,400"], {"N": ["100", "200", "400"]}),
    (["seed=0:3"], {"seed": ["0", "1", "2"]}),
    (["seed=2:9:3"], {"seed": ["2", "5", "8"]}),
    (["xi=power:1,0.25,1;1.0"], {"xi": ["power:1,0.25,1", "1.0"]}),
])
def test_grid_specs_parse(specs, expected):
    assert sweep.parse_grid(specs) == expected


def test_grid_expands_to_the_cartesian_product_first_key_slowest():
    pts = sweep.expand({"N": ["10", "20"], "seed": ["0", "1", "2"]})
    assert pts == [{"N": n, "seed": s} for n in ("10", "20") for s in ("0", "1", "2")]
    assert sweep.point_name({"N": "10", "xi": "power:1,0.5,1"}) == "N=10_xi=power-1-0.5-1"


@pytest.mark.parametrize("grid, needle", [
    (["N"], "expects KEY=v1,v2"),
    (["N="], "empty value"),
    (["N=1,,2"], "empty value"),
    (["N=1,1"], "repeated value"),
    (["seed=3:3"], "is empty"),
    (["seed=0:4:0"], "step must not be 0"),
    (["N=1", "N=2"], "given twice"),
    (["2N=1"], "not a config key name"),
    (["Nn=10,20"], "did you mean 'N'"),
    (["N=10,abc"], "N must be an integer"),
    (["N=10,-1"], "N must be >= 1"),
])
def test_bad_grid_is_one_line_and_status_2(tmp_path, capsys, grid, needle):
    argv = ["sweep", "teacher-student", "--out", str(tmp_path / "sw"), "--workers", "0"]
    for g in grid:
        argv += ["--grid", g]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "sw").exists()         # nothing written


def test_bad_sweep_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="both --grid and --set"):
        sweep.run_sweep("teacher-student", ["N=10,20"], tmp_path / "a", sets=["N=30"])
    with pytest.raises(ConfigError, match="supports only 'seed'"):
        sweep.run_sweep("teacher-student", ["N=10,20"], tmp_path / "b", replicas_for="N")
    with pytest.raises(ConfigError, match="needs a --grid seed"):
        sweep.run_sweep("teacher-student", ["N=10,20"], tmp_path / "c", replicas_for="seed")
    assert not any(tmp_path.iterdir())


def test_serial_sweep_summary_failure_and_restart(tmp_path, capsys):
    """A sweep completes with one row per point matching each run directory; a diverging
    point is recorded as failed and the others finish; a re-run skips finished points."""
    out = tmp_path / "sw"
    sets = [f"--set={s}" for s in TINY + ["N=20"]]
    argv = ["sweep", "teacher-student", "--grid", "dt=0.2,1e7", "--grid", "seed=0:2",
            *sets, "--workers", "0", "--out", str(out), "--no-progress"]
    assert main(argv) == 5                                     # some points failed
    assert "2 of 4 runs ok, 2 failed" in capsys.readouterr().out
    rows = sweep.read_summary(out / sweep.SUMMARY)
    assert [(r["dt"], r["seed"]) for r in rows] == [("0.2", "0"), ("0.2", "1"), ("1e7", "0"), ("1e7", "1")]
    for r in rows[:2]:
        assert r["status"] == "ok"
        m = _metrics(out / r["run"])
        assert float(r["final_risk"]) == m["risk"][-1]
        assert float(r["best_risk"]) == m["risk"].min()
        assert float(r["t_final"]) == pytest.approx(8.0, rel=1e-12)     # 40 steps of 0.2
        assert float(r["wall_s"]) > 0
    for r in rows[2:]:
        assert r["status"].startswith("failed: DivergenceError: step "), r["status"]
    assert rows[0]["final_risk"] != rows[1]["final_risk"]               # seeds differ

    # re-run: the finished points are not run again (their files are untouched), the
    # failed ones are retried (and fail again), the summary keeps the first wall times
    before = {r["run"]: (out / r["run"] / io.METRICS).stat().st_mtime_ns for r in rows[:2]}
    calls = []

    def counting(*args):
        calls.append(args[2])
        return sweep.run_point(*args)

    rows2 = sweep.run_sweep("teacher-student", ["dt=0.2,1e7", "seed=0:2"], out,
                            sets=TINY + ["N=20"], progress=False, point_fn=counting)
    assert {r["run"]: (out / r["run"] / io.METRICS).stat().st_mtime_ns for r in rows[:2]} == before
    for old, new in zip(rows, rows2):
        assert new["status"] == old["status"]
        if old["status"] == "ok":
            assert repr(new["final_risk"]) == old["final_risk"] and repr(new["wall_s"]) == old["wall_s"]
    assert sorted(calls) == sorted(str(out / r["run"]) for r in rows)

    # a different config for the same run directories: recorded as failed, nothing overwritten
    rows3 = sweep.run_sweep("teacher-student", ["dt=0.2", "seed=0:2"], out, sets=TINY + ["N=30"],
                            progress=False)
    for r in rows3:
        assert r["status"].startswith("failed: ConfigError:") and "N=20" in r["status"], r["status"]
    assert {r["run"]: (out / r["run"] / io.METRICS).stat().st_mtime_ns for r in rows[:2]} == before


def test_interrupted_point_resumes_from_its_checkpoint(tmp_path):
    """A point whose run directory holds a checkpoint at step 20 of 40 (here: the same run
    with steps = 20, which a sweep extends) is resumed, not restarted: its metrics equal an
    uninterrupted run's bit for bit.  (A run killed mid-way: the Dask test below.)"""
    from meanfield.experiments import get_experiment

    exp = get_experiment("teacher-student")
    ref = tmp_path / "ref"
    cfg = exp.Config.build(None, TINY + ["N=20", "seed=3"])
    runner.run(exp, cfg, ref, progress=False)
    out = tmp_path / "sw"
    # the same point run to step 20 only
    half = exp.Config.build(None, TINY + ["N=20", "seed=3", "steps=20"])
    runner.run(exp, half, out / "seed=3", progress=False)
    ck = io.load_checkpoint(out / "seed=3" / io.CHECKPOINT)
    assert ck["finished"] and ck["progress"]["steps"] == 20
    rows = sweep.run_sweep("teacher-student", ["seed=3"], out, sets=TINY + ["N=20"], progress=False)
    assert rows[0]["status"] == "ok"
    assert (out / "seed=3" / io.METRICS).read_bytes() == (ref / io.METRICS).read_bytes()


def test_replicas_for_seed_gives_one_row_per_seed(tmp_path):
    out = tmp_path / "sw"
    rows = sweep.run_sweep("teacher-student", ["N=10,20", "seed=0:3"], out, sets=TINY,
                           replicas_for="seed", progress=False)
    assert [(r["N"], r["seed"], r["replica"]) for r in rows] == \
        [(n, str(s), s) for n in ("10", "20") for s in range(3)]
    assert {r["run"] for r in rows} == {"N=10_seed=0..2", "N=20_seed=0..2"}
    for r in rows:
        m = _metrics(out / r["run"])
        assert r["status"] == "ok"
        assert r["final_risk"] == m[f"risk_r{r['replica']}"][-1]
        assert r["best_risk"] == m[f"risk_r{r['replica']}"].min()
    with np.load(out / "N=20_seed=0..2" / io.PARTICLES) as z:
        assert z["theta"].shape == (5, 3, 20, 4)           # snapshots × replicas × N × D
    assert len({r["final_risk"] for r in rows}) == 6


def _kill_worker_once(experiment, config, run_dir, metric, *, marker, victim, kill_at):
    """Run a point; for ``victim``, the first time only, kill this worker process at step
    ``kill_at`` (after its checkpoint at step 20, before step 40)."""
    import os
    from pathlib import Path

    from meanfield.dynamics import ParticleDynamics
    from meanfield.sweep import run_point

    if Path(run_dir).name == victim and not os.path.exists(marker):
        real = ParticleDynamics.step

        def step(self, state, **kw):
            if state.step == kill_at:
                open(marker, "w").close()
                os._exit(1)                         # the worker dies, no cleanup
            return real(self, state, **kw)

        ParticleDynamics.step = step
    return run_point(experiment, config, run_dir, metric)


def test_dask_sweep_survives_a_killed_worker(tmp_path):
    """LocalCluster of 2 workers with OMP_NUM_THREADS=1; one point kills its worker
    mid-run; the sweep still completes and that point's metrics equal an uninterrupted
    run's bit for bit (resumed from its checkpoint, nothing lost)."""
    import cloudpickle

    from meanfield.experiments import get_experiment

    # this module's functions travel to the workers by value (tests/ is not importable there)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    fn = functools.partial(_kill_worker_once, marker=str(marker), victim="seed=1", kill_at=27)
    out = tmp_path / "sw"
    client = sweep.dask_client(workers=2)
    try:
        assert set(client.run(lambda: __import__("os").environ["OMP_NUM_THREADS"]).values()) == {"1"}
        assert len(client.scheduler_info()["workers"]) == 2
        rows = sweep.run_sweep("teacher-student", ["seed=0:3"], out, sets=TINY + ["N=20"],
                               executor=client.get_executor(), progress=False, point_fn=fn)
    finally:
        sweep.close_client(client)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists()                                   # the worker was killed
    assert [r["status"] for r in rows] == ["ok"] * 3
    exp = get_experiment("teacher-student")
    runner.run(exp, exp.Config.build(None, TINY + ["N=20", "seed=1"]), tmp_path / "ref", progress=False)
    assert (out / "seed=1" / io.METRICS).read_bytes() == (tmp_path / "ref" / io.METRICS).read_bytes()
    assert float(rows[1]["final_risk"]) == _metrics(tmp_path / "ref")["risk"][-1]


def test_plot_and_show_a_sweep_fit_the_n_dependence(tmp_path, capsys):
    """`meanfield plot SW` and `meanfield show SW` on a small sweep over N and seeds: the
    fitted slope in fit.json is the least-squares slope of log(seed mean) on log N computed
    here from summary.csv with scipy, its interval holds it, and a figure is drawn; a sweep
    still missing points is plotted from its finished ones."""
    from scipy.stats import linregress

    out = tmp_path / "sw"
    argv = ["sweep", "teacher-student", "--grid", "N=8,16,32", "--grid", "seed=0:3",
            *[f"--set={s}" for s in TINY], "--set=m0=100", "--workers", "0", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    assert "risk_vs_N.png" in capsys.readouterr().out
    assert (out / "figures" / "risk_vs_N.png").stat().st_size > 10_000
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    fit = json.loads((out / "fit.json").read_text())
    [entry] = fit["fits"]
    assert entry["key"] == "N" and entry["x"] == [8, 16, 32] and entry["n"] == [3, 3, 3]
    rows = sweep.read_summary(out / sweep.SUMMARY)
    means = [np.mean([float(r["final_risk"]) for r in rows if r["N"] == n]) for n in ("8", "16", "32")]
    ref = linregress(np.log([8, 16, 32]), np.log(means))
    f = entry["final_risk"]
    assert f["slope"] == pytest.approx(ref.slope, rel=1e-12) and f["ci95"][0] < f["slope"] < f["ci95"][1]
    assert f["slope"] < -0.3                                         # a wide teacher: R falls with N
    assert f"final_risk vs N: slope {f['slope']:.3f}" in shown
    # a point still running (or failed) is left out of the figure and the fit
    rows[0]["status"] = "pending"
    io.write_metrics(out / sweep.SUMMARY, rows)
    assert main(["plot", str(out)]) == 0
    assert json.loads((out / "fit.json").read_text())["fits"][0]["n"] == [2, 3, 3]
    # not a sweep, not a run
    (out / "sweep.json").write_text("[1, 2]")
    assert main(["show", str(out)]) == 2
    assert "is not a meanfield sweep record" in capsys.readouterr().err


def test_the_summary_is_named_after_its_metric_and_keeps_negative_values_on_the_plot(tmp_path, capsys,
                                                                                      monkeypatch):
    """--metric free_energy (β = 100: negative values): summary.csv, show and fit.json call the
    columns final_free_energy and best_free_energy, and the figure's value axes are signed
    (symmetric-log or linear), so no finished point falls off them."""
    from meanfield import plotting, sweep_report

    monkeypatch.setattr(runner, "draw", lambda exp, run_dir, coords=None: [])   # the points' own figures
    out = tmp_path / "fe"
    rows = sweep.run_sweep("teacher-student", ["N=8,16,32", "seed=0:2"], out,
                           sets=TINY + ["beta=100", "lam=0.01"], metric="free_energy", progress=False,
                           warmup=False)
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    header = (out / sweep.SUMMARY).read_text().splitlines()[0].split(",")
    assert {"final_free_energy", "best_free_energy"} <= set(header) and "final_risk" not in header
    for r in rows:
        m = _metrics(out / r["run"])
        assert r["final_free_energy"] == m["free_energy"][-1]
        assert r["best_free_energy"] == np.nanmin(m["free_energy"])
    assert any(r["final_free_energy"] < 0 for r in rows)
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "final_free_energy vs N" in shown and "final_risk" not in shown
    assert sweep_report.read_fit(out)["stats"] == ["final_free_energy", "best_free_energy"]
    drawn = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path: drawn.append((fig, path)) or path)
    sweep_report.plot_sweep(out)
    (fig, path), = drawn
    assert path.name == "free_energy_vs_N.png"
    for ax in fig.axes:
        assert ax.get_yscale() in ("symlog", "linear")          # signed: log would drop them
        lo, hi = ax.get_ylim()
        assert lo < min(r["best_free_energy"] for r in rows) and hi > max(r["final_free_energy"] for r in rows)
    plotting.pyplot().close(fig)


def test_value_axes_are_logarithmic_only_for_positive_values():
    from meanfield.plotting import pyplot, value_scale

    fig, ax = pyplot().subplots()
    assert value_scale(ax, [1e-3, 0.5, None, float("nan")]) == "log"
    assert value_scale(ax, [-0.02, 1e-3, 0.4]) == "symlog" and ax.get_yscale() == "symlog"
    assert value_scale(ax, [-0.03, -0.025, 0.001]) == "linear"     # within two decades
    assert value_scale(ax, [0.0, 0.0]) == "linear"
    pyplot().close(fig)


def test_a_sweep_summarised_before_columns_were_named_after_the_metric_still_reads(tmp_path, capsys,
                                                                                   monkeypatch):
    """Earlier sweeps called the columns final_risk/best_risk whatever their --metric:
    show reads them as the metric's."""
    from meanfield import sweep_report

    monkeypatch.setattr(runner, "draw", lambda exp, run_dir, coords=None: [])
    out = tmp_path / "old"
    sweep.run_sweep("teacher-student", ["N=8,16,32"], out, sets=TINY, progress=False, warmup=False)
    record = json.loads((out / sweep.RECORD).read_text())
    (out / sweep.RECORD).write_text(json.dumps({**record, "metric": "velocity_sq"}))
    assert sweep_report.sweep_fits(out)["stats"] == ["final_risk", "best_risk"]
    assert main(["show", str(out)]) == 0 and "final_risk vs N" in capsys.readouterr().out
