"""n-scaling: how the trained risk of N particles approaches its N → ∞ value (population GD).

Task: teacher-student with ReLU units φ(x; θ) = a relu(⟨w, x⟩), x ~ N(0, I_d), closed-form
population risk (DESIGN.md §1: R = E[(y − f)²], no ½).  The teacher is a *smooth law*, not a
few units: m0 = 20 000 units (a*_k = 1, weights 1/m0) with w*_k ~ N(0, diag(σ_1², …, σ_d²)),
σ_j evenly spaced from 1 down to ``teacher_std_min``, drawn once with ``teacher_seed``.  As
m0 → ∞ its network tends to f*(x) = ‖diag(σ) x‖ / √(2π) (w*·x ~ N(0, ‖diag(σ) x‖²)), an
ellipsoidal norm — not piecewise linear, so no finite student represents it exactly, while
the teacher's law itself is a measure with R = 0:

    R_∞ := inf_ρ R(ρ) = 0,      gap_N := R_N(T) − R_∞ = R_N(T).

(Chizat–Bach 2018: for these 2-homogeneous units a Wasserstein gradient flow that converges
converges to a global minimiser, so the N → ∞ limit of GD reaches R_∞.)  We also fit
R_N = R_∞ + C N^α to the seed means (``scipy.optimize.curve_fit``) and report the fitted R_∞
as a consistency check.

Student: for every N of a geometric grid from ``N_min`` to ``N`` (``n_values`` values),
``replicas`` independent seeds advance together (θ [R, N, D], one batched step), a_i ~
N(0, init_a_std²), w_i ~ N(0, init_std²/d I_d), population GD θ ← θ − 2 dt ∇Ψ(θ; ρ_N) for
``steps`` steps (T = steps·dt).  The final risk is re-evaluated in float64 (the float32 run
loop's risk has ~10⁻⁷ relative error from R_#'s cancellation, comparable to the large-N gap).
Convergence is reported, not assumed: ``rel_change_last10`` = (R(0.9T) − R(T))/R(T).

References computed in the same run (ρ_lim: the final particles at the largest N, pooled over
seeds, standing for the limiting law; ρ*: the teacher's law):

* i.i.d. sampling excess: drawing θ_1..θ_N i.i.d. from ρ gives E R(ρ_N) − R(ρ) =
  (1/N) E_x Var_ρ φ(x; θ) = (1/N) [∫ U(θ, θ) dρ − ∬ U dρ dρ], U(θ, θ) = a²|w|²/2 (ReLU);
  reported for ρ_lim (``iid_limit``) and ρ* (``iid_teacher``; R(ρ*) = 0 so it is the whole risk).
* Mei–Montanari–Nguyen (PNAS 2018) Prop. 1: |inf R_N − inf R| ≤ K/N, with (as recalled, the
  text not re-checked here) K bounding U(θ, θ) = E φ(x; θ)² on the support used — its proof is
  the i.i.d. argument above with ∫U(θ,θ)dρ ≤ sup U(θ,θ).  ReLU units are unbounded, so we
  take K = max_i U(θ_i, θ_i) over ρ_lim's support (``mmn_K``).

Fits: slope of log(seed-mean gap) against log N (``scipy.stats.linregress``) with a 95 %
percentile bootstrap interval (``scipy.stats.bootstrap``, seeds resampled within each N), and
the slope of the seed-to-seed standard deviation.  1/N is an upper bound, not a law: trained
particles can do better than i.i.d. samples (approximation theory allows faster decay), and
the run reports whether they do (``gd_beats_iid``: gap < iid_limit at every N).

Defaults (full mode): d = 5, σ from 1 to 0.2, m0 = 20 000, N from 10 to 1000 (7 values),
8 seeds, dt = 1, 1000 steps (T = 1000; dt = 2 oscillated, dt = 1 tracked dt = 0.5 to 2 % at
N = 200).  The risk is still creeping down at T (see ``rel_change_last10``), so fit.json also
gives the slope fitted at T/4 and T/2 (``slope_vs_T``, float32 seed means): its drift shows
how far R_N(T) is from inf R_N.  ``scale=small`` (CI): d = 4, m0 = 2000, N from 8 to
128 (4 values), 4 seeds, 300 steps.  Outputs: metrics.csv (per N and logged step: seed-mean
and per-seed risk), results.csv (per N: final gaps per seed, mean, sd, references,
convergence), fit.json (slopes, intervals, R_∞ fit, references' constants), particles.npz
(t, step [K]; theta [K, R, N_max, D]: the largest N every ``save_every`` steps, its movie;
theta_N<N> at T for every N;
teacher arrays), figures/n_scaling.png.  Resumable: finished N values are kept in the
checkpoint, the current one continues from its last checkpoint (bit for bit: GD has no
randomness after the initial draw).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..seeds import derive_generator
from .. import io
from ..diagnostics import loglog_rate
from ..dynamics import ParticleState, gradient_flow
from ..errors import ConfigError
from ..interact import evaluate
from ..models import TeacherStudent, Unit
from .config import TwoLayerConfig, check_n_grid, geometric_grid
from .particles import legacy_entries, size_phase
from .plan import Plan, snapshot_arrays

NAME = "n-scaling"
VIEWS = ("cloud", "plane")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "m0=100", "N=30", "n_values=3", "steps=20", "log_every=5",
        "checkpoint_every=10", "n_boot=100")

SMALL = {"N": 128, "N_min": 8, "n_values": 4, "replicas": 4, "d": 4, "m0": 2000, "steps": 300,
         "log_every": 25, "save_every": 6, "checkpoint_every": 150, "n_boot": 500}


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of n-scaling (see the module docstring): N the largest and N_min the smallest
    particle count of a geometric grid of n_values values, replicas seeds per N, the
    teacher's m0 units drawn with teacher_seed and axis scales from 1 down to
    teacher_std_min, the student's init_std (w) and init_a_std (a), n_boot bootstrap
    resamples; ``scale=small`` swaps in ``SMALL``."""

    scale: str = "full"
    N: int = 1000
    N_min: int = 10
    n_values: int = 7
    d: int = 5
    replicas: int = 8
    m0: int = 20_000
    teacher_seed: int = 0
    teacher_std_min: float = 0.2
    dt: float = 1.0
    steps: int = 1000
    init_std: float = 1.0
    init_a_std: float = 1.0
    log_every: int = 25
    save_every: int = 20          # snapshots of the largest N (51: its movie); other N at 0, T
    checkpoint_every: int = 250
    n_boot: int = 2000

    _choices = {"scale": ("full", "small")}
    _presets = {"scale": {"small": SMALL}}
    # more steps continue every N from its final state (GD is deterministic)
    resume_mutable = ("steps", "checkpoint_every", "backend")

    def validate(self):
        """TwoLayerConfig's checks, then (``ConfigError``): 1 ≤ N_min < N; n_values ≥ 3 and at
        least 3 distinct N in :meth:`grid`; replicas ≥ 2; m0 ≥ 1; teacher_seed ≥ 0;
        teacher_std_min in (0, 1]; init_std, init_a_std finite and > 0; n_boot ≥ 100."""
        super().validate()
        check_n_grid(self)
        self.check_bounds(at_least_one=("m0",), nonnegative_ints=("teacher_seed",))
        if not (math.isfinite(self.teacher_std_min) and 0 < self.teacher_std_min <= 1):
            raise ConfigError(f"teacher_std_min must be in (0, 1], got {self.teacher_std_min}")
        self.check_bounds(positive=("init_std", "init_a_std"))

    def grid(self) -> list[int]:
        """N values: ``config.geometric_grid(N_min, N, n_values)``."""
        return geometric_grid(self.N_min, self.N, self.n_values)


def teacher_task(cfg: Config) -> TeacherStudent:
    """The teacher: m0 units a* = 1, w*_k ~ N(0, diag(σ²)), σ_j = linspace(1, σ_min, d); weights 1/m0."""
    g = torch.Generator().manual_seed(cfg.teacher_seed)
    sig = torch.linspace(1.0, cfg.teacher_std_min, cfg.d, dtype=torch.float64)
    w = torch.randn(cfg.m0, cfg.d, generator=g, dtype=torch.float64) * sig
    theta = torch.cat([torch.ones(cfg.m0, 1, dtype=torch.float64), w], -1)
    return TeacherStudent(Unit(cfg.d, "relu", output_weight=True), theta)


def initial_state(cfg: Config, dyn, N: int) -> ParticleState:
    """θ [R, N, 1 + d]: a ~ N(0, init_a_std²), w ~ N(0, init_std²/d I); generator derived from (seed, "N", N)."""
    gen = derive_generator(cfg.seed, "N", N)
    R, d = cfg.replicas, cfg.d
    a = cfg.init_a_std * torch.randn(R, N, 1, generator=gen, dtype=torch.float64)
    w = torch.randn(R, N, d, generator=gen, dtype=torch.float64) * (cfg.init_std / math.sqrt(d))
    return dyn.init(torch.cat([a, w], -1).to(getattr(torch, cfg.dtype)), generator=gen)


def warmup(cfg) -> None:
    """Compile the pair-sum code a run of ``cfg`` uses (native loop or KeOps formula for the
    ReLU kernel in cfg.dtype, d = cfg.d) on a tiny teacher-student, without the 20 000-unit
    teacher's R_# (``meanfield sweep`` calls this in the parent before fanning out)."""
    g = torch.Generator().manual_seed(0)
    unit = Unit(cfg.d, "relu", output_weight=True)
    task = TeacherStudent.random(unit, 2, generator=g)
    theta = torch.randn(1, 8, unit.D, generator=g, dtype=torch.float64).to(getattr(torch, cfg.dtype))
    evaluate(task, theta, backend=cfg.backend)


def iid_constant(task: TeacherStudent, theta: torch.Tensor, backend="auto") -> np.ndarray:
    """E_x Var_ρ φ(x; θ) = ∫ U(θ,θ) dρ − ∬ U dρ dρ per replica [B] for ρ = uniform on θ [B, N, D]
    (float64).  U(θ, θ) = a² |w|² / 2 for ReLU; ∬U = Σ_i m_i (Ψ_i − V_i)."""
    th = theta.double()
    pot = evaluate(task, th, backend=backend)
    self_u = (th[..., 0] ** 2 * (th[..., 1:] ** 2).sum(-1) / 2).mean(-1)
    cross = (pot.psi - pot.V).mean(-1)
    return (self_u - cross).numpy()


def plan(cfg: Config) -> Plan:
    """One phase per N of the grid (seeds as replicas), population GD from
    :func:`initial_state`; the final risk re-evaluated in float64 (``risk64``); results:
    metrics.csv, results.csv, fit.json, particles.npz (module docstring)."""
    task = teacher_task(cfg)
    grid = cfg.grid()
    keys = {N: f"N={N}" for N in grid}

    def phases(shared):
        dyn = gradient_flow(task, dt=cfg.dt, backend=cfg.backend)

        def final(state):
            pot = evaluate(task, state.theta.double(), backend=cfg.backend)
            return pot.risk, {"risk64": pot.risk.numpy().copy()}

        return [size_phase(keys[N], {"N": N}, lambda N=N: (dyn, initial_state(cfg, dyn, N)),
                           label=f"N={N}", final=final,
                           snapshot_steps=None if N == grid[-1] else (0,)) for N in grid]

    def results(ctx):
        done = legacy_entries(ctx, keys)
        k_limit = iid_constant(task, done[grid[-1]]["state"]["theta"], cfg.backend)
        return _write_results(cfg, ctx, task, done, k_limit)

    return Plan(phases=phases, results=results, primary=keys[grid[-1]],
                record={"task": task.to_dict(), "N_grid": grid})


def _write_results(cfg, ctx, task, done, k_limit):
    out = ctx.out
    from scipy.optimize import OptimizeWarning, curve_fit
    from scipy.stats import linregress

    grid = cfg.grid()
    T = cfg.steps * cfg.dt
    tt, tw = task.teacher(torch.float64)
    k_teacher = float((tw * tt[:, 0] ** 2 * (tt[:, 1:] ** 2).sum(-1) / 2).sum()) - task.risk_sharp
    th_lim = done[grid[-1]]["state"]["theta"].double()
    mmn_k = float((th_lim[..., 0] ** 2 * (th_lim[..., 1:] ** 2).sum(-1) / 2).max())
    K_lim = float(np.mean(k_limit))
    metrics, results, gaps = [], [], []
    for N in grid:
        e = done[N]
        metrics.extend(e["rows"])
        gap = np.asarray(e["risk64"], float)                 # R_∞ = 0
        gaps.append(gap)
        rows = e["rows"]
        i90 = min(range(len(rows)), key=lambda i: abs(rows[i]["step"] - 0.9 * cfg.steps))
        rel = (rows[i90]["risk"] - rows[-1]["risk"]) / rows[-1]["risk"]
        res = {"N": N, "gap_mean": float(gap.mean()), "gap_sd": float(gap.std(ddof=1)),
               "iid_limit": K_lim / N, "iid_teacher": k_teacher / N, "mmn_K_over_N": mmn_k / N,
               "rel_change_last10": float(rel)}
        res.update({f"gap_r{b}": float(g) for b, g in enumerate(gap)})
        results.append(res)
    io.write_metrics(out / io.METRICS, metrics)
    io.write_metrics(out / "results.csv", results)
    gap_fit = loglog_rate(grid, gaps, n_boot=cfg.n_boot, seed=cfg.seed)
    sd = np.array([g.std(ddof=1) for g in gaps])
    sd_fit = linregress(np.log(grid), np.log(sd))
    means = np.array([g.mean() for g in gaps])
    try:
        with warnings.catch_warnings():          # a singular covariance is reported as se = inf
            warnings.simplefilter("ignore", OptimizeWarning)
            (r_inf, c, alpha), cov = curve_fit(lambda n, r0, c, a: r0 + c * n ** a, np.array(grid, float),
                                               means, p0=(0.0, means[0] * grid[0], -1.0),
                                               sigma=np.maximum(sd / math.sqrt(cfg.replicas), 1e-300),
                                               maxfev=20_000)
        se = float(math.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) and cov[0, 0] >= 0 else math.inf
        r_inf_fit = {"R_inf": float(r_inf), "R_inf_se": se,
                     "alpha": float(alpha)}
    except (RuntimeError, ValueError) as e:
        r_inf_fit = {"error": str(e)}
    fit = {"N": grid, "T": T, "R_inf": 0.0, "gap": gap_fit,
           "spread": {"slope": float(sd_fit.slope), "slope_se": float(sd_fit.stderr)},
           "R_inf_free_fit": r_inf_fit, "risk_sharp": task.risk_sharp,
           "K_iid_limit": K_lim, "K_iid_teacher": k_teacher, "mmn_K": mmn_k,
           "gd_beats_iid": bool(np.all(means < K_lim / np.array(grid, float))),
           "gap_over_iid_at_Nmax": float(means[-1] / (K_lim / grid[-1])),
           "max_rel_change_last10": float(max(r["rel_change_last10"] for r in results))}
    fit["slope_vs_T"] = _slopes_vs_t(cfg, done)
    io.write_json(out / "fit.json", fit)
    # t, step, theta: the largest N at 0 and T (its phase's snapshots)
    arrays = snapshot_arrays(ctx.done, primary=f"N={grid[-1]}")
    arrays.update({"param_names": np.array(task.param_names), "N_grid": np.array(grid)})
    arrays.update({f"theta_N{N}": done[N]["state"]["theta"].numpy() for N in grid})
    arrays.update(task.arrays())
    io.write_npz(out / io.PARTICLES, arrays)
    return metrics


def _slopes_vs_t(cfg, done) -> dict:
    """Least-squares slope of log(seed-mean float32 risk) vs log N at the logged steps nearest
    T/4, T/2 and T: {"t": slope}."""
    from scipy.stats import linregress

    grid = cfg.grid()
    out = {}
    for frac in (0.25, 0.5, 1.0):
        k = cfg.log_every * round(frac * cfg.steps / cfg.log_every)
        vals = []
        for N in grid:
            rows = done[N]["rows"]
            vals.append(min(rows, key=lambda r: abs(r["step"] - k))["risk"])
        out[f"{k * cfg.dt:g}"] = float(linregress(np.log(grid), np.log(vals)).slope)
    return out


def plot(run_dir, coords=None) -> list[Path]:
    """figures/n_scaling.png: (left) the gap R_N(T) − R_∞ against N, per seed and seed mean,
    with the fitted slope and its bootstrap interval, the i.i.d.-sampling excess of the
    limiting law and of the teacher's law, and MMN's K/N; (middle) the seed-to-seed standard
    deviation against N; (right) the seed-mean risk against t for every N."""
    from ..plotting import pyplot, save_figure

    run_dir = Path(run_dir)
    res = io.read_metrics(run_dir / "results.csv")
    met = io.read_metrics(run_dir / io.METRICS)
    fit = json.loads((run_dir / "fit.json").read_text())
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=120)
    N = res["N"]
    ax = axes[0]
    for k in sorted(k for k in res if k.startswith("gap_r")):
        ax.scatter(N, res[k], s=8, color="C0", alpha=0.35, lw=0)
    ax.plot(N, res["gap_mean"], "o", color="C0", ms=5, label="GD, seed mean")
    g = fit["gap"]
    ax.plot(N, np.exp(g["intercept"]) * N ** g["slope"], "-", color="C0",
            label=f"slope {g['slope']:.2f} [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]")
    ax.plot(N, res["iid_limit"], "--", color="C1", label="i.i.d. from limit law (1/N)·E Var φ")
    ax.plot(N, res["iid_teacher"], ":", color="C2", label="i.i.d. from teacher law")
    ax.plot(N, res["mmn_K_over_N"], "-.", color="C3", label="MMN K/N")
    ax.set_title(f"R_N(T) − R_∞ (R_∞ = 0), T = {fit['T']:.3g}", fontsize=9)
    ax2 = axes[1]
    ax2.plot(N, res["gap_sd"], "s", color="C4", ms=5)
    sp = fit["spread"]
    c = np.exp(np.mean(np.log(res["gap_sd"])) - sp["slope"] * np.mean(np.log(N)))
    ax2.plot(N, c * N ** sp["slope"], "-", color="C4", label=f"slope {sp['slope']:.2f} ± {2 * sp['slope_se']:.2f}")
    ax2.set_title("seed-to-seed s.d. of R_N(T)", fontsize=9)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("N")
        a.grid(alpha=0.3, which="both")
        a.legend(frameon=False, fontsize=7)
    ax3 = axes[2]
    cmap = plt.cm.viridis
    for j, n in enumerate(N):
        sel = (met["N"] == n) & (met["t"] > 0)
        ax3.plot(met["t"][sel], met["risk"][sel], color=cmap(j / max(1, len(N) - 1)), lw=1.2,
                 label=f"N = {int(n)}")
    ax3.set_yscale("log")
    ax3.set_xscale("log")
    ax3.set_xlabel("t (MMN time)")
    ax3.set_title("seed-mean risk R_N(t)", fontsize=9)
    ax3.grid(alpha=0.3, which="both")
    ax3.legend(frameon=False, fontsize=7, ncol=2)
    fig.tight_layout()
    return [save_figure(fig, run_dir / io.FIGURES / "n_scaling.png")]


FIGURES = plot
