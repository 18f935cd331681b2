"""The ResNet experiments in their small modes through the CLI: the run-directory contract
(with ``layer`` in particles.npz), what each experiment measures, bit-for-bit resume after
a crash, and one-line errors."""
import json
import math

import numpy as np
import pytest
import torch

from meanfield import io, runner
from meanfield.cli import main
from meanfield.dynamics import ConditionalOTFlow

LIMIT = ["--set", "scale=small", "--set", "tasks=neg", "--set", "steps=10", "--set", "log_every=5",
         "--set", "save_every=5", "--set", "checkpoint_every=5", "--no-progress"]
RKHS = ["--set", "scale=small", "--set", "targets=neg", "--set", "steps=10", "--set", "log_every=5", "--set", "save_every=5",
        "--set", "checkpoint_every=5", "--no-progress"]
DIGITS = ["--set", "scale=small", "--set", "steps=20", "--set", "log_every=10", "--set", "save_every=10",
          "--set", "checkpoint_every=10", "--no-progress"]


class _Crash(Exception):
    pass


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def crash_and_resume(tmp_path, capsys, monkeypatch, name, argv, ref, crash_at):
    """Run ``name`` with a crash at the ``crash_at``-th flow step, resume it, and check that
    the result equals the uninterrupted run ``ref`` byte for byte."""
    crashed = tmp_path / "crashed"
    real = ConditionalOTFlow.step
    calls = {"n": 0}

    def crashing(self, state, **kw):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise _Crash()
        return real(self, state, **kw)

    monkeypatch.setattr(ConditionalOTFlow, "step", crashing)
    with pytest.raises(_Crash):
        main(["run", name, "--out", str(crashed), *argv])
    monkeypatch.setattr(ConditionalOTFlow, "step", real)
    progress, done, current = runner.load_records(crashed)
    assert not progress["finished"] and current is not None and len(done) >= 1
    assert not (crashed / io.PARTICLES).exists()
    code, _, err = run_cli(capsys, "resume", str(crashed), "--no-progress")
    assert code == 0, err
    assert (ref / io.METRICS).read_bytes() == (crashed / io.METRICS).read_bytes()
    assert (ref / "results.json").read_bytes() == (crashed / "results.json").read_bytes()
    with np.load(ref / io.PARTICLES) as a, np.load(crashed / io.PARTICLES) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    return crashed


def check_contract(out, N_expected, P):
    cfg = json.loads((out / io.CONFIG).read_text())
    assert cfg["meanfield_version"]
    with np.load(out / io.PARTICLES) as z:
        theta, layer, names, t = z["theta"], z["layer"], z["param_names"], z["t"]
    assert theta.shape[-2:] == (N_expected, P) and layer.shape == (N_expected,)
    assert ((layer >= 0) & (layer <= 1)).all() and len(names) == P and len(t) == theta.shape[0]
    assert all(p.stat().st_size > 1000 for p in (out / io.FIGURES).glob("*.png"))
    return theta, layer


def test_resnet_limit_small_mode(tmp_path, capsys, monkeypatch):
    ref = tmp_path / "ref"
    code, stdout, err = run_cli(capsys, "run", "resnet-limit", "--out", str(ref), *LIMIT)
    assert code == 0, err
    assert "resnet-limit: final risk" in stdout
    theta, layer = check_contract(ref, 16 * 32, 13)                    # L_ref × M_ref, P = 2·6 + 1
    np.testing.assert_array_equal(np.unique(layer), np.arange(16) / 16)
    # shared initialisation: every layer starts from the same M_ref atoms
    first = theta[0].reshape(16, 32, 13)
    np.testing.assert_array_equal(first[0], first[7])
    res = json.loads((ref / "results.json").read_text())["tasks"]["neg"]
    d = np.array(res["depth"]["output_distance"]).mean(0)                 # L = 2, 4
    # the depth error more than halves from L = 2 to 4 (measured 0.094 → 0.036 at T = 2)
    assert d[1] < 0.6 * d[0] and np.isfinite(res["depth"]["output_slope"]["slope"])
    assert res["depth"]["output_slope"]["boot_low"] <= res["depth"]["output_slope"]["slope"] \
        <= res["depth"]["output_slope"]["boot_high"]
    m = io.read_metrics(ref / io.METRICS)
    sel = (m["L"] == 16) & (m["M"] == 32)
    assert m["risk"][sel][-1] < 0.5 * m["risk"][sel][0]                 # the reference trains
    assert {p.name for p in (ref / io.FIGURES).iterdir()} == {"limits.png", "risk.png"}
    crashed = crash_and_resume(tmp_path, capsys, monkeypatch, "resnet-limit", LIMIT, ref, crash_at=17)
    code, _, err = run_cli(capsys, "resume", str(crashed), "--set", "steps=20")
    assert code == 2 and "steps cannot change on resume" in err


def test_resnet_rkhs_small_mode(tmp_path, capsys, monkeypatch):
    ref = tmp_path / "ref"
    code, _, err = run_cli(capsys, "run", "resnet-rkhs", "--out", str(ref), *RKHS)
    assert code == 0, err
    check_contract(ref, 2 * 32, 9)                                       # L × M, P = 2·4 + 1
    m = io.read_metrics(ref / io.METRICS)
    R = 2
    for r in range(R):
        # ‖v‖² = Σ_l h_l tr(Pᵀ K_l P)/n² ≥ Σ_l h_l λ_min(K_l) ‖P‖²/n²: the bound never exceeds the ratio
        assert (m[f"pl_bound_r{r}"] <= m[f"pl_ratio_r{r}"] * (1 + 1e-9)).all()
        assert (m[f"pl_bound_r{r}"] > 0).all()
    res = json.loads((ref / "results.json").read_text())["targets"]
    for nu in ("0.5", "inf"):
        lam = np.array(res["neg"][nu]["lam_min_0"]).mean(0)               # δ = 0.05, 0.5
        exact = res["neg"][nu]["lam_min_0_exact_kernel"]
        assert lam[0] < 0.5 * lam[1] and exact[0] < 0.5 * exact[1]
    # Gaussian kernel: λ_min ~ δ², so a 10× smaller δ gives ≥ 30× smaller λ_min (exact kernel)
    ex = res["neg"]["inf"]["lam_min_0_exact_kernel"]
    assert ex[0] < ex[1] / 30
    # the three exponents of λ_min in δ (fit.json = results.json["exponents"])
    fit = json.loads((ref / "fit.json").read_text())
    assert fit == json.loads((ref / "results.json").read_text())["exponents"]
    for nu, p, pre in (("0.5", 1.0, 0.867), ("inf", 2.0, 1.947)):
        e = fit["nus"][nu]
        # exact kernel on [1e-4, 1e-3]: within 0.01 of min(2ν, 2), local slopes converged
        assert abs(e["asymptotic"]["slope"] - p) < 0.01 and e["asymptotic"]["converged"], e["asymptotic"]
        # exact kernel at the run's δ = 0.05, 0.5 (deterministic: task_seed 0), pre-asymptotic
        assert abs(e["pre_asymptotic"]["slope"] - pre) < 0.01 and e["pre_asymptotic"]["window"] == [0.05, 0.5]
        assert e["summary"]["trained_features"] == res["neg"][nu]["lam_min_0_slope"]["slope"]
    # M = 32 trained features, Gaussian: 1.96 here [bootstrap 1.94, 1.97]; seeds 1–3 give 1.97–1.98.
    # (ν = ½ with 32 Cauchy frequencies ranges 0.74–1.76 over seeds: the small mode resolves no slope there.)
    tf = fit["nus"]["inf"]["trained_features"]
    assert 1.85 < tf["slope"] < 2.05 and 1.8 < tf["boot_low"] <= tf["slope"] <= tf["boot_high"] < 2.1, tf
    # the trained-feature exponent is that of the features actually trained: the recorded λ_min(K_0)
    from meanfield.analysis import kernels
    from meanfield.experiments import resnet_rkhs
    cfg = resnet_rkhs.Config.build(None, ["scale=small", "targets=neg"])
    for nu in (0.5, math.inf):
        for k, delta in enumerate(cfg.sizes()["deltas"]):
            ours = kernels.feature_lam_min(cfg, cfg.sizes(), nu, delta, 4)
            np.testing.assert_allclose(ours, np.array(res["neg"][f"{nu:g}"]["lam_min_0"])[:, k], rtol=1e-9)
    # only u is trained: w and b of the snapshots never move
    with np.load(ref / io.PARTICLES) as z:
        th = z["theta"]
    np.testing.assert_array_equal(th[-1][:, 4:], th[0][:, 4:])
    assert np.abs(th[-1][:, :4]).max() > 0 and np.abs(th[0][:, :4]).max() == 0
    crash_and_resume(tmp_path, capsys, monkeypatch, "resnet-rkhs", RKHS, ref, crash_at=28)


def test_resnet_digits_small_mode(tmp_path, capsys, monkeypatch):
    ref = tmp_path / "ref"
    code, _, err = run_cli(capsys, "run", "resnet-digits", "--out", str(ref), *DIGITS)
    assert code == 0, err
    check_contract(ref, 2 * 4, 65)                                       # L = 2, M = 4, D = 32
    res = json.loads((ref / "results.json").read_text())
    assert res["n_train"] == 1347 and res["n_test"] == 450
    for v in res["final"].values():
        # chance is 10 %; 20 SGD steps reach 35 % (L = 1) and 41 % (L = 2), measured
        assert v["test_acc"] > 0.3
    m = io.read_metrics(ref / io.METRICS)
    for L in (1, 2):
        r = m["risk"][m["L"] == L]
        assert r[-1] < 0.8 * r[0]
    crash_and_resume(tmp_path, capsys, monkeypatch, "resnet-digits", DIGITS, ref, crash_at=33)


@pytest.mark.parametrize("argv, needle", [
    (["resnet-limit", "--set", "scale=small", "--set", "depths=2,16"], "must stay below the reference"),
    (["resnet-limit", "--set", "tasks=neg,cube"], "tasks must list"),
    (["resnet-limit", "--set", "tasks="], "tasks must list"),
    (["resnet-rkhs", "--set", "targets=,"], "targets must list"),
    (["resnet-limit", "--set", "depths=4,2"], "increasing integers"),
    (["resnet-limit", "--set", "backend=numpy"], "backend must be one of"),
    (["resnet-rkhs", "--set", "nus=0.7"], "half-integers"),
    (["resnet-rkhs", "--set", "deltas=0,1"], "numbers > 0"),
    (["resnet-digits", "--set", "hidden=5"], "hidden must lie in 10..64"),
    (["linear-obstruction", "--set", "init_scale=-1"], "init_scale must be finite and >= 0"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", *argv, "--out", str(out))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_resumed_sweep_keeps_its_config(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = ConditionalOTFlow.step
    calls = {"n": 0}

    def crashing(self, state, **kw):
        calls["n"] += 1
        if calls["n"] == 13:          # after the checkpoint at step 10 of the first job
            raise _Crash()
        return real(self, state, **kw)

    monkeypatch.setattr(ConditionalOTFlow, "step", crashing)
    with pytest.raises(_Crash):
        main(["run", "resnet-digits", "--out", str(out), *DIGITS])
    monkeypatch.setattr(ConditionalOTFlow, "step", real)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(capsys, "resume", str(out), "--set", "dt=0.5")
    assert code == 2 and "dt cannot change on resume" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before    # nothing written
    torch.manual_seed(0)        # global RNG untouched by the experiment: nothing depends on it
    assert run_cli(capsys, "resume", str(out), "--no-progress")[0] == 0
