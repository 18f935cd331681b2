# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 — How the risk of N particles approaches its mean-field limit
#
# The mean-field network is a measure ρ; a network of N units is the empirical measure
# ρ_N = (1/N) Σ_i δ_{θ_i}. With R(ρ) = R_# + 2 ∫ V dρ + ∬ U dρ dρ (no ½, docs/design.md §1), the
# question is how fast R(ρ_N) reaches the mean-field value R_∞ = inf_ρ R(ρ) as N grows, and what
# exponent a log-log fit of the gap R_N − R_∞ against N gives.
#
# **Two ways of getting N atoms.**
#
# 1. *Sampling.* Draw θ_1, …, θ_N i.i.d. from a law ρ. Since
#    E ∬ U dρ_N dρ_N = (1/N) ∫ U(θ, θ) dρ + (1 − 1/N) ∬ U dρ dρ, the excess is exactly
#
#      E R(ρ_N) − R(ρ) = K(ρ)/N,   K(ρ) = ∫ U(θ, θ) dρ − ∬ U dρ dρ = E_x Var_{θ∼ρ} φ(x; θ).
#
#    This is the argument behind Mei–Montanari–Nguyen's (PNAS 2018, arXiv:1804.06561) bound
#    |inf R_N − inf R| ≤ K/N: a 1/N law, slope −1 on log-log axes.
# 2. *Training.* Run gradient descent on the N particles. Its end point is (close to) a
#    minimiser over N-atom measures, which can beat i.i.d. samples: 1/N is an upper bound for
#    inf R_N − inf R, not a law (placing atoms well is quadrature, sampling them is Monte Carlo).
#
# **The task** (the `n-scaling` experiment, see `meanfield config n-scaling` and
# docs/sweeps.md): ReLU units φ(x; θ) = a relu(⟨w, x⟩), x ~ N(0, I_d), closed-form population
# risk. The teacher is a *law*: m0 atoms a\* = 1, w\*_k ~ N(0, diag(σ²)) with σ from 1 down to
# 0.2, weights 1/m0. Its network tends to the ellipsoidal norm ‖diag(σ) x‖/√(2π), which no finite
# student represents, while the teacher's law itself has R = 0. So R_∞ = 0 and the gap is R_N
# itself (Chizat–Bach 2018: for these 2-homogeneous units a Wasserstein gradient flow that
# converges, converges to a global minimiser).
#
# `MEANFIELD_SMALL=1` shrinks the run (the test suite executes this file that way).

# %%
import json
import os
import sys
import shutil
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw off-screen (Jupyter shows figures inline)
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from meanfield import diagnostics, io  # noqa: E402
from meanfield import runner  # noqa: E402
from meanfield.experiments import get_experiment  # noqa: E402

torch.set_num_threads(1)        # small batched pair sums: one thread is faster on shared cores
SMALL = os.environ.get("MEANFIELD_SMALL") == "1"
# outputs beside this notebook, whatever the working directory (Jupyter runs a notebook in
# its own folder; a script knows its __file__): notebooks/_out/, ignored by git
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MEANFIELD_NOTEBOOK_OUT", HERE / "_out")) / "03_n_dependence"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The experiment's configuration
# Small mode: the `scale=small` preset (d = 4, m0 = 2000, N = 8 … 128 in 4 values, 4 seeds,
# dt = 1, 300 steps). Full mode: the full preset (d = 5, m0 = 20 000, 8 seeds, dt = 1,
# 1000 steps) restricted to N = 10 … 215 (5 values); the seeds depend on (seed, N) only, so these
# are the first five N of the README's full run (N up to 1000, ~4 min on this machine); this
# notebook's full mode took 100 s (2026-12-04; 4 min 44 s earlier on a busier machine).

# %%
exp = get_experiment("n-scaling")
sets = ["scale=small"] if SMALL else ["scale=full", "N=215", "n_values=5"]
cfg = exp.Config.build(None, sets)
task = exp.teacher_task(cfg)                 # the teacher law ρ*: m0 atoms, weights 1/m0
print(f"d = {cfg.d}, m0 = {cfg.m0}, N grid = {cfg.grid()}, {cfg.replicas} seeds, "
      f"T = {cfg.steps * cfg.dt:g}")

# %% [markdown]
# ## Baseline: i.i.d. samples of the teacher's law (the 1/N law, exactly)
# Draw N atoms with replacement from the teacher's m0 atoms and evaluate the exact risk with
# `diagnostics.risk`. For ReLU units U(θ, θ) = E[a² relu(⟨w, x⟩)²] = a²|w|²/2, and
# ∬ U dρ* dρ* = R_# (the teacher *is* ρ*), so K* = Σ_k m_k a_k²|w_k|²/2 − R_#, and E R = K*/N
# with no remainder. We fit the slope with `diagnostics.loglog_rate` (least squares on the
# log of the means, 95 % percentile bootstrap over the draws at each N). The risks are
# evaluated in float32 (the backend's fused loop, ~20× faster than float64 here): R_#'s
# cancellation leaves an absolute error ~10⁻⁸, far below R ≥ 10⁻⁴. The law of R(ρ_N) is skewed
# (its median is ~0.8 of its mean), so the mean needs a few hundred draws.

# %%
N_IID = [8, 32, 128, 512] if SMALL else [10, 32, 100, 316, 1000]
B_IID = 256
theta_t, w_t = task.teacher(torch.float64)                       # [m0, D], [m0]
g = torch.Generator().manual_seed(1)
iid = []
for n in N_IID:
    idx = torch.randint(cfg.m0, (B_IID, n), generator=g)
    r, _ = diagnostics.risk(task, theta_t[idx].float())          # [B] exact risks
    iid.append(r.double().numpy())
# R_# is computed (a pair sum over the teacher) on the first risk evaluation
K_teacher = float((w_t * theta_t[:, 0] ** 2 * (theta_t[:, 1:] ** 2).sum(-1) / 2).sum()) - task.risk_sharp
iid_fit = diagnostics.loglog_rate(N_IID, iid, n_boot=1000, seed=0)
iid_ratio = np.array([n * s.mean() / K_teacher for n, s in zip(N_IID, iid)])
print(f"R_# = E y² = {task.risk_sharp:.4f},  K* = E_x Var φ = {K_teacher:.4f}")
for n, s, q in zip(N_IID, iid, iid_ratio):
    print(f"N = {n:5d}: mean R = {s.mean():.3e} ± {s.std(ddof=1) / np.sqrt(B_IID):.1e},  N·R/K* = {q:.3f}")
print("i.i.d. slope {slope:.3f}, 95 % bootstrap interval [{ci95[0]:.3f}, {ci95[1]:.3f}]".format(**iid_fit))

# %% [markdown]
# ## Trained particles: the `n-scaling` experiment
# For every N, `cfg.replicas` independent seeds advance together (θ [R, N, D]) under population
# GD θ ← θ − 2 dt ∇Ψ(θ; ρ_N), from a_i ~ N(0, 1), w_i ~ N(0, I_d/d); t = k·dt. The final risk
# is re-evaluated in float64. The run writes results.csv (per N: gaps per seed, mean, s.d., the
# i.i.d. references), fit.json (slope, bootstrap interval, slopes at T/4 and T/2) and
# figures/n_scaling.png.

# %%
run_dir = OUT / "run"
if run_dir.exists():
    shutil.rmtree(run_dir)
runner.run(exp, cfg, run_dir, progress=False)
res = io.read_metrics(run_dir / "results.csv")
fit = json.loads((run_dir / "fit.json").read_text())
Ns = np.array(res["N"], dtype=float)
seeds = sorted(k for k in res if k.startswith("gap_r"))
gaps = np.stack([np.asarray(res[k], float) for k in seeds], -1)          # [n_N, R]
gd_fit = diagnostics.loglog_rate(Ns, list(gaps), n_boot=cfg.n_boot, seed=cfg.seed)
print(" N      gap (mean)  s.d.      N·gap    i.i.d. limit law  i.i.d. teacher  (R(0.9T)−R(T))/R(T)")
for i, n in enumerate(Ns):
    print(f"{int(n):4d}   {res['gap_mean'][i]:.2e}   {res['gap_sd'][i]:.1e}   "
          f"{n * res['gap_mean'][i]:.2e}   {res['iid_limit'][i]:.2e}          "
          f"{res['iid_teacher'][i]:.2e}        {res['rel_change_last10'][i]:.3f}")
print("GD slope {slope:.3f}, 95 % bootstrap interval [{ci95[0]:.3f}, {ci95[1]:.3f}]".format(**gd_fit))
print("slope fitted at t =", {t: round(s, 3) for t, s in fit["slope_vs_T"].items()})
print(f"GD beats i.i.d. sampling of its own limit law at every N: {fit['gd_beats_iid']} "
      f"(gap / i.i.d. excess at N_max = {fit['gap_over_iid_at_Nmax']:.1e})")
free = fit["R_inf_free_fit"]                                 # {"error": …} when curve_fit failed
print("free fit R_∞ + C N^α:", free.get("error") or
      "R_∞ = {R_inf:.1e} ± {R_inf_se:.1e}, α = {alpha:.2f}".format(**free))

# %% [markdown]
# ## The fitted slope along training
# The same fit at every logged time t, from the per-seed risks in metrics.csv (float32; their
# ~10⁻⁸ absolute error is far below the gaps). At t = 0 the risk is that of the random
# initialisation, nearly independent of N (slope ≈ 0); the N-dependence only shows once the
# limiting flow's own risk R_∞(t) has fallen below the finite-N gap. After that the slope keeps
# steepening: the larger N converge more slowly, so R_N(T) at finite T overstates inf R_N most
# at the largest N; the drift suggests that inf R_N falls at least as steeply as the slope at T
# (as docs/sweeps.md concludes from the same drift).

# %%
met = io.read_metrics(run_dir / io.METRICS)
rcols = sorted(k for k in met if k.startswith("risk_r"))
steps = sorted(set(int(s) for s in met["step"]))
slope_t = []
for s in steps:
    rows = [np.stack([met[k][(met["N"] == n) & (met["step"] == s)] for k in rcols], -1).ravel() for n in Ns]
    f = diagnostics.loglog_rate(Ns, rows, n_boot=200, seed=0)
    slope_t.append((s * cfg.dt, f["slope"], *f["ci95"]))
slope_t = np.array(slope_t)                                               # [K, 4]: t, slope, lo, hi
for t, s, lo, hi in slope_t[:: max(1, len(slope_t) // 6)]:
    print(f"t = {t:6g}: slope {s:6.3f}  [{lo:.3f}, {hi:.3f}]")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
ax = axes[0]
ax.loglog(np.repeat(Ns, gaps.shape[1]), gaps.ravel(), ".", color="C0", alpha=0.35, ms=5)
ax.loglog(Ns, gaps.mean(-1), "o", color="C0", label="GD, seed mean")
ax.loglog(Ns, np.exp(gd_fit["intercept"]) * Ns ** gd_fit["slope"], "-", color="C0",
          label="GD fit: slope {:.2f} [{:.2f}, {:.2f}]".format(gd_fit["slope"], *gd_fit["ci95"]))
n_iid = np.array(N_IID, float)
ax.errorbar(n_iid, [s.mean() for s in iid], [2 * s.std(ddof=1) / np.sqrt(B_IID) for s in iid],
            fmt="s", color="C2", ms=4, label="i.i.d. from teacher law: slope {:.2f} [{:.2f}, {:.2f}]"
            .format(iid_fit["slope"], *iid_fit["ci95"]))
ax.loglog(n_iid, K_teacher / n_iid, ":", color="C2", label="K*/N (exact expectation)")
ax.loglog(Ns, res["iid_limit"], "--", color="C1", label="i.i.d. from GD's limit law, K_lim/N")
ax.set_xlabel("N")
ax.set_ylabel("R_N − R_∞  (R_∞ = 0)")
ax.set_title(f"risk gap at T = {cfg.steps * cfg.dt:g} against N", fontsize=10)
ax.set_ylim(top=60 * max(res["iid_limit"]))                          # room for the legend
ax.legend(frameon=False, fontsize=7, loc="upper right")
ax = axes[1]
ax.semilogx(Ns, Ns * gaps.mean(-1) / (Ns * gaps.mean(-1))[0], "o-", color="C0", label="GD")
ax.semilogx(n_iid, iid_ratio, "s-", color="C2", label="i.i.d. from teacher law (÷ K*)")
ax.axhline(1.0, color="k", lw=0.6)
ax.set_ylim(0, 1.3)
ax.set_xlabel("N")
ax.set_ylabel("N · gap, normalised")
ax.set_title("compensated: flat = exactly 1/N", fontsize=10)
ax.legend(frameon=False, fontsize=8)
ax = axes[2]
ax.plot(slope_t[:, 0], slope_t[:, 1], ".-", color="C0", label="fitted slope")
ax.fill_between(slope_t[:, 0], slope_t[:, 2], slope_t[:, 3], color="C0", alpha=0.25,
                label="95 % bootstrap")
ax.axhline(-1.0, color="k", ls="--", lw=0.8, label="−1 (i.i.d. sampling)")
ax.set_xlabel("t (MMN time, t = k·dt)")
ax.set_ylabel("slope of log R_N(t) in log N")
ax.set_title("the fitted slope along training", fontsize=10)
ax.legend(frameon=False, fontsize=8)
for a in axes:
    a.grid(alpha=0.3, which="both")
fig.tight_layout()
fig.savefig(OUT / "n_dependence.png", dpi=110)

# %% [markdown]
# The run directory's own figure (figures/n_scaling.png) adds the seed-to-seed spread against N
# and R_N(t) for every N.
#
# What we check (the test suite runs this notebook in small mode):
# - i.i.d. sampling follows its exact 1/N law. Small mode (N = 8 … 512, 256 draws each): slope
#   −1.003 [−1.032, −0.975], N·E R/K* between 0.96 and 1.00. Full mode (N = 10 … 1000): slope
#   −0.996 [−1.017, −0.976], N·E R/K* between 0.94 and 1.03.
# - Trained particles do better than 1/N. Small mode: the gap falls from 8.3e-4 to 2.0e-5 as
#   N goes from 8 to 128, slope −1.37 [−1.43, −1.28]; N·gap falls by a factor 2.7, and at N = 128
#   GD beats i.i.d. sampling of its own limit law by a factor 820. The slope steepens with T:
#   −0.99, −1.21, −1.37 at T/4, T/2, T (the risk still falls by up to 6 % over the last 10 %).
# - Full mode (N = 10 … 215, 8 seeds, d = 5, m0 = 20 000, T = 1000; 100 s wall here): gaps
#   1.0e-3, 2.3e-4, 9.2e-5, 3.7e-5, 1.5e-5 (docs/sweeps.md's values at these N), slope −1.34
#   [−1.42, −1.26]; at T/4, T/2, T the slope is −1.22, −1.28, −1.34. docs/sweeps.md's run to
#   N = 1000 gives −1.26 [−1.30, −1.21]: its extra points N = 464, 1000 are the least converged,
#   so they flatten the fit.
# - At t = 0 the slope is −0.19 [−0.34, 0.01] (small mode) and −0.09 [−0.14, −0.03] (full
#   mode): no N-dependence yet.

# %%
assert abs(iid_fit["slope"] + 1) < 0.06 and iid_fit["half_width"] < 0.1, iid_fit
assert np.all(np.abs(iid_ratio - 1) < 0.15), iid_ratio
means = gaps.mean(-1)
assert np.all(np.diff(means) < 0), means                         # the gap falls with N …
assert np.all(np.diff(Ns * means) < 0), Ns * means               # … faster than 1/N
assert -1.6 < gd_fit["slope"] < -1.05, gd_fit
assert gd_fit["ci95"][0] < gd_fit["slope"] < gd_fit["ci95"][1] and gd_fit["half_width"] < 0.15, gd_fit
assert abs(gd_fit["slope"] - fit["gap"]["slope"]) < 1e-9          # the notebook's fit is the run's
assert fit["gd_beats_iid"] and np.all(means < np.asarray(res["iid_teacher"]))
sv = [fit["slope_vs_T"][k] for k in sorted(fit["slope_vs_T"], key=float)]
assert sv[0] > sv[1] > sv[2], sv                                  # steeper as T grows
assert abs(slope_t[0, 1]) < 0.2, slope_t[0]                       # at t = 0: no N-dependence yet
for name in ("n_dependence.png", "run/figures/n_scaling.png"):
    assert (OUT / name).stat().st_size > 5000, name
