"""pde2d-torus: mean-field Langevin on the 2-torus — particles against the grid PDE and its Gibbs law, over N.

Task (Chizat 2022, "Mean-field Langevin dynamics: exponential convergence and annealing",
code ``lchizat/2022-mean-field-langevin-rate``, MFL.ipynb): the MMD objective on the flat
torus [0, 2π)² with the kernel k(x, y) = ∏_c (1 + 2 Σ_{k=1}^{5} cos(k(x_c − y_c))/(1 + k))
and ``n_targets`` = 10 targets uniform on the torus (``meanfield.models.TorusMMD``, whose pair
sums run through the kernel's (2K+1)² Fourier modes: 6.8 ms per evaluation on the 64² grid's
cells against 12.3 s for direct pair sums, measured).  Particles start uniform on the torus, as in the notebook.

Conventions (DESIGN.md §1).  Our risk R(ρ) = ‖∫k(·,θ)dρ − ∫k(·,y)dν‖²_H is the notebook's G
(no ½), Ψ = δR/δρ/2 is the notebook's per-particle gradient potential, and its update
X ← X − η∇Ψ + √(2ητ) ζ is our Euler–Maruyama step θ ← θ − 2ξ dt ∇Ψ + √(4ξ dt/β) ζ with
**ξ = ½, β = 1/τ, dt = η**, so t here is the notebook's iteration count × η (its η = 0.08).
That dynamics is the Wasserstein gradient flow of F_β = ½R + β⁻¹∫ρ log ρ = ½G + τH (our
free energy, reported throughout); the notebook plots G + τH instead, which is not the
flow's Lyapunov functional.  The noise is kept on all the way (the notebook switches it off
after 80 % of the iterations): this experiment is about the fixed-τ regime, where Chizat
2022 proves exponential convergence of F_β to its minimum.

The limit: ∂_t ρ = 2ξ∇·(ρ∇Ψ(θ; ρ)) + 2ξβ⁻¹Δρ on a ``cells``² periodic grid
(``meanfield.pde.GridDD``, implicit Scharfetter–Gummel fluxes, dimension-split backward
Euler; its velocity comes from the same ``interact.evaluate`` call as the particles'), run
to T and then on (``t_long``, same time step) towards its stationary state, the
self-consistent Gibbs law ρ_∞ ∝ exp(−βΨ(·; ρ_∞)): the residual ‖G(ρ) − ρ‖₁ of the Gibbs map
G is recorded over [0, t_long], and F_∞ = F_β(P*) with P* the grid's Gibbs fixed point
(``GridDD.gibbs_fixed_point``, Newton–Krylov from ρ_{t_long}; the implicit flux vanishes on
P*, so it is the flow's exact limit on the grid, and F − F_∞ is resolved down to round-off).

Particles: for every N of a geometric grid from ``N_min`` to ``N`` (``n_values`` values),
``replicas`` seeds (one tensor), mean-field Langevin (``ParticleDynamics`` with population
drift), free energy F_N = ½R(ρ_N) + τ Ĥ_N with R exact and Ĥ_N the Kozachenko–Leonenko
1-NN estimate of ∫ρ log ρ with periodic distances (``meanfield.diagnostics.knn_entropy``,
the notebook's estimator, with the sign of ∫ρ log ρ), every ``log_every`` steps; W2 to the grid density with the periodic
ground cost every ``w2_every`` steps.  Reference: the same F_N estimate for N i.i.d.
draws of the grid density at T (what sampling the limit would give, estimator bias included;
the self-interaction term alone adds ≈ k(0)/(2N) = 7.6/N to ½R there).  Reported against N (log-log slopes, 95 %
bootstrap intervals over seeds): the free-energy gap |F_N − F| averaged over the last quarter
of [0, T] per seed, and W2 at T.

The long-time exponential rate (fit.json ``rate_rule`` states it in words).  Fits of
c + Ae^{−rt} to the grid's F depend on their window here (0.50 on [1, 40], 0.43 on [2, 40],
0.36 on [5, 40], 0.32 on [10, 40], measured): the local log-slope s(t) = −d/dt log(F − F_∞)
falls from 0.65 at t = 2 and 0.34 at t = 10 to 0.28 by t = 60.
So: s(t) is the −slope of ``linregress(t, log(F − F_∞))`` over the records in
[t − w/2, t + w/2] (w = ``slope_width``, every gap there ≥ ``fit_floor``)
(:func:`local_log_slope`); the grid's rate window ends at the last t with a defined s and
extends back (t ≥ ``fit_t0``) while max s / min s − 1 < ``settle_tol``
(:func:`settled_window`); the rate is the log-linear slope over that window, reported only
when the local slopes there span ≥ w (``settled``; else None).  Independent check: the Gibbs
residual, linear in ρ − ρ_∞, decays at half that rate over the same window (F − F_∞ is
quadratic).  Backward Euler's bias on the rate is ≈ r²dt/4 (``time_step_bias``).
Particles at N: their limit c_N is the plateau (last quarter of [0, T]) mean of F̄_N − (F − F_∞)
and their Monte-Carlo floor σ_N the plateau mean of the seed mean's standard error; they
resolve the records from ``fit_t0`` on where the grid's gap is ≥ ``snr``·σ_N
(:func:`resolved_records`).  ``long_time_rate_particles`` fits F̄_N − c_N on the resolved
part of the rate window (resolved only if it spans ≥ w), ``matched_window_rates`` on the
whole resolved window beside the grid's rate on the same records, both by the same
least-squares exponential fit (:func:`exp_rate`) with 95 % bootstrap intervals over seeds.

Measured (full mode): grid long-time rate 0.286 on t ∈ [13, 69.5] (local slopes 0.282–0.308;
0.282 at the window's end; time-step bias ≈ 0.001), Gibbs residual rate 0.143 (ratio 2.01);
F_∞ = −0.14074100 (fixed point: 2 Newton steps from ρ_100, L¹ 1.9e-7 from it).  The
particles' 3σ_N floors (0.037, 0.019, 0.010, 0.0059, 0.0038 at N = 20 … 2000) are reached by
t = 3.5, 5, 6.5, 8, 9.5, before the rate window: no particle long-time rate is resolved at
any N.  On [2, t_N] particles vs grid: 0.34 [0.20, 0.52] vs 0.48, 0.41 [0.26, 0.71] vs 0.46,
0.41 [0.34, 0.49] vs 0.45, 0.43 [0.40, 0.48] vs 0.44, 0.41 [0.39, 0.43] vs 0.43.

Defaults: τ = 0.1, N from 20 to 2000 (5 values), 8 seeds, dt = 0.02 (a quarter of the
notebook's step), T = 40 (2000 steps), records every 0.5, 64² cells (h = 0.098; at 128² the
free energy moved by 1.2e-3 in the transient (t = 0.5), < 6e-5 at every recorded t ≥ 2,
2.5e-7 on the plateau [30, 40] where the free-energy gap is measured, 2e-8 at T = 40,
measured; with ``pde_refine`` (default) every run repeats that check up to T and writes it
to fit.json ``pde_grid``: 49 s more on one core at full size), t_long = 100,
w = 4, settle_tol = 0.1, fit_t0 = 2, fit_floor = 1e-10, snr = 3.  ``scale=small``: N from 20
to 200 (3 values), 4 seeds, dt = 0.05, T = 10, 24² cells, t_long = 30, w = 2, fit_t0 = 1.
Outputs: metrics.csv (per N and t: seed means of F_N, R, Ĥ, and F of the grid), summary.csv
(per N), fit.json, pde.npz (density snapshots, F, R, residuals over [0, t_long], the fixed
point ``gibbs``), particles.npz, figures density.png (grid density with the particles of the
largest N and the targets at the snapshots) and free_energy.png (F − F_∞ and the local
log-slope against t, rate window shaded; the free-energy gap and W2 against N).  Resumable
per N like pde2d-teacher.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import linregress

from .. import io
from ..diagnostics import loglog_rate
from ..errors import ConfigError, DivergenceError
from ..interact import evaluate
from ..models import TorusMMD
from ..seeds import derive_generator
from ..pde import Grid2D, GridDD, knn_neg_entropy, w2_grid
from .config import TwoLayerConfig, geometric_grid
from .pde2d_teacher import (density_panels, grid_plan, grid_refinement, plot_fits, record_steps, still_snapshots,
                            validate_n_grid, write_arrays)
from .plan import Plan

NAME = "pde2d-torus"
VIEWS = ("density",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=40", "N_min=10", "replicas=2", "steps=12", "log_every=4",
        "save_every=12", "cells=10", "t_long=1", "w2_replicas=2", "n_boot=100", "fit_t0=0.1",
        "fit_floor=1e-9")
PDE_FILE = "pde.npz"
PERIOD = 2 * math.pi

SMALL = {"N": 200, "N_min": 20, "n_values": 3, "replicas": 4, "dt": 0.05, "steps": 200,
         "log_every": 8, "save_every": 4, "w2_every": 200, "checkpoint_every": 200, "cells": 24,
         "pde_cfl": 4.0,
         "pde_dt_max": 0.1, "t_long": 30.0, "w2_replicas": 2, "n_boot": 300, "fit_t0": 1.0,
         "slope_width": 2.0}


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """See the module docstring.  ``save_every`` sets the snapshot interval (51 snapshots by
    default: the movie), ``w2_every`` the W2 interval (a multiple of ``log_every``; the still
    figure shows the snapshots at those times); ``d`` is 2."""

    scale: str = "full"
    N: int = 2000
    N_min: int = 20
    n_values: int = 5
    d: int = 2
    replicas: int = 8
    dt: float = 0.02
    steps: int = 2000
    log_every: int = 25
    save_every: int = 40
    w2_every: int = 1000
    checkpoint_every: int = 2000
    tau: float = 0.1
    xi: float = 0.5
    n_targets: int = 10
    modes: int = 5
    target_seed: int = 0
    cells: int = 64
    pde_cfl: float = 2.0
    pde_dt_max: float = 0.05
    pde_refine: bool = True       # also solve on (2·cells)² up to T: the grid error in fit.json
    t_long: float = 100.0
    fit_t0: float = 2.0
    fit_floor: float = 1e-10
    slope_width: float = 4.0
    settle_tol: float = 0.1
    snr: float = 3.0
    w2_replicas: int = 4
    w2_sub: int = 1
    n_boot: int = 2000

    _choices = {"scale": ("full", "small")}
    _presets = {"scale": {"small": SMALL}}
    # the grid PDE is recorded at the run's k·dt: nothing that moves those times may change
    resume_mutable = ("checkpoint_every", "backend")

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): d = 2; the N grid
        (``pde2d_teacher.validate_n_grid``); tau, xi, pde_cfl, pde_dt_max, fit_floor, snr
        finite and > 0; n_targets, modes ≥ 1; cells ≥ 8; t_long ≥ T = steps·dt;
        0 ≤ fit_t0 < 0.75·T; slope_width ≥ 2·log_every·dt (three records per local slope);
        0 < settle_tol < 1; 2 ≤ w2_replicas ≤ replicas; w2_sub ≥ 1."""
        super().validate()
        if self.d != 2:
            raise ConfigError(f"d must be 2 (the torus is two-dimensional), got {self.d}")
        validate_n_grid(self)
        self.check_bounds(at_least_one=("n_targets", "modes", "w2_sub"),
                          positive=("tau", "xi", "pde_cfl", "pde_dt_max", "fit_floor", "snr"))
        if self.cells < 8:
            raise ConfigError(f"cells must be >= 8, got {self.cells}")
        T = self.steps * self.dt
        if not (math.isfinite(self.t_long) and self.t_long >= T):
            raise ConfigError(f"t_long must be >= T = steps·dt = {T:g}, got {self.t_long}")
        if not 0 <= self.fit_t0 < 0.75 * T:
            raise ConfigError(f"fit_t0 must be in [0, 0.75·T = {0.75 * T:g}), got {self.fit_t0}")
        step = self.log_every * self.dt
        if not (math.isfinite(self.slope_width) and self.slope_width >= 2 * step * (1 - 1e-9)):
            raise ConfigError(f"slope_width must be >= 2·log_every·dt = {2 * step:g} (three records "
                              f"per local slope), got {self.slope_width}")
        if not 0 < self.settle_tol < 1:
            raise ConfigError(f"settle_tol must be in (0, 1), got {self.settle_tol}")
        if not 2 <= self.w2_replicas <= self.replicas:
            raise ConfigError(f"w2_replicas must be in [2, replicas={self.replicas}], got {self.w2_replicas}")

    @property
    def beta(self) -> float:
        """The inverse temperature β = 1/τ (Chizat's τ = ``tau``)."""
        return 1.0 / self.tau

    def grid(self) -> list[int]:
        """N values: ``config.geometric_grid(N_min, N, n_values)``."""
        return geometric_grid(self.N_min, self.N, self.n_values)


def build_task(cfg: Config) -> TorusMMD:
    """The task: ``TorusMMD`` with ``n_targets`` targets uniform on [0, 2π)² (drawn with
    ``target_seed``), equal weights, and ``modes`` Fourier modes per coordinate."""
    return TorusMMD.random(cfg.n_targets, generator=torch.Generator().manual_seed(cfg.target_seed),
                           modes=cfg.modes)


def _solve_pde(cfg, task, times):
    """Grid solution at ``times`` (up to T), then on to t_long: a dict of arrays."""
    grid = Grid2D.torus(cfg.cells, PERIOD)
    dd = GridDD(task, grid, xi=cfg.xi, beta=cfg.beta, cfl=cfg.pde_cfl, backend=cfg.backend,
                dtype=torch.float64, dt_max=cfg.pde_dt_max)
    sol = dd.solve(grid.uniform(), times)
    T = float(times[-1])
    n_long = max(2, int(math.ceil((cfg.t_long - T) / max(cfg.log_every * cfg.dt, 1e-12))) + 1)
    long_t = np.linspace(0.0, cfg.t_long - T, n_long)
    res_long = []
    tail = dd.solve(sol.density[-1], long_t,
                    callback=lambda k, t, P: res_long.append(dd.gibbs_residual(P, cfg.beta)))
    # F_∞ = F_β of the self-consistent Gibbs law (the flow's exact stationary state on the
    # grid), by Newton–Krylov from the density at t_long
    P_fp, fp_res, fp_its = dd.gibbs_fixed_point(cfg.beta, tail.density[-1], tol=1e-11)
    F_inf = dd.free_energy(P_fp, cfg.beta)
    return {"t": times, "x": grid.axes()[0], "y": grid.axes()[1], "density": sol.density,
            "risk": sol.risk, "free_energy": sol.free_energy, "mass": sol.mass,
            "neg_entropy": np.array([dd.neg_entropy(P) for P in sol.density]),
            "residual": np.array([dd.gibbs_residual(P, cfg.beta) for P in sol.density]),
            "t_tail": T + long_t, "free_energy_tail": tail.free_energy,
            "residual_tail": np.array(res_long), "mass_tail": tail.mass, "density_long": tail.density[-1],
            "gibbs": P_fp, "F_inf": F_inf, "fp_residual": fp_res, "fp_iterations": fp_its,
            "fp_l1_to_t_long": float(np.abs(P_fp - tail.density[-1]).sum() * grid.area), "steps": sol.steps + tail.steps, "dt_min": min(sol.dt_min, tail.dt_min),
            "dt_max": max(sol.dt_max, tail.dt_max), "cfl": sol.cfl, "scheme": sol.scheme,
            "h": np.array(grid.h), "cells": cfg.cells, **_fine(cfg, task, times)}


def _fine(cfg, task, times) -> dict:
    """With ``pde_refine``: F and R at ``times`` on a grid twice as fine per direction (same
    CFL rule, so its time steps are finer too: the estimate covers both errors)."""
    if not cfg.pde_refine:
        return {}
    grid = Grid2D.torus(2 * cfg.cells, PERIOD)
    dd = GridDD(task, grid, xi=cfg.xi, beta=cfg.beta, cfl=cfg.pde_cfl, backend=cfg.backend,
                dtype=torch.float64, dt_max=cfg.pde_dt_max)
    sol = dd.solve(grid.uniform(), times)
    return {"free_energy_fine": sol.free_energy, "risk_fine": sol.risk}


def plan(cfg: Config) -> Plan:
    """The torus grid PDE run to T and on to t_long (the prelude), then one phase per N
    (``pde2d_teacher.grid_plan``): R, Ĥ, F per seed at every record, W2 with the periodic
    cost at snapshots, and F of N i.i.d. draws of the grid density at T per N."""
    task = build_task(cfg)
    grid = Grid2D.torus(cfg.cells, PERIOD)

    def measure(state, N, i, k, pde, w2):
        th = state.theta.detach().double().cpu()
        R = evaluate(task, th, backend=cfg.backend).risk.numpy()            # (B,)
        H = knn_neg_entropy(th, period=PERIOD)                               # (B,)
        F = 0.5 * R + cfg.tau * H
        if not np.isfinite(F).all():
            raise DivergenceError(f"N={N}, step {k}: non-finite free energy; the step size is likely too large")
        row = {"step": k, "t": float(pde["t"][i]), "risk": R, "neg_entropy": H, "free_energy": F}
        if w2:
            wrapped = grid.wrap(th.numpy())
            row["w2"] = np.array([w2_grid(grid, pde["density"][i], wrapped[b], sub=cfg.w2_sub)
                                  for b in range(cfg.w2_replicas)])
        return row

    def after(N, gen, pde):
        # reference: F of N i.i.d. draws from the grid density at T (estimator + sampling bias)
        iid = torch.as_tensor(np.stack([grid.sample(pde["density"][-1], N, generator=gen)
                                        for _ in range(cfg.replicas)]))
        F_iid = (0.5 * evaluate(task, iid, backend=cfg.backend).risk.numpy()
                 + cfg.tau * knn_neg_entropy(iid, period=PERIOD))
        return {"F_iid": F_iid - float(pde["free_energy"][-1])}

    return grid_plan(
        cfg, task=task, solve_pde=_solve_pde,
        theta0=lambda gen, N: PERIOD * torch.rand(cfg.replicas, N, 2, generator=gen,
                                                  dtype=torch.float64),
        measure=measure, after=after,
        snapshot=lambda st: grid.wrap(st.theta.detach().double().cpu().numpy()).astype(np.float32),
        write_results=lambda ctx, done, pde, steps, snaps_at: _write_results(
            cfg, ctx, done, pde, task, snaps_at))


# ------------------------------------------------------------------------------------------
# the long-time exponential rate
# ------------------------------------------------------------------------------------------
def rate_rule(cfg) -> str:
    """The window rule of the long-time rate, in words (written to fit.json)."""
    w = cfg.slope_width
    return (f"local log-slope s(t) = -d/dt log(F - F_inf): -slope of log(F - F_inf) against t over "
            f"the records in [t - {w:g}/2, t + {w:g}/2] (all of them with F - F_inf >= floor); "
            f"the grid's rate window ends at the last t where s is defined (floor fit_floor = "
            f"{cfg.fit_floor:g}) and extends back, from t >= fit_t0 = {cfg.fit_t0:g}, while "
            f"max s / min s - 1 < settle_tol = {cfg.settle_tol:g}; settled when the local slopes "
            f"span >= slope_width; the rate is -slope of log(F - F_inf) over the window.  "
            f"Particles at N: their gap is the seed-mean F_N minus c_N, c_N = the mean over the "
            f"plateau (last quarter of [0, T]) of F_N - (grid's F - F_inf); they resolve the "
            f"records from fit_t0 on where the grid's gap is >= snr = {cfg.snr:g} x sigma_N "
            f"(sigma_N: the seed mean's standard error on the plateau, the Monte-Carlo floor), "
            f"up to resolved_until; rates there by a least-squares fit of A exp(-r t) (the same "
            f"fit for the grid on the same records): the long-time rate on the resolved part of "
            f"the rate window (resolved only if it spans >= slope_width), and the matched-window "
            f"rate on [fit_t0, resolved_until]; "
            f"95 % percentile bootstrap intervals over seeds")


def local_log_slope(t, gap, width: float, floor: float) -> np.ndarray:
    """Local log-slope s(t_c) = −d/dt log gap at every record time t_c: −slope of
    ``linregress(t, log gap)`` over the records with |t − t_c| ≤ width/2.  Defined (NaN
    otherwise) only where that interval lies inside [t_0, t_{K−1}], holds ≥ 3 records, and
    every gap in it is ≥ ``floor``.  t [K] increasing, gap [K] → s [K]."""
    t, gap = np.asarray(t, dtype=np.float64), np.asarray(gap, dtype=np.float64)
    s = np.full(len(t), np.nan)
    if len(t) < 3:
        return s
    eps = 1e-9 * max(1.0, abs(float(t[-1])))
    for k, c in enumerate(t):
        if c - width / 2 < t[0] - eps or c + width / 2 > t[-1] + eps:
            continue
        sel = np.abs(t - c) <= width / 2 + eps
        if sel.sum() >= 3 and (gap[sel] >= floor).all():
            s[k] = -linregress(t[sel], np.log(gap[sel])).slope
    return s


def settled_window(t, s, *, t0: float, width: float, tol: float):
    """The long-time window of the local slopes s [K] at t [K], as record indices (ka, kb), or
    None when no local slope is defined at t ≥ t0 + width/2.  kb is the last record with a
    defined s; ka ≤ kb the earliest record such that s is defined and positive on all of
    [ka, kb], t_ka − width/2 ≥ t0, and max s / min s − 1 < tol there.  The data entering these
    local fits span [t_ka − width/2, t_kb + width/2]."""
    t, s = np.asarray(t, dtype=np.float64), np.asarray(s, dtype=np.float64)
    eps = 1e-9 * max(1.0, abs(float(t[-1]))) if len(t) else 0.0
    ok = np.isfinite(s) & (t - width / 2 >= t0 - eps)
    idx = np.flatnonzero(ok)
    if not len(idx) or not s[idx[-1]] > 0:
        return None
    kb = ka = int(idx[-1])
    lo = hi = s[kb]
    for k in range(kb - 1, -1, -1):
        if not ok[k] or not s[k] > 0:
            break
        lo2, hi2 = min(lo, s[k]), max(hi, s[k])
        if hi2 / lo2 - 1 >= tol:
            break
        lo, hi, ka = lo2, hi2, k
    return ka, kb


def grid_rate(cfg, t, gap, residual) -> dict:
    """The grid's long-time rate from its free-energy gap F(t) − F_∞ [K] and Gibbs residual
    ‖G(ρ_t) − ρ_t‖₁ [K] at t [K] (over [0, t_long]), by :func:`rate_rule`: a dict with
    ``settled``, ``long_time_rate_pde`` (None unless settled), ``rate_window`` [t_a, t_b],
    the local slopes' range in it and at its end, and the residual's rate over the same
    window (F − F_∞ is quadratic in ρ − ρ_∞, so it decays twice as fast as the residual)."""
    w = cfg.slope_width
    s = local_log_slope(t, gap, w, cfg.fit_floor)
    win = settled_window(t, s, t0=cfg.fit_t0, width=w, tol=cfg.settle_tol)
    out = {"settled": False, "long_time_rate_pde": None, "rate_window": None,
           "local_slope_range": None, "local_slope_end": None, "gibbs_residual_rate": None,
           "local_slope": s}
    if win is None:
        return out
    ka, kb = win
    eps = 1e-9 * max(1.0, abs(float(t[-1])))
    ta, tb = float(t[ka] - w / 2), float(t[kb] + w / 2)
    sel = (t >= ta - eps) & (t <= tb + eps)
    out.update({"rate_window": [ta, tb], "local_slope_range": [float(s[ka:kb + 1].min()),
                                                               float(s[ka:kb + 1].max())],
                "local_slope_end": float(s[kb])})
    out["settled"] = bool(t[kb] - t[ka] >= w - eps)
    if out["settled"]:
        out["long_time_rate_pde"] = float(-linregress(t[sel], np.log(gap[sel])).slope)
        r = np.asarray(residual)[sel]
        if (r > 0).all():
            out["gibbs_residual_rate"] = float(-linregress(t[sel], np.log(r)).slope)
    return out


RATE_GRID = np.linspace(-0.5, 3.0, 3501)     # candidate rates of :func:`exp_rate` (step 0.001)


def exp_rate(t, gap) -> np.ndarray:
    """Least-squares exponential rate of gap [..., k] at t [k]: the r of RATE_GRID (−0.5 … 3,
    step 0.001) minimising min_A Σ_j (gap_j − A e^{−r(t_j − t_0)})², i.e. maximising
    (gap·e_r)² / (e_r·e_r) over r with A = gap·e_r / e_r·e_r > 0.  On the linear scale (no
    logarithm of noisy near-floor values, so no resample is lost) → rates [...]."""
    t = np.asarray(t, dtype=np.float64)
    E = np.exp(-RATE_GRID[:, None] * (t - t[0])[None, :])                   # (R, k)
    proj = np.asarray(gap, dtype=np.float64) @ E.T                         # (..., R)
    score = np.where(proj > 0, proj * proj / (E * E).sum(1), -np.inf)
    return RATE_GRID[np.argmax(score, axis=-1)]


def _boot_rate(t, F, sel, offset, n_boot, gen):
    """:func:`exp_rate` of F̄ − c over the records ``sel`` [K] (bool), F̄ the seed mean of
    F [B, K] and c = ``offset``(curves [n, K]) → [n] the limit of each curve (see
    :func:`particle_rates`), with a 95 % percentile interval over ``n_boot`` resamples of
    the seeds (index draws from the torch generator ``gen``).  Returns {"rate", "ci95"}."""
    B = F.shape[0]
    idx = torch.randint(B, (n_boot, B), generator=gen).numpy()                   # (n_boot, B)
    curves = np.concatenate([F.mean(0)[None], F[idx].mean(1)])                  # (1 + n_boot, K)
    gap = curves[:, sel] - offset(curves)[:, None]                             # (1 + n_boot, k)
    r = np.concatenate([exp_rate(t[sel], gap[i:i + 500]) for i in range(0, len(gap), 500)])
    ci = np.percentile(r[1:], [2.5, 97.5])
    return {"rate": round(float(r[0]), 3), "ci95": [round(float(v), 4) for v in ci]}


def resolved_records(cfg, t, gap_pde, sigma: float) -> np.ndarray:
    """The records [K] (bool) the particles resolve, given their Monte-Carlo floor σ: from
    fit_t0 on, before the plateau (the last quarter of [0, T]), as long as the grid's gap
    gap_pde [K] at the row times t [K] stays ≥ snr·σ (a prefix: the grid's F decreases)."""
    T = cfg.steps * cfg.dt
    eps = 1e-9 * max(1.0, T)
    cand = (t >= cfg.fit_t0 - eps) & (t < 0.75 * T - eps)
    good = cand & (gap_pde >= cfg.snr * sigma)
    first_bad = np.flatnonzero(cand & ~good)
    if len(first_bad):
        good &= t < t[first_bad[0]]
    return good


def particle_rates(cfg, t, F, gap_pde, window, N) -> dict:
    """Rates of the particles' free energy at N: F [B, K] per seed at the metrics rows t [K],
    gap_pde [K] the grid's F − F_∞ there, ``window`` the grid's rate window (or None).

    The particles' limit is c_N = mean over the plateau (the last quarter of [0, T]) of
    F̄_N − gap_pde — their plateau less what the grid still decays there (their own F_∞ plus
    their N-dependent bias) — and their gap is F̄_N(t) − c_N, F̄_N the seed mean.  The
    Monte-Carlo floor σ_N is the mean over the plateau of the seed mean's standard error;
    the particles resolve the records of :func:`resolved_records` (the grid's gap ≥ snr·σ_N),
    up to ``resolved_until``.  Rates by :func:`exp_rate` with 95 % bootstrap intervals over
    seeds (c_N re-estimated in every resample).  Returns {"floor", "resolved_until",
    "matched": {window, rate, ci95, rate_pde}, "long_time": {resolved, window, rate, ci95,
    rate_pde}}: ``matched`` over the whole resolved window, beside the grid's rate on the
    same records by the same estimator; ``long_time`` on the part of the resolved window
    inside the grid's rate window, resolved only if it spans ≥ slope_width."""
    T = cfg.steps * cfg.dt
    eps = 1e-9 * max(1.0, T)
    plat = t >= 0.75 * T - eps
    B = F.shape[0]
    sigma = float((F[:, plat].std(0, ddof=1) / math.sqrt(B)).mean())
    good = resolved_records(cfg, t, gap_pde, sigma)
    gen = derive_generator(cfg.seed, "rate-bootstrap", N)

    def offset(curves):                                         # c_N per curve [n]
        return (curves[:, plat] - gap_pde[plat]).mean(1)

    out = {"floor": sigma, "resolved_until": float(t[good][-1]) if good.any() else None}
    matched = {"window": None, "rate": None, "ci95": None, "rate_pde": None}
    if good.sum() >= 3:
        matched.update(_boot_rate(t, F, good, offset, cfg.n_boot, gen))
        matched["window"] = [float(t[good][0]), float(t[good][-1])]
        matched["rate_pde"] = round(float(exp_rate(t[good], gap_pde[good])), 3)
    long = {"resolved": False, "window": None, "rate": None, "ci95": None, "rate_pde": None}
    if window is not None:
        sel = good & (t >= window[0] - eps) & (t <= window[1] + eps)
        if sel.sum() >= 3 and t[sel][-1] - t[sel][0] >= cfg.slope_width - eps:
            long.update(_boot_rate(t, F, sel, offset, cfg.n_boot, gen))
            long.update({"resolved": True, "window": [float(t[sel][0]), float(t[sel][-1])],
                         "rate_pde": round(float(exp_rate(t[sel], gap_pde[sel])), 3)})
    out.update({"matched": matched, "long_time": long})
    return out


def _write_results(cfg, ctx, done, pde_all, task, snaps_at):
    out = ctx.out
    Ns = cfg.grid()
    # the analysis uses the PDE at the metrics rows' times; pde.npz keeps every recorded time
    # (the snapshots' too, for the movie)
    rows_at, _ = record_steps(cfg)
    row_t = np.array([float(f"{k * cfg.dt:.15g}") for k in rows_at])
    sel = np.isin(np.asarray(pde_all["t"]), row_t)
    pde = {k: (np.asarray(v)[sel] if k in ("t", "density", "risk", "free_energy", "mass",
                                           "neg_entropy", "residual", "free_energy_fine", "risk_fine")
               else v) for k, v in pde_all.items()}
    t = np.asarray(pde["t"])
    Fg = np.asarray(pde["free_energy"])
    F_inf = float(pde["F_inf"])
    plat = _plateau(cfg, t)
    tg, gap_g, res_g = grid_curve(pde)
    g = grid_rate(cfg, tg, gap_g, res_g)
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    metrics, summary, gaps, gaps_iid, w2_T, rates = [], [], [], [], [], {}
    for N in Ns:
        series = done[N]["series"]
        F = np.stack([s["free_energy"] for s in series], -1)                  # (B, T)
        B = F.shape[0]
        for s in series:
            i = int(np.argmin(np.abs(t - s["t"])))
            row = {"N": N, "step": s["step"], "t": s["t"], "free_energy": float(s["free_energy"].mean()),
                   "free_energy_se": float(s["free_energy"].std(ddof=1) / math.sqrt(B)),
                   "free_energy_pde": float(Fg[i]), "risk": float(s["risk"].mean()),
                   "risk_pde": float(pde["risk"][i]), "neg_entropy": float(s["neg_entropy"].mean()),
                   "neg_entropy_pde": float(pde["neg_entropy"][i])}
            if "w2" in s:
                row["w2"] = float(s["w2"].mean())
            metrics.append(row)
        gap = np.abs((F[:, plat] - Fg[plat]).mean(-1))                          # (B,)
        w2 = [s["w2"] for s in series if "w2" in s][-1]
        gaps.append(gap)
        gaps_iid.append(np.abs(done[N]["F_iid"]))
        w2_T.append(w2)
        rates[N] = particle_rates(cfg, t, F, Fg - F_inf, g["rate_window"], N)
        sd = lambda v: float(v.std(ddof=1) / math.sqrt(len(v)))  # noqa: E731
        mr, lr = rates[N]["matched"], rates[N]["long_time"]
        nan = float("nan")
        summary.append({"N": N, "free_energy_gap": float(gap.mean()), "free_energy_gap_se": sd(gap),
                        "free_energy_bias": float((F[:, plat] - Fg[plat]).mean()),
                        "free_energy_gap_iid": float(gaps_iid[-1].mean()),
                        "free_energy_gap_iid_se": sd(gaps_iid[-1]),
                        "w2_T": float(w2.mean()), "w2_T_se": sd(w2),
                        "mc_floor": rates[N]["floor"],
                        "resolved_until": _num(rates[N]["resolved_until"]),
                        "rate_matched": _num(mr["rate"]),
                        "rate_matched_lo": _num(mr["ci95"] and mr["ci95"][0]),
                        "rate_matched_hi": _num(mr["ci95"] and mr["ci95"][1]),
                        "rate_matched_pde": _num(mr["rate_pde"]),
                        "long_time_rate": _num(lr["rate"]) if lr["resolved"] else nan})
    io.write_metrics(out / io.METRICS, metrics)
    io.write_metrics(out / "summary.csv", summary)
    pde_fit = {"cells": cfg.cells, "h": list(map(float, pde["h"])), "steps": int(pde["steps"]),
               "dt_min": float(pde["dt_min"]), "dt_max": float(pde["dt_max"]),
               "cfl": float(pde["cfl"]), "scheme": str(pde["scheme"]),
               "mass_error": float(max(np.abs(pde["mass"] - 1).max(), np.abs(pde["mass_tail"] - 1).max())),
               "F_T": float(Fg[-1]), "F_inf": F_inf, "F_t_long": float(pde["free_energy_tail"][-1]),
               "t_long": cfg.t_long,
               "gibbs_residual_T": float(pde["residual"][-1]),
               "gibbs_residual_long": float(pde["residual_tail"][-1]),
               "gibbs_fixed_point": {"residual": float(pde["fp_residual"]),
                                     "iterations": int(pde["fp_iterations"]),
                                     "l1_to_t_long": float(pde["fp_l1_to_t_long"])},
               "w2_quantisation_bound": Grid2D.torus(cfg.cells, PERIOD).quantisation(cfg.w2_sub)}
    r = g["long_time_rate_pde"]
    fit = {"N": Ns, "T": cfg.steps * cfg.dt, "tau": cfg.tau, "beta": cfg.beta,
           "free_energy_gap": loglog_rate(Ns, gaps, **kw), "w2_T": loglog_rate(Ns, w2_T, **kw),
           "free_energy_gap_iid": loglog_rate(Ns, gaps_iid, **kw),
           "long_time_rate_pde": r, "settled": g["settled"], "rate_window": g["rate_window"],
           "rate_rule": rate_rule(cfg),
           "local_slope_range": g["local_slope_range"], "local_slope_end": g["local_slope_end"],
           "gibbs_residual_rate": g["gibbs_residual_rate"],
           # backward Euler damps the slowest mode of ρ (rate r/2) by 1/(1 + r dt/2) per step:
           # the measured F rate is 2 log(1 + r dt/2)/dt ≈ r − r² dt/4
           "time_step_bias": None if r is None else r * r * float(pde["dt_max"]) / 4,
           "long_time_rate_particles": {str(N): {**rates[N]["long_time"], "floor": rates[N]["floor"]}
                                        for N in Ns},
           "matched_window_rates": {str(N): {**rates[N]["matched"],
                                             "resolved_until": rates[N]["resolved_until"]}
                                    for N in Ns},
           "pde": pde_fit,
           # the grid error where the free-energy gap is measured (the plateau) and overall
           "pde_grid": grid_refinement(pde, "free_energy",
                                       {"free_energy_gap": [r["free_energy_gap"] for r in summary]},
                                       window=plat)}
    io.write_json(out / "fit.json", fit)
    write_arrays(ctx, cfg, done, pde_all, task, snaps_at, ["x0", "x1"])
    return summary


def _num(v) -> float:
    """A float for summary.csv: NaN for None."""
    return float("nan") if v is None else float(v)


def _plateau(cfg, t):
    """Record indices of the last quarter of [0, T]."""
    return np.flatnonzero(t >= 0.75 * cfg.steps * cfg.dt - 1e-9 * max(1.0, cfg.steps * cfg.dt))


def grid_curve(pde):
    """The grid's record over [0, t_long] from a PDE record (main records, then the tail):
    (t [K], F − F_∞ [K], Gibbs residual [K])."""
    t = np.concatenate([np.asarray(pde["t"]), np.asarray(pde["t_tail"])[1:]])
    F = np.concatenate([np.asarray(pde["free_energy"]), np.asarray(pde["free_energy_tail"])[1:]])
    res = np.concatenate([np.asarray(pde["residual"]), np.asarray(pde["residual_tail"])[1:]])
    return t, F - float(pde["F_inf"]), res


def plot(run_dir, coords=None) -> list[Path]:
    """figures/density.png (grid density at the snapshots with the first seed's particles of
    the largest N and the targets) and figures/free_energy.png (F − F_∞ against t for the grid
    and the particles — theirs against their own limit c_N, with each N's Monte-Carlo floor —,
    the local log-slope against t with the rate window, the free-energy gap and W2 against N),
    from the run directory alone."""
    from ..plotting import pyplot, save_figure

    run_dir = Path(run_dir)
    plt = pyplot()
    fit = json.loads((run_dir / "fit.json").read_text())
    s = io.read_metrics(run_dir / "summary.csv")
    m = io.read_metrics(run_dir / io.METRICS)
    with np.load(run_dir / PDE_FILE) as z:
        pt, x, y, dens, Fg = z["t"], z["x"], z["y"], z["density"], z["free_energy"]
        tt, Ft, F_inf = z["t_tail"], z["free_energy_tail"], float(z["F_inf"])
    cfg = Config.from_mapping(io.load_run_config(run_dir)["config"])
    with np.load(run_dir / io.PARTICLES) as z:
        st, Ns, ks = z["t"], z["N_grid"], z["step"]
        th = z["theta"][:, 0]
        targets = z["targets"]
    keep = still_snapshots(st, ks, cfg)
    st, th = st[keep], th[keep]
    idx = [int(np.argmin(np.abs(pt - t))) for t in st]
    fig, axes = plt.subplots(1, len(st), figsize=(2.8 * len(st), 3.0), dpi=120, squeeze=False)
    density_panels(fig, axes[0], (x, y), dens[idx], st, th, extra=targets, period=PERIOD)
    fig.suptitle(f"grid density ({len(x)}² cells, τ = {fit['tau']:g}) and N = {Ns[-1]} particles "
                 "(seed 0, ≤ 500 shown); × targets", fontsize=9)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "density.png")]

    fig, axs = plt.subplots(2, 2, figsize=(11.5, 7.6), dpi=120)
    ax = axs.ravel()
    pde = {"t": pt, "free_energy": Fg, "t_tail": tt, "free_energy_tail": Ft, "F_inf": F_inf,
           "residual": np.zeros_like(pt), "residual_tail": np.zeros_like(tt)}
    tall, gall, _ = grid_curve(pde)
    ok = gall >= cfg.fit_floor
    r, win = fit["long_time_rate_pde"], fit["rate_window"]
    label = (f"grid PDE: long-time rate {r:.3f} on [{win[0]:g}, {win[1]:g}]" if fit["settled"]
             else "grid PDE: local slope not settled")
    ax[0].plot(tall[ok], gall[ok], "k-", lw=1.5, label=label)
    s_grid = local_log_slope(tall, gall, cfg.slope_width, cfg.fit_floor)
    ax[1].plot(tall, s_grid, "k-", lw=1.5, label="grid PDE")
    T = cfg.steps * cfg.dt
    for j, N in enumerate(Ns):
        sel = m["N"] == N
        tN, FN, se = m["t"][sel], m["free_energy"][sel], m["free_energy_se"][sel]
        plat = tN >= 0.75 * T - 1e-9 * max(1.0, T)
        gap_pde = m["free_energy_pde"][sel] - F_inf
        gap = FN - (FN[plat] - gap_pde[plat]).mean()          # particle_rates' c_N
        sigma = float(se[plat].mean())
        floor = cfg.snr * sigma
        mr = fit["matched_window_rates"][str(int(N))]
        lab = f"N = {N}"
        if mr["rate"] is not None:
            lab += f": {mr['rate']:.2f} vs grid {mr['rate_pde']:.2f} on [{mr['window'][0]:g}, {mr['window'][1]:g}]"
        ax[0].plot(tN[gap > 0], gap[gap > 0], "o", ms=2.5, color=f"C{j}", label=lab)
        ax[0].axhline(floor, color=f"C{j}", lw=0.6, ls=":")
        res = resolved_records(cfg, tN, gap_pde, sigma)
        if res.sum() >= 3:
            sl = local_log_slope(tN[res], gap[res], cfg.slope_width, np.finfo(float).tiny)
            ax[1].plot(tN[res], sl, "o-", ms=3, lw=0.8, color=f"C{j}", label=f"N = {N}")
    for a in ax[:2]:
        if win is not None:
            a.axvspan(*win, color="0.9", zorder=0)
        a.set_xlabel("t (= notebook iterations × η)")
        a.grid(alpha=0.3)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("F(t) − F_∞ (particles: minus their plateau)")
    ax[0].set_title("free-energy gap; dotted: each N's Monte-Carlo floor (snr × s.e.)", fontsize=8)
    ax[0].legend(frameon=False, fontsize=6)
    if r is not None:
        ax[1].axhline(r, color="k", ls="--", lw=0.8, label=f"long-time rate {r:.3f}")
    ax[1].set_ylim(0, 1.0)
    ax[1].set_ylabel("local log-slope −d/dt log(F − F_∞)")
    ax[1].set_title(f"local slopes over {cfg.slope_width:g}-wide windows (particles: where resolved); "
                    f"grey: rate window (spread < {100 * cfg.settle_tol:g} %)", fontsize=8)
    ax[1].legend(frameon=False, fontsize=6)
    ax = [ax[0], ax[2], ax[3]]
    N = s["N"]
    plot_fits(ax[1], N, [("|F_N − F| (last quarter)", "free_energy_gap", s["free_energy_gap"],
                          s["free_energy_gap_se"], "C0"),
                         ("N i.i.d. draws of ρ_T", "free_energy_gap_iid", s["free_energy_gap_iid"],
                          s["free_energy_gap_iid_se"], "C3")], fit)
    ax[1].set_title("free-energy gap to the grid PDE", fontsize=9)
    plot_fits(ax[2], N, [("W2 at T", "w2_T", s["w2_T"], s["w2_T_se"], "C2")], fit,
              floor=fit["pde"]["w2_quantisation_bound"])
    ax[2].set_title("W2(particles, grid density), periodic cost", fontsize=9)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "free_energy.png"))
    return paths


FIGURES = plot
