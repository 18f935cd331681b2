"""pde2d-torus: mean-field Langevin on the 2-torus — particles against the grid PDE and its Gibbs law, over N.

Task (Chizat 2022, "Mean-field Langevin dynamics: exponential convergence and annealing",
code ``lchizat/2022-mean-field-langevin-rate``, MFL.ipynb): the MMD objective on the flat
torus [0, 2π)² with the kernel k(x, y) = ∏_c (1 + 2 Σ_{k=1}^{5} cos(k(x_c − y_c))/(1 + k))
and ``n_targets`` = 10 targets uniform on the torus (``meanfield.models.TorusMMD``, whose pair
sums run through the kernel's (2K+1)² Fourier modes: 6.8 ms per evaluation on the 64² grid's
cells against 12.3 s for direct pair sums, measured).  Particles start uniform on the torus, as in the notebook.

Conventions (docs/design.md §1).  Our risk R(ρ) = ‖∫k(·,θ)dρ − ∫k(·,y)dν‖²_H is the notebook's G
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

The long-time exponential rate (fit.json ``rate_rule`` states it in words; the rule and its
functions are ``meanfield.analysis.rates``): the grid's rate is the log-linear slope of
F − F_∞ over the window, ending at the last record above ``fit_floor``, where the local
log-slopes s(t) = −d/dt log(F − F_∞) (width w = ``slope_width``) agree within
``settle_tol``; fits on fixed windows depend on them (0.50 on [1, 40], 0.32 on [10, 40],
measured).  Check: the Gibbs residual, linear in ρ − ρ_∞, decays at half that rate.
The window rate averages local slopes that are still falling; the asymptotic rate itself is
2μ₁, μ₁ the smallest non-zero eigenvalue of the grid PDE linearised at its Gibbs state
(``meanfield.pde.grid2d_spectrum``: the Scharfetter–Gummel flux's derivative with Ψ's
dependence on ρ through the kernel, shift-invert ``eigs``), computed on every grid of
``spectral_cells`` (plus the run's own) and extrapolated to h → 0 (fit.json ``spectral``,
``analysis.rates.spectral_table``, with the window rate's and the last local slope's
excess over 2μ₁ on the run's grid).
Particles at N resolve the records where the grid's gap is ≥ ``snr`` × their Monte-Carlo
floor (the plateau's standard error); their rates on that window are fitted beside the
grid's on the same records, with 95 % bootstrap intervals over seeds.  Measured values
(full mode): docs/pde.md.

Defaults: τ = 0.1, N from 20 to 2000 (5 values), 8 seeds, dt = 0.02 (a quarter of the
notebook's step), T = 40 (2000 steps), records every 0.5, 64² cells (with ``pde_refine``,
the default, every run repeats the grid check on a grid twice as fine up to T and writes
it to fit.json ``pde_grid``; docs/pde.md has the measured errors), t_long = 100, w = 4,
settle_tol = 0.1, fit_t0 = 2, fit_floor = 1e-10, snr = 3, spectral grids 24², 32², 48², 64²,
96², 128².  ``scale=small``: N from 20 to 200 (3 values), 4 seeds, dt = 0.05, T = 10, 24²
cells, t_long = 30, w = 2, fit_t0 = 1, spectral grids 16², 24², 32².
Outputs: metrics.csv, summary.csv (per N), fit.json, pde.npz (densities, F, R, Gibbs
residuals, the fixed point ``gibbs``), particles.npz and the figures of
``meanfield.figures.pde2d``.  Resumable per N like pde2d-teacher.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import io
from ..analysis.rates import (RateRule, free_energy_tables, grid_curve, grid_rate, grid_refinement,
                              spectral_table)
from ..errors import ConfigError, DivergenceError
from ..figures import pde2d
from ..figures.pde2d import PERIOD
from ..interact import evaluate
from ..models import TorusMMD
from ..pde import Grid2D, knn_neg_entropy, w2_grid
from ..seeds import derive_generator
from .config import spectral_cells
from .pde2d_common import GridRunConfig, grid_plan, record_steps, solve_torus_pde, write_arrays
from .plan import Plan

NAME = "pde2d-torus"
VIEWS = ("density",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=40", "N_min=10", "replicas=2", "steps=12", "log_every=4",
        "save_every=12", "cells=10", "t_long=1", "w2_replicas=2", "n_boot=100", "fit_t0=0.1",
        "fit_floor=1e-9", "spectral_cells=8,10")

SMALL = {"N": 200, "N_min": 20, "n_values": 3, "replicas": 4, "dt": 0.05, "steps": 200,
         "log_every": 8, "save_every": 4, "w2_every": 200, "checkpoint_every": 200, "cells": 24,
         "pde_cfl": 4.0,
         "pde_dt_max": 0.1, "t_long": 30.0, "w2_replicas": 2, "n_boot": 300, "fit_t0": 1.0,
         "slope_width": 2.0, "spectral_cells": "16,24,32"}


@dataclass(frozen=True)
class Config(GridRunConfig):
    """See the module docstring (and ``pde2d_common.GridRunConfig`` for the keys both pde2d
    experiments share).  ``save_every`` sets the snapshot interval (51 snapshots by default:
    the movie), ``w2_every`` the W2 interval (a multiple of ``log_every``; the still figure
    shows the snapshots at those times); ``d`` is 2."""

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
    t_long: float = 100.0         # (pde_refine solves (2·cells)² up to T only)
    fit_t0: float = 2.0
    fit_floor: float = 1e-10
    slope_width: float = 4.0
    settle_tol: float = 0.1
    snr: float = 3.0
    spectral_cells: str = "24,32,48,64,96,128"   # grids of the spectral rate ("" for none)

    _presets = {"scale": {"small": SMALL}}
    _surface = "torus"
    _min_cells = 8
    _help = {"xi": "time scale ξ (½: Chizat's step η is dt)",
             "tau": "temperature τ = 1/β (Chizat's τ)",
             "n_targets": "targets of the MMD, uniform on the torus",
             "modes": "Fourier modes of the kernel per coordinate",
             "target_seed": "seed of the targets' draw",
             "t_long": "the grid PDE runs on to t_long towards its Gibbs state",
             "fit_t0": "the rate's fit window starts after this time",
             "fit_floor": "the fit window ends at the last record with F − F_∞ above this",
             "slope_width": "width in t of the local log-slopes",
             "settle_tol": "the local slopes agree within this (relative) in the fit window",
             "snr": "particles' records count where the grid's gap is ≥ snr × their floor",
             "spectral_cells": "grids of the spectral rate, comma-separated (\"\": none)"}
    _size_terms = {"modes": lambda c: 32 * (2 * c.modes + 1) ** 2 * (c.N * c.replicas + c.cells ** 2 + c.n_targets),
                   "n_targets": lambda c: 16 * c.n_targets * ((2 * c.modes + 1) ** 2 + 2)}

    def validate(self):
        """GridRunConfig's checks (d = 2, the N grid, cells ≥ 8, w2 keys, xi, pde_cfl,
        pde_dt_max), then (``ConfigError``): n_targets, modes ≥ 1; tau, fit_floor, snr finite
        and > 0; t_long ≥ T = steps·dt; 0 ≤ fit_t0 < 0.75·T; slope_width ≥ 2·log_every·dt
        (three records per local slope); 0 < settle_tol < 1."""
        super().validate()
        self.check_bounds(at_least_one=("n_targets", "modes"), positive=("tau", "fit_floor", "snr"))
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
        self.spectral_grid()

    def spectral_grid(self) -> list[int]:
        """The cells per direction of the spectral rate's refinement sequence, from
        ``spectral_cells`` (comma-separated, increasing, each ≥ 6; "" for none), with the
        run's own ``cells`` added; ``ConfigError`` otherwise."""
        cells = spectral_cells(self.spectral_cells)
        return sorted(set(cells) | {self.cells}) if cells else []

    @property
    def beta(self) -> float:
        """The inverse temperature β = 1/τ (Chizat's τ = ``tau``)."""
        return 1.0 / self.tau


def build_task(cfg: Config) -> TorusMMD:
    """The task: ``TorusMMD`` with ``n_targets`` targets uniform on [0, 2π)² (drawn with
    ``target_seed``), equal weights, and ``modes`` Fourier modes per coordinate."""
    return TorusMMD.random(cfg.n_targets, generator=torch.Generator().manual_seed(cfg.target_seed),
                           modes=cfg.modes)


def plan(cfg: Config) -> Plan:
    """The torus grid PDE run to T and on to t_long (the prelude), then one phase per N
    (``pde2d_common.grid_plan``): R, Ĥ, F per seed at every record, W2 with the periodic
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
        cfg, task=task, solve_pde=solve_torus_pde,
        theta0=lambda gen, N: PERIOD * torch.rand(cfg.replicas, N, 2, generator=gen,
                                                  dtype=torch.float64),
        measure=measure, after=after,
        snapshot=lambda st: grid.wrap(st.theta.detach().double().cpu().numpy()).astype(np.float32),
        write_results=lambda ctx, done, pde, steps, snaps_at: _write_results(
            cfg, ctx, done, pde, task, snaps_at))


def _write_results(cfg, ctx, done, pde_all, task, snaps_at):
    """metrics.csv, summary.csv and fit.json from the PDE at the metrics rows' times (pde.npz
    keeps every recorded time, the snapshots' too, for the movie): the grid's long-time rate
    (``analysis.rates.grid_rate``), the tables over N (``analysis.rates.free_energy_tables``),
    the PDE's bookkeeping and grid error; then pde.npz and particles.npz."""
    Ns = cfg.grid()
    rows_at, _ = record_steps(cfg)
    row_t = np.array([float(f"{k * cfg.dt:.15g}") for k in rows_at])
    sel = np.isin(np.asarray(pde_all["t"]), row_t)
    pde = {k: (np.asarray(v)[sel] if k in ("t", "density", "risk", "free_energy", "mass",
                                           "neg_entropy", "residual", "free_energy_fine", "risk_fine")
               else v) for k, v in pde_all.items()}
    rule = RateRule.from_config(cfg)
    g = grid_rate(rule, *grid_curve(pde))
    spectral = _spectral_fit(cfg, pde, g)
    metrics, summary, tables = free_energy_tables(
        rule, Ns, {N: done[N]["series"] for N in Ns}, {N: done[N]["F_iid"] for N in Ns}, pde,
        g["rate_window"], n_boot=cfg.n_boot, seed=cfg.seed,
        generators={N: derive_generator(cfg.seed, "rate-bootstrap", N) for N in Ns})
    io.write_metrics(ctx.out / io.METRICS, metrics)
    io.write_metrics(ctx.out / pde2d.SUMMARY_FILE, summary)
    Fg = np.asarray(pde["free_energy"])
    pde_fit = {"cells": cfg.cells, "h": list(map(float, pde["h"])), "steps": int(pde["steps"]),
               "dt_min": float(pde["dt_min"]), "dt_max": float(pde["dt_max"]),
               "cfl": float(pde["cfl"]), "scheme": str(pde["scheme"]),
               "mass_error": float(max(np.abs(pde["mass"] - 1).max(), np.abs(pde["mass_tail"] - 1).max())),
               "F_T": float(Fg[-1]), "F_inf": float(pde["F_inf"]),
               "F_t_long": float(pde["free_energy_tail"][-1]), "t_long": cfg.t_long,
               "gibbs_residual_T": float(pde["residual"][-1]),
               "gibbs_residual_long": float(pde["residual_tail"][-1]),
               "gibbs_fixed_point": {"residual": float(pde["fp_residual"]),
                                     "iterations": int(pde["fp_iterations"]),
                                     "l1_to_t_long": float(pde["fp_l1_to_t_long"])},
               "w2_quantisation_bound": Grid2D.torus(cfg.cells, PERIOD).quantisation(cfg.w2_sub)}
    r = g["long_time_rate_pde"]
    fit = {"N": Ns, "T": cfg.steps * cfg.dt, "tau": cfg.tau, "beta": cfg.beta, **tables,
           "long_time_rate_pde": r, "settled": g["settled"], "rate_window": g["rate_window"],
           "rate_rule": rule.describe(),
           "local_slope_range": g["local_slope_range"], "local_slope_end": g["local_slope_end"],
           "gibbs_residual_rate": g["gibbs_residual_rate"], "spectral": spectral,
           # backward Euler damps the slowest mode of ρ (rate r/2) by 1/(1 + r dt/2) per step:
           # the measured F rate is 2 log(1 + r dt/2)/dt ≈ r − r² dt/4
           "time_step_bias": None if r is None else r * r * float(pde["dt_max"]) / 4,
           "pde": pde_fit,
           # the grid error where the free-energy gap is measured (the plateau) and overall
           "pde_grid": grid_refinement(pde, "free_energy",
                                       {"free_energy_gap": [s["free_energy_gap"] for s in summary]},
                                       window=rule.plateau(np.asarray(pde["t"])))}
    io.write_json(ctx.out / pde2d.FIT_FILE, fit)
    write_arrays(ctx, cfg, done, pde_all, task, snaps_at, ["x0", "x1"])
    return summary


def _spectral_fit(cfg, pde, g):
    """fit.json's ``spectral`` (``analysis.rates.spectral_table``) with, on the run's own grid,
    the theory's asymptotic rate 2μ_1 beside the fitted window rate and the last local slope
    (their relative excess over it); None without ``spectral_cells``."""
    if "spectral_mu" not in pde:
        return None
    seq = {key: pde[f"spectral_{key}"] for key in ("cells", "h", "mu", "mass_mode", "max_imag",
                                                    "gibbs_residual", "mu_frozen_potential")}
    table = spectral_table(seq)
    own = table["rate_free_energy"][table["cells"].index(cfg.cells)]
    table["run_grid"] = {"cells": cfg.cells, "rate_free_energy": own,
                         "window_rate": g["long_time_rate_pde"], "local_slope_end": g["local_slope_end"],
                         "window_rate_excess": (None if g["long_time_rate_pde"] is None
                                                else g["long_time_rate_pde"] / own - 1),
                         "local_slope_end_excess": (None if g["local_slope_end"] is None
                                                    else g["local_slope_end"] / own - 1)}
    return table


FIGURES = pde2d.torus_figures
