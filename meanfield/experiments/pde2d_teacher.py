"""pde2d-teacher: particles against the 2-D grid PDE on a teacher–student task with w ∈ R², over N.

Task: a two-layer network of units φ(x; w) = σ(⟨w, x⟩), x ~ N(0, I_2), w ∈ R² (no output
weight, no bias), σ = erf(·/√2) (or ReLU), against a teacher of m0 units
w*_k = r*(cos α_k, sin α_k) with weights 1/m0 (``teacher_angles`` in degrees,
``teacher_norm`` r*): ``TeacherStudent`` with closed-form U, V (docs/design.md §1; risk without
½).  No rotation symmetry, so the radial solver does not apply; the limit is the 2-D PDE

    ∂_t ρ = 2ξ ∇·(ρ ∇Ψ_λ(w; ρ)) + 2ξβ⁻¹ Δρ,     ρ_0 = N(0, κ² I_2),

solved by ``meanfield.pde.GridDD`` on the box [box_lo, box_hi]² with ``cells``² cells (MUSCL,
second order; its nonlocal velocity comes from the same interaction backend as the
particles').  The default teacher (two units at 0° and 90°, norm 2, erf) pulls the blob
from 0 towards (0.5, 0.5) (the linear part of f*), then stretches it along the anti-diagonal
into two lobes heading for the two teacher units: the risk falls from 0.30 to 0.011 by
T = 20.  The box holds every particle of that run (measured range [−0.9, 2.2] at t ≤ 40).

Particles: for every N of a geometric grid from ``N_min`` to ``N`` (``n_values`` values),
``replicas`` independent seeds (one tensor), Wasserstein gradient descent (population drift,
Euler steps of size ``dt`` on the MMN time axis; Langevin when β < ∞), ρ_N(0) i.i.d. from
ρ_0.  Recorded per (N, seed): the exact risk R(ρ_N(t)) every ``log_every`` steps against the
grid's R(ρ_t), and W2 between the particles and the grid density (POT ``ot.emd2``, cells
split into ``w2_sub``² weighted points; ``w2_replicas`` seeds) every ``w2_every`` steps.
Fitted log-log slopes in N (scipy ``linregress`` on the seed means, 95 % percentile
``scipy.stats.bootstrap`` intervals with seeds resampled within each N) for W2 at T, W2 at
t = 0 (i.i.d. samples of ρ_0: the sampling reference), |R_N(T) − R(T)| and
sup_t |R_N(t) − R(t)|.  With ``pde_refine`` (default) a second grid with twice the cells
per direction gives the grid-error estimate max_t |R_h − R_h/2| at the recorded times,
reported in fit.json ``pde_grid`` beside the smallest gap it is compared with (measured,
small mode: 32² vs 64², 3.6 % of the smallest sup_t gap; full mode: 100² vs 200², at most
3.1·10⁻⁵ over t (at t = 1) and 6.9·10⁻⁷ at T, under 1 % of the smallest sup_t gap and of the
smallest gap at T, both at N = 2000).  In full mode the 200² solve is the run's longest
part: 1700 s on one thread against 88 s for the 100² grid (``pde_refine=false`` skips it).

Defaults (full mode): N from 20 to 2000 (5 values), 8 seeds, dt = 0.02, T = 20 (1000 steps),
100² cells on [−1.5, 2.5]² (h = 0.04), W2 at t = 0, 10, 20 with one point per cell
(quantisation bound 0.016; two per direction made each N = 2000 transport problem 2000 ×
21 000 and the run several times longer).  Euler's time-step bias in the particles' risk
at T, measured at N = 2000: 1.5·10⁻⁵ between dt = 0.05 and 0.02 (2.5·10⁻⁵ between 0.1 and
0.05).  ``scale=small``: N from 20 to 200 (3 values), 8 seeds, T = 5, 32² cells.  Outputs: metrics.csv (per N and recorded t: seed-mean risk and s.e., risk_pde, the
seed-mean |gap|, w2 every w2_every steps), summary.csv (per N), fit.json (slopes, intervals, the
PDE's time stepping, mass error and outflow, grid error, W2 quantisation bound), pde.npz
(t, cell centres, density [T, nx, ny], risk, mass, mass_out), particles.npz (51 snapshots per
N by default, the runner's layout: ``theta`` [S, B, N_max, 2] at t [S] for the largest N,
``phase<j>_theta`` for the others), figures density.png (grid density with the particles of
the largest N overlaid at the W2 times) and rates.png; ``meanfield animate`` makes the movie.
Resumable: finished N values are kept in the checkpoint and skipped; the PDE is solved once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import io
from ..analysis.rates import grid_refinement, risk_gap_tables
from ..diagnostics import risk as exact_risk
from ..errors import ConfigError, DivergenceError
from ..figures import pde2d
from ..models import TeacherStudent, Unit
from ..pde import Grid2D, GridDD, w2_grid
from .pde2d_common import GridRunConfig, grid_plan, write_arrays
from .plan import Plan

NAME = "pde2d-teacher"
VIEWS = ("density",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=40", "N_min=10", "replicas=2", "steps=10", "log_every=5",
        "save_every=10", "cells=12", "w2_replicas=2", "n_boot=100")

SMALL = {"N": 200, "N_min": 20, "n_values": 3, "replicas": 8, "dt": 0.05, "steps": 100,
         "log_every": 10, "save_every": 2, "w2_every": 100, "checkpoint_every": 100, "cells": 32,
         "w2_replicas": 2, "w2_sub": 1, "n_boot": 500}


@dataclass(frozen=True)
class Config(GridRunConfig):
    """See the module docstring (and ``pde2d_common.GridRunConfig`` for the keys both pde2d
    experiments share).  ``save_every`` sets the snapshot interval (51 snapshots by default:
    the movie), ``w2_every`` the W2 interval (a multiple of ``log_every``; the still figure
    shows the snapshots at those times)."""

    dt: float = 0.02
    steps: int = 1000
    log_every: int = 50
    save_every: int = 20
    checkpoint_every: int = 1000
    activation: str = "erf"
    teacher_angles: str = "0,90"
    teacher_norm: float = 2.0
    init_std: float = 0.3
    beta: float = math.inf
    lam: float = 0.0
    box_lo: float = -1.5
    box_hi: float = 2.5
    outflow_tol: float = 1e-6

    _choices = {"scale": ("full", "small"), "activation": ("erf", "relu")}
    _presets = {"scale": {"small": SMALL}}
    _help = {"activation": "σ of the units: erf (σ(z) = erf(z/√2)) or relu",
             "teacher_angles": "directions α_k of the teacher's units, in degrees, comma-separated",
             "teacher_norm": "r*: the teacher's units are w*_k = r*(cos α_k, sin α_k)",
             "init_std": "κ: the initial law ρ_0 = N(0, κ² I_2)",
             "beta": "inverse temperature β of the noise (inf: none)",
             "lam": "λ of the penalty (λ/2)|w|²",
             "box_lo": "the PDE's box [box_lo, box_hi]² starts here",
             "box_hi": "the PDE's box [box_lo, box_hi]² ends here",
             "outflow_tol": "mass that may leave the PDE's box before the run stops"}

    def validate(self):
        """GridRunConfig's checks (d = 2, the N grid, cells ≥ 6, w2 keys, xi, pde_cfl,
        pde_dt_max), then (``ConfigError``): teacher_angles parse; teacher_norm, init_std
        finite and > 0; beta > 0; lam, outflow_tol finite ≥ 0; box_lo < box_hi, both finite;
        pde_cfl ≤ 0.5 when β = ∞."""
        super().validate()
        self.angles()
        self.check_bounds(positive=("teacher_norm", "init_std"), nonnegative=("lam", "outflow_tol"))
        if not self.beta > 0:
            raise ConfigError(f"beta must be > 0 (inf for no noise), got {self.beta}")
        if not (math.isfinite(self.box_lo) and math.isfinite(self.box_hi) and self.box_hi > self.box_lo):
            raise ConfigError(f"box_hi must exceed box_lo, got box_lo={self.box_lo}, box_hi={self.box_hi}")
        if self.pde_cfl > 0.5 and self.beta == math.inf:
            raise ConfigError(f"pde_cfl must be <= 0.5 for the noiseless scheme, got {self.pde_cfl}")

    def angles(self) -> list[float]:
        """Teacher directions in radians."""
        try:
            a = [float(s) for s in self.teacher_angles.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"teacher_angles must be comma-separated degrees, got {self.teacher_angles!r}") from None
        if not a or not all(math.isfinite(x) for x in a):
            raise ConfigError(f"teacher_angles must list at least one finite angle, got {self.teacher_angles!r}")
        return [math.radians(x) for x in a]


def build_task(cfg: Config) -> TeacherStudent:
    """The task: units σ(⟨w, x⟩) on R² (no output weight, no bias), teacher w*_k =
    r*(cos α_k, sin α_k) [m0, 2] with r* = ``teacher_norm``, α_k = ``angles()``, weights 1/m0."""
    unit = Unit(2, cfg.activation, output_weight=False)
    ang = np.array(cfg.angles())
    teacher = cfg.teacher_norm * np.stack([np.cos(ang), np.sin(ang)], -1)
    return TeacherStudent(unit, torch.tensor(teacher, dtype=torch.float64))


def solve_pde(cfg: Config, task, times, cells):
    """The grid PDE on ``cells``² cells recorded at ``times``: a GridSolution."""
    grid = Grid2D.box(cfg.box_lo, cfg.box_hi, cells)
    dd = GridDD(task, grid, xi=cfg.xi, beta=cfg.beta, lam=cfg.lam, cfl=cfg.pde_cfl,
                backend=cfg.backend, dtype=getattr(torch, cfg.dtype), outflow_tol=cfg.outflow_tol,
                dt_max=cfg.pde_dt_max)
    return dd.solve(grid.gaussian(0.0, cfg.init_std), times)


def _pde_record(cfg, task, times):
    sol = solve_pde(cfg, task, times, cfg.cells)
    g = sol.grid
    rec = {"t": times, "x": g.axes()[0], "y": g.axes()[1], "density": sol.density,
           "risk": sol.risk, "free_energy": sol.free_energy, "mass": sol.mass,
           "mass_out": sol.mass_out, "steps": sol.steps,
           "dt_min": sol.dt_min, "dt_max": sol.dt_max, "cfl": sol.cfl, "scheme": sol.scheme,
           "h": np.array(g.h), "box": np.array([cfg.box_lo, cfg.box_hi]), "cells": cfg.cells}
    if cfg.pde_refine:
        rec["risk_fine"] = solve_pde(cfg, task, times, 2 * cfg.cells).risk
    return rec


def plan(cfg: Config) -> Plan:
    """The grid PDE (and, with ``pde_refine``, its twice-as-fine twin) as the prelude, then one phase per N
    (``pde2d_common.grid_plan``): exact risks at every record, W2 to the grid density at snapshots."""
    task = build_task(cfg)
    grid = Grid2D.box(cfg.box_lo, cfg.box_hi, cfg.cells)

    def measure(state, N, i, k, pde, w2):
        R = exact_risk(task, state.theta, backend=cfg.backend)[0].double().numpy()
        if not np.isfinite(R).all():
            raise DivergenceError(f"N={N}, step {k}: non-finite risk; the step size is likely too large")
        row = {"step": k, "t": float(pde["t"][i]), "risk": R, "risk_pde": float(pde["risk"][i])}
        if w2:
            th = state.theta.detach().double().cpu().numpy()
            row["w2"] = np.array([w2_grid(grid, pde["density"][i], th[b], sub=cfg.w2_sub)
                                  for b in range(cfg.w2_replicas)])
        return row

    return grid_plan(
        cfg, task=task, solve_pde=_pde_record,
        theta0=lambda gen, N: cfg.init_std * torch.randn(cfg.replicas, N, 2, generator=gen,
                                                         dtype=torch.float64),
        measure=measure, dynamics_kw={"lam": cfg.lam},
        snapshot=lambda st: st.theta.detach().double().cpu().numpy().astype(np.float32),
        write_results=lambda ctx, done, pde, steps, snaps_at: _write_results(
            cfg, ctx, done, pde, task, steps, snaps_at))


def _write_results(cfg, ctx, done, pde, task, steps, snaps_at):
    """metrics.csv, summary.csv and fit.json (``analysis.rates.risk_gap_tables``: the risk
    gaps and W2 over N; the PDE's bookkeeping; ``analysis.rates.grid_refinement``), then
    pde.npz and particles.npz (``pde2d_common.write_arrays``)."""
    Ns = cfg.grid()
    metrics, summary, slopes = risk_gap_tables(Ns, {N: done[N]["series"] for N in Ns},
                                               n_boot=cfg.n_boot, seed=cfg.seed)
    io.write_metrics(ctx.out / io.METRICS, metrics)
    io.write_metrics(ctx.out / pde2d.SUMMARY_FILE, summary)
    grid = Grid2D.box(cfg.box_lo, cfg.box_hi, cfg.cells)
    fit = {"N": Ns, "T": cfg.steps * cfg.dt, "theory_slope_w2": -0.5, **slopes,
           "pde": {"cells": cfg.cells, "h": list(map(float, pde["h"])), "steps": int(pde["steps"]),
                   "dt_min": float(pde["dt_min"]), "dt_max": float(pde["dt_max"]),
                   "cfl": float(pde["cfl"]), "scheme": str(pde["scheme"]),
                   "mass_error": float(np.abs(pde["mass"] + pde["mass_out"] - 1).max()),
                   "mass_out": float(pde["mass_out"][-1]),
                   "w2_quantisation_bound": grid.quantisation(cfg.w2_sub),
                   "risk_0": float(pde["risk"][0]), "risk_T": float(pde["risk"][-1])},
           "pde_grid": grid_refinement(pde, "risk", {
               "sup_risk_gap": [r["sup_risk_gap"] for r in summary],
               "risk_gap_T": [r["risk_gap_T"] for r in summary]})}
    io.write_json(ctx.out / pde2d.FIT_FILE, fit)
    write_arrays(ctx, cfg, done, pde, task, snaps_at, ["w0", "w1"])
    return summary


FIGURES = pde2d.teacher_figures
