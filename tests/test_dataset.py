"""Your own data: the logistic loss on a FiniteDataset, the ``dataset`` experiment
(files, scikit-learn data sets, split, standardisation, metrics), bad data refused before
anything is written, and sweeps over N."""
import json
import math

import numpy as np
import pytest
import torch

import meanfield as mf
from meanfield import data, io
from meanfield.cli import main
from meanfield.errors import ConfigError
from meanfield.experiments import dataset as ds

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def logistic_task(n=40, d=3, N=12, seed=0, unit=None):
    g = gen(seed)
    unit = unit or mf.Unit(d, "relu", output_weight=True)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.sign(X[:, 0] + 0.3 * torch.randn(n, generator=g, dtype=F64))
    theta = torch.randn(N, unit.D, generator=g, dtype=F64)
    return mf.FiniteDataset(unit, X, y, loss="logistic"), theta


# ---------------------------------------------------------------------- the logistic loss
def test_logistic_potential_is_half_the_first_variation_and_matches_autograd():
    """∇_θΨ(θ_i) = (N/2) ∂R/∂θ_i with R = mean log(1 + e^{−y f}) written with autograd, and
    Ψ half the first variation of R (a finite difference in the weights)."""
    task, theta = logistic_task()
    N = theta.shape[0]
    pot = mf.evaluate(task, theta)
    th = theta.clone().requires_grad_(True)
    X, y = task.X, task.Y
    f = (th[:, 0] * torch.relu(X @ th[:, 1:].T)).mean(-1)
    R = torch.log1p(torch.exp(-y * f)).mean()
    R.backward()
    torch.testing.assert_close(pot.risk[0], R.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(pot.grad[0], N / 2 * th.grad, rtol=1e-12, atol=1e-14)
    # Ψ = ½ δR/δρ: moving mass ε from ρ to δ_{θ_i} changes R by 2ε (Ψ_i − Σ_j m_j Ψ_j)
    eps = 1e-6
    w = torch.full((N,), 1.0 / N, dtype=F64)
    i = 3
    wp = (1 - eps) * w
    wp[i] += eps
    dR = (mf.evaluate(task, theta, wp).risk - mf.evaluate(task, theta, w).risk) / eps
    psi_bar = (pot.psi[0] * w).sum()
    assert abs(float(dR) - 2 * float(pot.psi[0, i] - psi_bar)) < 1e-6


def test_logistic_loss_is_stable_and_labels_are_checked():
    task, theta = logistic_task()
    big = theta * 1e3                                   # |f| ~ 1e6: no overflow, no NaN
    pot = mf.evaluate(task, big)
    assert torch.isfinite(pot.risk).all() and torch.isfinite(pot.grad).all()
    f = task.outputs(big)[0]
    expected = torch.clamp(-task.Y * f, min=0).mean()   # log(1 + e^{-m}) → max(−m, 0)
    assert abs(float(pot.risk[0]) - float(expected)) < 1e-6 * max(1.0, float(expected))
    assert task.risk_sharp == pytest.approx(math.log(2))
    with pytest.raises(ConfigError, match=r"labels y in \{-1, \+1\}"):
        mf.FiniteDataset(task.unit, task.X, task.Y + 1, loss="logistic")
    with pytest.raises(ConfigError, match="unknown loss"):
        mf.FiniteDataset(task.unit, task.X, task.Y, loss="hinge")
    with pytest.raises(ConfigError, match="squared loss's decomposition"):
        task.sample_V(theta[None], task.X[None], task.Y[None])


def test_margin_is_scale_invariant_for_homogeneous_units_only():
    task, theta = logistic_task()
    m1, m2 = task.margin(theta), task.margin(3.7 * theta)
    torch.testing.assert_close(m1, m2, rtol=1e-12, atol=1e-15)
    f = task.outputs(theta)[0]
    expected = (task.Y * f).min() / (theta ** 2).sum(-1).mean()
    torch.testing.assert_close(m1[0], expected, rtol=1e-12, atol=0)
    assert torch.equal(mf.diagnostics.margin(task, theta), m1)
    tanh_task, th = logistic_task(unit=mf.Unit(3, "tanh"))
    with pytest.raises(ConfigError, match="homogeneous"):
        tanh_task.margin(th)


def test_sgd_minibatch_and_langevin_accept_the_logistic_loss():
    task, theta = logistic_task(n=60, N=20)
    r0 = float(task.risk(theta))
    for dyn in (mf.online_sgd(task, eps=0.05), mf.minibatch_sgd(task, eps=0.1, batch_size=8),
                mf.langevin(task, dt=0.1, beta=1e4), mf.gradient_flow(task, dt=0.2)):
        state = dyn.run(dyn.init(theta, seed=1), 150)
        assert state.theta.shape == theta.shape and torch.isfinite(state.theta).all()
        assert float(task.risk(state.theta)) < 0.8 * r0, dyn
    # online SGD with the logistic loss takes the step loop (the compiled loop is squared-only)
    dyn = mf.online_sgd(task, eps=0.05)
    with pytest.raises(ConfigError, match="squared loss"):
        dyn.run(dyn.init(theta, seed=1), 5, fast=True)


def test_the_squared_loss_path_is_bit_for_bit_the_former_formula():
    """cb-relu2d's numbers must not change: Ψ̂, ∇Ψ̂, R̂ of the squared loss equal the formula
    the library used before the logistic loss existed, bit for bit."""
    g = gen(5)
    unit = mf.Unit(2, "relu")
    X, y = torch.randn(30, 2, generator=g, dtype=F64), torch.randn(30, generator=g, dtype=F64)
    theta = torch.randn(2, 7, 3, generator=g, dtype=F64)
    task = mf.FiniteDataset(unit, X, y)
    pot = task.sample_potential(theta, None, X[None], y[None])
    m = torch.full((1, 7), 1 / 7, dtype=F64)
    phi = unit(X[None], theta)
    f = (phi @ m.unsqueeze(-1)).squeeze(-1)
    r = f - y[None]
    assert torch.equal(pot.psi, (r.unsqueeze(-2) @ phi).squeeze(-2) / 30)
    assert torch.equal(pot.grad, unit.weighted_grad(X[None], theta, r / 30))
    assert torch.equal(pot.risk, (r * r).mean(-1))


# ---------------------------------------------------------------------- the experiment
def test_small_run_on_breast_cancer_with_the_logistic_loss(tmp_path, capsys):
    out = tmp_path / "bc"
    code = main(["run", "dataset", "--set", "data=sklearn:breast_cancer", "--set", "loss=logistic",
                 "--set", "scale=small", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rec = json.loads((out / io.CONFIG).read_text())
    data = rec["data"]
    assert (data["n"], data["d"], data["n_train"], data["n_test"]) == (569, 30, 456, 113)
    assert data["classification"] and data["standardize"] and len(data["x_mean"]) == 30
    assert rec["config"]["d"] == 30                              # the data's d, not the default
    assert rec["task"]["loss"] == "logistic"
    m = io.read_metrics(out / io.METRICS)
    for col in ("risk", "test_risk", "train_accuracy", "test_accuracy", "test_error", "margin"):
        assert col in m and np.isfinite(m[col]).all(), col
    # measured (small mode): train risk 0.67 → 0.0085, test error 0.19 → 0.018, margin
    # −0.19 → −3e-4 (the training set is separated by t ≈ 400)
    assert m["risk"][-1] < 0.02 * m["risk"][0]
    assert m["test_error"][-1] < 0.05 and m["train_accuracy"][-1] > 0.99
    assert m["margin"][-1] > m["margin"][0]
    with np.load(out / io.PARTICLES) as z:
        assert z["theta"].shape == (51, 50, 31) and z["data_X"].shape == (456, 30)
        assert abs(z["data_X"].mean()) < 1e-12 and z["test_X"].shape == (113, 30)
    figs = {p.name for p in (out / io.FIGURES).iterdir()}
    assert {"dataset.png", "risk.png", "particles.png"} <= figs


def write_csv(path, rows, header=None):
    lines = ([",".join(header)] if header else []) + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_files_npz_and_csv_with_or_without_header_read_the_same(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = np.where(X[:, 0] > 0, 1.0, 0.0)                 # {0, 1} labels map to ±1
    np.savez(tmp_path / "d.npz", X=X, y=y)
    rows = np.column_stack([X, y]).tolist()
    write_csv(tmp_path / "h.csv", rows, header=["a", "b", "c", "label"])
    write_csv(tmp_path / "n.csv", rows)
    cfgs = [ds.Config.build(None, [f"data={tmp_path / f}", "test_fraction=0.25"])
            for f in ("d.npz", "h.csv", "n.csv")]
    preps = [ds.prepare(c) for c in cfgs]
    for p in preps[1:]:
        np.testing.assert_allclose(p["X"], preps[0]["X"], rtol=1e-15, atol=1e-15)
        np.testing.assert_array_equal(p["y"], preps[0]["y"])
    p = preps[0]
    assert set(np.unique(p["y"])) == {-1.0, 1.0} and p["record"]["label_map"] == {"0": -1, "1": 1}
    assert len(p["y"]) == 15 and len(p["y_test"]) == 5
    # the split is stratified and seeded
    assert sorted(np.unique(p["y_test"], return_counts=True)[1]) == sorted(
        round(0.25 * c) for c in np.unique(np.where(y > 0, 1, -1), return_counts=True)[1])
    again = ds.prepare(ds.Config.build(None, [f"data={tmp_path / 'd.npz'}", "test_fraction=0.25"]))
    np.testing.assert_array_equal(again["X_test"], p["X_test"])
    other = ds.prepare(ds.Config.build(None, [f"data={tmp_path / 'd.npz'}", "test_fraction=0.25",
                                              "split_seed=1"]))
    assert not np.array_equal(other["X_test"], p["X_test"])
    assert preps[1]["record"]["columns"] == ["a", "b", "c", "label"]


def test_scikit_learn_data_sets_and_a_regression():
    for name, n, d in (("digits01", 360, 64), ("iris12", 100, 4), ("wine01", 130, 13)):
        X, y, info = data.load(f"sklearn:{name}")
        assert X.shape == (n, d) and set(np.unique(y)) == {-1.0, 1.0}, name
    p = ds.prepare(ds.Config.build(None, ["data=sklearn:diabetes", "loss=squared"]))
    assert not p["classification"] and abs(p["y"].mean()) < 1e-12 and abs(p["y"].std() - 1) < 1e-12
    assert "y_mean" in p["record"]
    with pytest.raises(ConfigError, match="non-binary|binary labels"):
        ds.prepare(ds.Config.build(None, ["data=sklearn:diabetes", "loss=logistic"]))
    with pytest.raises(ConfigError, match="two distinct classes"):
        data.load("sklearn:digits11")
    with pytest.raises(ConfigError, match="unknown scikit-learn data set"):
        data.load("sklearn:mnist")


def _bad(tmp_path, kind):
    """A data spec (and extra --set's) that must be refused."""
    if kind == "missing":
        return [f"data={tmp_path / 'nope.csv'}"], "does not exist"
    if kind == "shape":
        np.savez(tmp_path / "b.npz", X=np.ones(10), y=np.ones(10))
        return [f"data={tmp_path / 'b.npz'}"], "X must have shape [n, d]"
    if kind == "length":
        np.savez(tmp_path / "b.npz", X=np.ones((10, 2)), y=np.ones(9))
        return [f"data={tmp_path / 'b.npz'}"], "y must have shape [10]"
    if kind == "keys":
        np.savez(tmp_path / "b.npz", features=np.ones((10, 2)))
        return [f"data={tmp_path / 'b.npz'}"], "needs arrays 'X'"
    if kind == "nan":
        X = np.ones((10, 2))
        X[4, 1] = np.nan
        np.savez(tmp_path / "b.npz", X=X, y=np.ones(10))
        return [f"data={tmp_path / 'b.npz'}"], "non-finite entry (NaN or inf; first in row 4)"
    if kind == "inf":
        rows = [[1.0, 2.0, 1.0], [0.5, float("inf"), -1.0], [0.0, 1.0, 1.0]]
        return [f"data={write_csv(tmp_path / 'b.csv', rows)}"], "non-finite"
    if kind == "nonbinary":
        rows = [[k, k % 3] for k in range(10)]
        return [f"data={write_csv(tmp_path / 'b.csv', rows)}", "loss=logistic"], "binary labels"
    if kind == "one-point":
        return [f"data={write_csv(tmp_path / 'b.csv', [[1.0, 2.0, 1.0]])}"], "1 point; at least 2"
    if kind == "text":
        rows = [[1.0, 2.0, 1.0], [0.5, "abc", -1.0], [0.0, 1.0, 1.0]]
        return [f"data={write_csv(tmp_path / 'b.csv', rows, header=['x', 'z', 'y'])}"], \
            "line 3, column 2: 'abc' is not a number"
    if kind == "ragged":
        (tmp_path / "b.csv").write_text("1,2,1\n3,1\n")
        return [f"data={tmp_path / 'b.csv'}"], "line 2: 2 fields, expected 3"
    if kind == "suffix":
        (tmp_path / "b.txt").write_text("1,2,1\n")
        return [f"data={tmp_path / 'b.txt'}"], "must end in .npz or .csv"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "shape", "length", "keys", "nan", "inf", "nonbinary",
                                  "one-point", "text", "ragged", "suffix"])
def test_bad_data_is_one_line_status_2_and_nothing_written(tmp_path, capsys, kind):
    sets, needle = _bad(tmp_path, kind)
    out = tmp_path / "out"
    argv = ["run", "dataset", "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err, err
    assert err.count("\n") == 1 and err.startswith("meanfield: error:") and "Traceback" not in err
    assert not out.exists()


def test_a_sweep_over_N_works_unchanged(tmp_path):
    from meanfield.sweep import run_sweep

    rows = run_sweep("dataset", ["N=5,10", "seed=0:2"], tmp_path / "sw",
                     sets=["scale=small", "steps=20", "log_every=10", "save_every=10",
                           "checkpoint_every=20", "data=sklearn:iris12"],
                     metric="test_error", progress=False, warmup=False)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(0 <= r["final_test_error"] <= 1 for r in rows)  # the summarised metric, named after it


def test_the_config_takes_its_input_dimension_from_the_data(tmp_path):
    """``d`` is filled in from the data when a run is configured (config.json records the
    data's d); a d given that differs is refused in one line; a resumed run (``base``) keeps
    the d it recorded, so runs made before d was filled in resume unchanged."""
    assert ds.Config.build(None, ["scale=small"]).d == 30
    assert ds.Config.build(None, ["data=sklearn:diabetes", "loss=squared"]).d == 10
    assert ds.Config.build(None, ["d=30"]).d == 30
    with pytest.raises(ConfigError, match=r"d is the data's input dimension \(30 for "
                                          r"sklearn:breast_cancer\), got d=7: leave d unset"):
        ds.Config.build(None, ["d=7"])
    toml = tmp_path / "c.toml"
    toml.write_text("d = 7\n")
    with pytest.raises(ConfigError, match="got d=7"):
        ds.Config.build(toml)
    old = ds.Config().to_dict()                                   # d = 10, as runs recorded it
    assert old["d"] == 10 and ds.Config.build(None, ["steps=4000"], base=old).d == 10
