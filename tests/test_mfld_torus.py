"""mfld-torus: the torus MMD task, the Kozachenko–Leonenko entropy, and the Langevin runs."""
import json
import math

import numpy as np
import pytest
import torch

from meanfield import diagnostics, io
from meanfield.cli import main
from meanfield.errors import ConfigError
from meanfield.interact import evaluate
from meanfield.models import TorusMMD


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mfld") / "run"
    assert main(["run", "mfld-torus", "--set", "scale=small", "--out", str(out), "--no-progress"]) == 0
    return out


def test_torus_mmd_is_the_mmd_and_its_gradient(gen):
    task = TorusMMD.random(10, generator=gen(0))
    theta = (torch.rand(2, 30, 2, generator=gen(1), dtype=torch.float64) * 9 - 1).requires_grad_(True)
    w = torch.rand(2, 30, generator=gen(2), dtype=torch.float64)
    w = w / w.sum(-1, keepdim=True)
    pot = evaluate(task, theta.detach(), w)
    # R = ∬k dρdρ − 2∬k dρdν + ∬k dνdν from explicit kernel matrices
    y, nu = task.targets, task.target_weights
    K = task.kernel(theta, theta)
    R = (w[:, :, None] * w[:, None, :] * K).sum((1, 2)) - 2 * (w * (task.kernel(theta, y[None]) @ nu)).sum(-1) \
        + nu @ task.kernel(y, y) @ nu
    torch.testing.assert_close(pot.risk, R.detach(), rtol=1e-12, atol=1e-12)
    # ∇_{θ_i} R = 2 m_i ∇Ψ(θ_i)  (DESIGN.md §1: Ψ is half the first variation)
    R.sum().backward()
    torch.testing.assert_close(pot.grad, theta.grad / (2 * w[..., None]), rtol=1e-10, atol=1e-12)
    # periodic in both coordinates, k(x, x) = (1 + 2 Σ_{k≤5} 1/(1+k))², R(ν) = 0
    shifted = evaluate(task, theta.detach() + torch.tensor([2 * math.pi, -4 * math.pi], dtype=torch.float64), w)
    torch.testing.assert_close(shifted.risk, pot.risk, rtol=1e-10, atol=1e-12)
    g0 = 1 + 2 * sum(1 / (1 + k) for k in range(1, 6))
    assert float(task.kernel(y[:1], y[:1])) == pytest.approx(g0 ** 2, rel=1e-14)
    assert float(evaluate(task, y[None], nu[None]).risk) == pytest.approx(0.0, abs=1e-12)


def test_torus_mmd_fourier_modes_agree_with_direct_pair_sums(gen):
    """method="modes" sums the kernel's (2K+1)² Fourier modes, method="direct" sums cosines
    pair by pair: two independent computations of Ψ, ∇Ψ and R."""
    ours = TorusMMD.random(10, generator=gen(5))
    ref = TorusMMD(ours.targets, method="direct")
    assert ours.method == "modes"
    with pytest.raises(ConfigError, match="method"):
        TorusMMD(ours.targets, method="fft")
    theta = torch.rand(3, 40, 2, generator=gen(6), dtype=torch.float64) * 2 * math.pi
    a, b = evaluate(ours, theta), evaluate(ref, theta)
    for x, y in ((a.psi, b.psi), (a.grad, b.grad), (a.risk, b.risk)):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)      # measured: 5e-15


def test_knn_entropy_matches_known_entropies(gen):
    # uniform on the torus [0, 2π)²: H = log(4π²) = 3.676; a centred Gaussian N(0, σ²I₂) in the
    # plane: H = log(2πeσ²).  Measured over 20 draws at N = 8000: s.d. 0.017 and bias
    # +0.006 (torus), −0.003 (Gaussian); allow 0.1 (≈ 6 s.d.).
    u = torch.rand(8000, 2, generator=gen(0), dtype=torch.float64) * 2 * math.pi
    assert diagnostics.knn_entropy(u + 2 * math.pi, period=2 * math.pi) == pytest.approx(math.log(4 * math.pi ** 2), abs=0.1)
    s = 0.3
    z = torch.randn(3, 8000, 2, generator=gen(1), dtype=torch.float64) * s
    h = diagnostics.knn_entropy(z)
    assert h.shape == (3,)
    np.testing.assert_allclose(h, math.log(2 * math.pi * math.e * s * s), atol=0.1)
    # periodic distances matter: points hugging both edges of the box are neighbours
    edge = torch.tensor([[0.01, 1.0], [2 * math.pi - 0.01, 1.0], [3.0, 3.0]], dtype=torch.float64)
    assert diagnostics.knn_entropy(edge, period=2 * math.pi) < diagnostics.knn_entropy(edge)
    with pytest.raises(ConfigError, match="coincident"):
        diagnostics.knn_entropy(torch.zeros(5, 2))
    with pytest.raises(ConfigError, match="N > k"):
        diagnostics.knn_entropy(torch.zeros(1, 2))


def test_langevin_step_is_chizats_update(gen):
    """With dt = η/2 and β = 1/τ our step is X ← X − η∇Ψ + √(2ητ)ζ (the docstring's mapping)."""
    from meanfield.dynamics import ParticleDynamics

    task = TorusMMD.random(10, generator=gen(0))
    eta, tau = 0.08, 0.1
    x = torch.rand(1, 50, 2, generator=gen(1), dtype=torch.float64) * 2 * math.pi
    dyn = ParticleDynamics(task, dt=eta / 2, beta=1 / tau)
    new, info = dyn.step(dyn.init(x, seed=3))
    zeta = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = x - eta * evaluate(task, x).grad + math.sqrt(2 * eta * tau) * zeta
    torch.testing.assert_close(new.theta, expected, rtol=1e-12, atol=1e-12)


def test_small_mode_decays_faster_for_larger_tau_and_annealing_wins(small_run):
    fit = json.loads((small_run / "fit.json").read_text())
    rates = [v["rate_per_iteration"] for v in fit["fixed_tau"].values()]
    # measured (scale=small, 4 seeds): 0.024, 0.036, 0.175 per iteration; full mode (10 seeds):
    # 0.0089, 0.044, 0.14
    assert fit["rates_increase_with_tau"] and all(r > 0 for r in rates)
    # annealed noisy GD ends below noiseless GD (measured: 0.039 vs 0.23, every seed)
    assert fit["annealed_below_noiseless"] and fit["annealed_below_noiseless_fraction"] >= 0.75
    assert fit["annealed"]["final_risk_mean"] < 0.5 * fit["noiseless"]["final_risk_mean"]
    m = io.read_metrics(small_run / io.METRICS)
    assert set(np.unique(m["run"]).astype(int)) == {0, 1, 2, 3, 4}
    # the noise is off from iteration 240: τ recorded as 0 there, the entropy no longer estimated
    assert (m["tau"][m["step"] >= 240] == 0).all() and np.isnan(m["entropy"][m["step"] >= 240]).all()
    k0 = (m["run"] == 1) & (m["step"] < 240)
    assert (m["tau"][k0] == pytest.approx(0.1)) and np.isfinite(m["entropy"][k0]).all()
    for f in ("free_energy.png", "annealing.png", "particles.png"):
        assert (small_run / "figures" / f).stat().st_size > 10_000


def test_small_mode_reports_each_rate_with_its_floor_rule_interval_and_mean_field_asymptote(small_run):
    """Every fixed-τ rate comes with its 95 % bootstrap interval over seeds, the number of
    iterations fitted, the rate under the other noise-floor rule (the seed mean's standard
    error instead of its fluctuation in time) and their relative difference, and the mean-field
    limit's asymptotic rate per iteration: 2μ₁·dt from the spectrum of the grid PDE linearised
    at its Gibbs state (ξ = 1, β = 1/τ) on 12² and 16² cells here.  The asymptotic rates
    increase with τ; the one at τ = 0.1 on 12² equals an independent spectral computation
    scaled by dt (a per-unit-time rate reported as per iteration would be 25× off)."""
    from meanfield.experiments.mfld_torus import Config
    from meanfield.pde.grid2d_spectrum import spectral_sequence

    fit = json.loads((small_run / "fit.json").read_text())
    finest = []
    for label, v in fit["fixed_tau"].items():
        rules = v["floor_rules"]
        assert set(rules) == {"window_sd", "seed_se", "floor_sensitivity"}
        assert v["rate_per_iteration"] == rules["window_sd"]["rate"]
        lo, hi = v["ci95"]
        assert lo <= v["rate_per_iteration"] <= hi and v["fit_points"] >= 3
        r = [rules[k]["rate"] for k in ("window_sd", "seed_se")]
        assert rules["floor_sensitivity"] == pytest.approx(max(r) / min(r) - 1)
        mf = v["mean_field_asymptotic"]
        assert mf["cells"] == [12, 16] and mf["mass_mode_max"] < 1e-10
        np.testing.assert_allclose(mf["rate_free_energy"], 2 * np.array(mf["rate_density"]), rtol=1e-12)
        finest.append(mf["rate_free_energy"][-1])
    assert np.all(np.diff(finest) > 0), finest
    cfg = Config.build(None, ["scale=small"])
    task = TorusMMD.random(cfg.n_targets, generator=torch.Generator().manual_seed(cfg.target_seed),
                           modes=cfg.modes)
    seq = spectral_sequence(task, [12], 1 / 0.1, xi=1.0)
    assert fit["fixed_tau"]["tau=0.1"]["mean_field_asymptotic"]["rate_free_energy"][0] == \
        pytest.approx(2 * seq["mu"][0, 0] * cfg.dt, rel=1e-9)


def test_decay_rate_floor_rules_recover_a_known_rate(gen):
    """F̄(k) − F^∞ = 0.5 e^{−0.05 k} plus seed noise of s.d. 0.01 (10 seeds, stationary from
    k = 300): both floor rules fit until the gap meets 5 × their floor and recover 0.05 within
    their bootstrap intervals; a slower truth (0.04) lies outside them."""
    from meanfield.analysis import decay

    k = np.arange(0, 800)
    noise = 0.01 * torch.randn(len(k), 10, generator=gen(3), dtype=torch.float64).numpy()
    F = 0.5 * np.exp(-0.05 * k)[:, None] + noise
    rules = decay.decay_rate_rules(k, F, 800, n_boot=300)
    for rule in decay.FLOOR_RULES:
        v = rules[rule]
        assert v["ci95"][0] <= 0.05 <= v["ci95"][1], (rule, v)
        assert v["rate"] == pytest.approx(0.05, rel=0.1) and not v["ci95"][0] <= 0.04 <= v["ci95"][1]
        assert 40 < v["fit_until"] < 120 and v["points"] == v["fit_until"] + 1
    with pytest.raises(ConfigError, match="floor"):
        decay.decay_rate(k, F, 800, floor="none")


def _mmd_and_knn_entropy(theta, targets, weights, modes=5, period=2 * math.pi):
    """An independent recomputation for θ [N, 2]: the MMD² from explicit numpy kernel matrices
    k(x, y) = ∏_c (1 + 2 Σ_{k≤K} cos(k(x_c − y_c))/(1 + k)), and the 1-NN Kozachenko–Leonenko
    entropy ψ(N) − ψ(1) + log π + (2/N) Σ log ε_i with ε_i from scipy's periodic cKDTree."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    def K(x, y):
        d = x[:, None, :] - y[None, :, :]
        ks = np.arange(1, modes + 1)
        return np.prod(1 + 2 * (np.cos(d[..., None] * ks) / (1 + ks)).sum(-1), -1)

    n = len(theta)
    R = K(theta, theta).mean() - 2 * (K(theta, targets) @ weights).mean() + weights @ K(targets, targets) @ weights
    eps = cKDTree(np.mod(theta, period), boxsize=period).query(np.mod(theta, period), k=2)[0][:, 1]
    H = digamma(n) - digamma(1) + math.log(math.pi) + 2 * np.log(eps).mean()
    return R, H


def test_recorded_free_energy_matches_an_independent_recomputation(small_run):
    """F = ½R − τĤ of run 1 (τ = 0.1), recomputed from the saved particle snapshots by other
    code (numpy kernel matrices, scipy's KD-tree) at every snapshot the curves also record:
    with noise (Ĥ estimated) and after noise_off (F = ½R)."""
    with np.load(small_run / "curves.npz") as z:
        k, R, H, F = z["k_run1"], z["R_run1"], z["H_run1"], z["F_run1"]
    with np.load(small_run / io.PARTICLES) as z:
        steps, theta = z["phase1_step"], z["phase1_theta"]             # (S,), (S, B, N, 2)
        targets, weights = z["targets"], z["target_weights"]
    row = {int(s): i for i, s in enumerate(k)}
    common = [(j, row[int(s)]) for j, s in enumerate(steps) if int(s) in row]
    assert len(common) > 20 and any(k[i] >= 240 for _, i in common) and any(k[i] < 240 for _, i in common)
    for j, i in common[::5]:
        for b in range(theta.shape[1]):
            R_ref, H_ref = _mmd_and_knn_entropy(theta[j, b], targets, weights)
            assert R[i, b] == pytest.approx(R_ref, rel=1e-9, abs=1e-12)
            if k[i] < 240:
                assert H[i, b] == pytest.approx(H_ref, rel=1e-9)
                assert F[i, b] == pytest.approx(0.5 * R_ref - 0.1 * H_ref, rel=1e-9, abs=1e-12)
            else:
                assert F[i, b] == pytest.approx(0.5 * R_ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("sets, needle", [
    (["d=3"], "d must be 2"),
    (["taus=0.1,-1"], "taus must be numbers > 0"),
    (["taus=a"], "taus must be comma-separated numbers"),
    (["noise_off=2000"], "noise_off must be in [1, steps]"),
])
def test_bad_config_is_one_line_and_status_2(tmp_path, capsys, sets, needle):
    argv = ["run", "mfld-torus", "--out", str(tmp_path / "r")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
