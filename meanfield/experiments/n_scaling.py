"""n-scaling: how the trained risk of N particles approaches its N → ∞ value (population GD).

Task: teacher-student with ReLU units φ(x; θ) = a relu(⟨w, x⟩), x ~ N(0, I_d), closed-form
population risk (docs/design.md §1: R = E[(y − f)²], no ½).  The teacher is a *smooth law*, not a
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

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import derive_generator
from .. import io
from ..analysis import decay
from ..diagnostics import loglog_rate
from ..dynamics import ParticleState, gradient_flow
from ..errors import ConfigError
from ..figures import n_scaling
from ..figures.n_scaling import FIT, RESULTS
from ..interact import evaluate
from ..models import TeacherStudent, Unit
from .config import TwoLayerConfig, boot_bytes, check_n_grid, geometric_grid, n_grid_bytes
from .particles import relu_warmup, size_phase
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
    _help = {"scale": "preset: full (the README's run) or small (scale=small: the tests')",
             "N": "the largest particle count of the N grid",
             "N_min": "the smallest particle count of the N grid",
             "n_values": "values of the geometric N grid from N_min to N",
             "replicas": "independent seeds per N (run as replicas of one tensor)",
             "m0": "units of the teacher (a smooth law: its weights are 1/m0)",
             "teacher_seed": "seed of the teacher's draw",
             "teacher_std_min": "the teacher's axis scales σ_j run from 1 down to this",
             "init_std": "initial w_i ~ N(0, init_std²/d I_d)",
             "init_a_std": "initial output weights a_i ~ N(0, init_a_std²)",
             "n_boot": "bootstrap resamples of the fitted slopes' intervals"}
    _size_terms = {"n_values": n_grid_bytes, "n_boot": boot_bytes}
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
        return _write_results(cfg, ctx, task, {N: ctx.done[keys[N]] for N in grid})

    return Plan(phases=phases, results=results, primary=keys[grid[-1]],
                record={"task": task.to_dict(), "N_grid": grid})


def _write_results(cfg, ctx, task, done):
    """results.csv, fit.json, metrics.csv and particles.npz from ``done``: {N: PhaseRecord}."""
    out = ctx.out
    grid = cfg.grid()
    th_lim = done[grid[-1]].state["theta"]
    K_lim = float(np.mean(decay.iid_constant(task, th_lim, cfg.backend)))
    k_teacher, mmn_k = decay.teacher_iid_constant(task), decay.mmn_constant(th_lim)
    metrics, results, gaps = [], [], []
    for N in grid:
        rows = done[N].rows
        metrics.extend(rows)
        gap = np.asarray(done[N].result["risk64"], float)                 # R_∞ = 0
        gaps.append(gap)
        i90 = min(range(len(rows)), key=lambda i: abs(rows[i]["step"] - 0.9 * cfg.steps))
        rel = (rows[i90]["risk"] - rows[-1]["risk"]) / rows[-1]["risk"]
        res = {"N": N, "gap_mean": float(gap.mean()), "gap_sd": float(gap.std(ddof=1)),
               "iid_limit": K_lim / N, "iid_teacher": k_teacher / N, "mmn_K_over_N": mmn_k / N,
               "rel_change_last10": float(rel)}
        res.update({f"gap_r{b}": float(g) for b, g in enumerate(gap)})
        results.append(res)
    io.write_metrics(out / io.METRICS, metrics)
    io.write_metrics(out / RESULTS, results)
    sd = np.array([g.std(ddof=1) for g in gaps])
    means = np.array([g.mean() for g in gaps])
    fit = {"N": grid, "T": cfg.steps * cfg.dt, "R_inf": 0.0,
           "gap": loglog_rate(grid, gaps, n_boot=cfg.n_boot, seed=cfg.seed),
           "spread": decay.spread_slope(grid, sd),
           "R_inf_free_fit": decay.limit_fit(grid, means, sd, cfg.replicas), "risk_sharp": task.risk_sharp,
           "K_iid_limit": K_lim, "K_iid_teacher": k_teacher, "mmn_K": mmn_k,
           "gd_beats_iid": bool(np.all(means < K_lim / np.array(grid, float))),
           "gap_over_iid_at_Nmax": float(means[-1] / (K_lim / grid[-1])),
           "max_rel_change_last10": float(max(r["rel_change_last10"] for r in results)),
           "slope_vs_T": decay.slopes_vs_time(grid, [done[N].rows for N in grid], cfg.steps,
                                              cfg.log_every, cfg.dt)}
    io.write_json(out / FIT, fit)
    # t, step, theta: the largest N every save_every steps (its phase's snapshots)
    arrays = snapshot_arrays(ctx.done, primary=f"N={grid[-1]}")
    arrays.update({"param_names": np.array(task.param_names), "N_grid": np.array(grid)})
    arrays.update({f"theta_N{N}": done[N].state["theta"].numpy() for N in grid})
    arrays.update(task.arrays())
    io.write_npz(out / io.PARTICLES, arrays)
    return metrics


FIGURES = n_scaling.scaling_figures
warmup = relu_warmup          # compiles the ReLU pair sums before a sweep's workers start
