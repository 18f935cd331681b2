"""pde2d-teacher: particles against the 2-D grid PDE on a teacher–student task with w ∈ R², over N.

Task: a two-layer network of units φ(x; w) = σ(⟨w, x⟩), x ~ N(0, I_2), w ∈ R² (no output
weight, no bias), σ = erf(·/√2) (or ReLU), against a teacher of m0 units
w*_k = r*(cos α_k, sin α_k) with weights 1/m0 (``teacher_angles`` in degrees,
``teacher_norm`` r*): ``TeacherStudent`` with closed-form U, V (DESIGN.md §1; risk without
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

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..seeds import derive_generator
from .. import io
from ..diagnostics import loglog_rate, risk as exact_risk
from ..dynamics import ParticleDynamics
from ..errors import ConfigError, DivergenceError
from ..models import TeacherStudent, Unit
from ..pde import Grid2D, GridDD, w2_grid
from .config import TwoLayerConfig, check_n_grid, geometric_grid
from .plan import Phase, Plan, snapshot_arrays

NAME = "pde2d-teacher"
VIEWS = ("density",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=40", "N_min=10", "replicas=2", "steps=10", "log_every=5",
        "save_every=10", "cells=12", "w2_replicas=2", "n_boot=100")
PDE_FILE = "pde.npz"

SMALL = {"N": 200, "N_min": 20, "n_values": 3, "replicas": 8, "dt": 0.05, "steps": 100,
         "log_every": 10, "save_every": 2, "w2_every": 100, "checkpoint_every": 100, "cells": 32,
         "w2_replicas": 2, "w2_sub": 1, "n_boot": 500}


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """See the module docstring.  ``save_every`` sets the snapshot interval (51 snapshots by
    default: the movie), ``w2_every`` the W2 interval (a multiple of ``log_every``; the still
    figure shows the snapshots at those times)."""

    scale: str = "full"
    N: int = 2000
    N_min: int = 20
    n_values: int = 5
    d: int = 2
    replicas: int = 8
    dt: float = 0.02
    steps: int = 1000
    log_every: int = 50
    save_every: int = 20
    w2_every: int = 500
    checkpoint_every: int = 1000
    activation: str = "erf"
    teacher_angles: str = "0,90"
    teacher_norm: float = 2.0
    init_std: float = 0.3
    xi: float = 1.0
    beta: float = math.inf
    lam: float = 0.0
    box_lo: float = -1.5
    box_hi: float = 2.5
    cells: int = 100
    pde_cfl: float = 0.4
    pde_dt_max: float = 0.1
    outflow_tol: float = 1e-6
    pde_refine: bool = True       # also solve on (2·cells)²: the grid error in fit.json
    w2_replicas: int = 4
    w2_sub: int = 1
    n_boot: int = 2000

    _choices = {"scale": ("full", "small"), "activation": ("erf", "relu")}
    _presets = {"scale": {"small": SMALL}}
    # the grid PDE is recorded at the run's k·dt: nothing that moves those times may change
    resume_mutable = ("checkpoint_every", "backend")

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): d = 2; the N grid (:func:`validate_n_grid`);
        teacher_angles parse; teacher_norm, init_std, xi, pde_cfl, pde_dt_max finite and > 0;
        beta > 0; lam finite ≥ 0; box_lo < box_hi, both finite; cells ≥ 6; pde_cfl ≤ 0.5
        when β = ∞; outflow_tol finite ≥ 0; 2 ≤ w2_replicas ≤ replicas; w2_sub ≥ 1."""
        super().validate()
        if self.d != 2:
            raise ConfigError(f"d must be 2 (the grid is two-dimensional), got {self.d}")
        validate_n_grid(self)
        self.angles()
        self.check_bounds(positive=("teacher_norm", "init_std", "xi", "pde_cfl", "pde_dt_max"),
                          nonnegative=("lam", "outflow_tol"), at_least_one=("w2_sub",))
        if not self.beta > 0:
            raise ConfigError(f"beta must be > 0 (inf for no noise), got {self.beta}")
        if not (math.isfinite(self.box_lo) and math.isfinite(self.box_hi) and self.box_hi > self.box_lo):
            raise ConfigError(f"box_hi must exceed box_lo, got box_lo={self.box_lo}, box_hi={self.box_hi}")
        if self.cells < 6:
            raise ConfigError(f"cells must be >= 6, got {self.cells}")
        if self.pde_cfl > 0.5 and self.beta == math.inf:
            raise ConfigError(f"pde_cfl must be <= 0.5 for the noiseless scheme, got {self.pde_cfl}")
        if not 2 <= self.w2_replicas <= self.replicas:
            raise ConfigError(f"w2_replicas must be in [2, replicas={self.replicas}], got {self.w2_replicas}")

    def angles(self) -> list[float]:
        """Teacher directions in radians."""
        try:
            a = [float(s) for s in self.teacher_angles.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"teacher_angles must be comma-separated degrees, got {self.teacher_angles!r}") from None
        if not a or not all(math.isfinite(x) for x in a):
            raise ConfigError(f"teacher_angles must list at least one finite angle, got {self.teacher_angles!r}")
        return [math.radians(x) for x in a]

    def grid(self) -> list[int]:
        """N values: ``config.geometric_grid(N_min, N, n_values)``."""
        return geometric_grid(self.N_min, self.N, self.n_values)


# ------------------------------------------------------------------------------------------
# helpers shared with pde2d-torus
# ------------------------------------------------------------------------------------------
def validate_n_grid(cfg) -> None:
    """Check the N-grid keys shared with pde2d-torus (``ConfigError``): those of
    ``config.check_n_grid``; w2_every ≥ 1 and a multiple of log_every (W2 is measured on
    metrics rows)."""
    check_n_grid(cfg)
    cfg.check_bounds(at_least_one=("w2_every",))
    if cfg.w2_every % cfg.log_every:
        raise ConfigError(f"w2_every must be a multiple of log_every, got {cfg.w2_every} and {cfg.log_every}")


def record_steps(cfg) -> tuple[list[int], list[int]]:
    """(metrics-row steps, snapshot steps): multiples of log_every / save_every and the last."""
    rows = sorted(set(range(0, cfg.steps, cfg.log_every)) | {cfg.steps})
    snaps = sorted(set(range(0, cfg.steps, cfg.save_every)) | {cfg.steps})
    return rows, snaps


def w2_steps(cfg) -> list[int]:
    """The steps where W2 to the grid density is measured: multiples of w2_every and the last."""
    return sorted(set(range(0, cfg.steps, cfg.w2_every)) | {cfg.steps})


def still_snapshots(st, steps, cfg) -> list[int]:
    """Indices of the snapshots (times ``st``, steps ``steps`` [S]) shown in the still
    figure: those at the W2 steps (multiples of w2_every and the last), at most 6."""
    keep = set(w2_steps(cfg))
    idx = [j for j, k in enumerate(steps) if int(k) in keep] or list(range(len(st)))
    return [idx[j] for j in np.unique(np.linspace(0, len(idx) - 1, min(6, len(idx))).round().astype(int))]


def plot_fits(ax, N, series, fit, *, guide=-0.5, guide_label="N^(−1/2)", floor=None):
    """Log-log panel: per-N means ± 2 s.e. of each (label, key, values, se, colour) in
    ``series`` with its fitted line from ``fit[key]``, a guide slope, an optional floor."""
    for label, key, v, se, colour in series:
        ax.errorbar(N, v, yerr=2 * se, fmt="o", color=colour, ms=4, capsize=2)
        f = fit[key]
        c = np.exp(np.mean(np.log(v)) - f["slope"] * np.mean(np.log(N)))
        ax.plot(N, c * N ** f["slope"], "-", color=colour,
                label=f"{label}: {f['slope']:.2f} [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]")
    v0 = series[0][2]
    ax.plot(N, v0[0] * (N / N[0]) ** guide, "--", color="0.5", lw=0.8, label=guide_label)
    if floor is not None:
        ax.axhline(floor, color="0.6", ls=":", lw=0.8, label="grid quantisation bound")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("N")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=6)


def density_panels(fig, axes, grid_axes, densities, times, particles, *, extra=None, period=None,
                   max_points: int = 500):
    """One panel per snapshot: the grid density (pcolormesh) with particles [n, 2] overlaid
    (white dots, the first ``max_points``); ``extra`` [m, 2] marked as crosses (teacher units,
    targets)."""
    xc, yc = grid_axes
    hx, hy = xc[1] - xc[0], yc[1] - yc[0]
    xf = np.concatenate([xc - hx / 2, [xc[-1] + hx / 2]])
    yf = np.concatenate([yc - hy / 2, [yc[-1] + hy / 2]])
    for ax, P, t, th in zip(axes, densities, times, particles):
        ax.pcolormesh(xf, yf, P.T, cmap="viridis", shading="flat", rasterized=True)
        pts = np.mod(th[:max_points], period) if period is not None else th[:max_points]
        ax.plot(pts[:, 0], pts[:, 1], ".", color="white", ms=1.2, alpha=0.6)
        if extra is not None:
            ax.plot(extra[:, 0], extra[:, 1], "x", color="red", ms=6, mew=1.5)
        ax.set_title(f"t = {t:.3g}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(xf[0], xf[-1])
        ax.set_ylim(yf[0], yf[-1])
        ax.tick_params(labelsize=7)


# ------------------------------------------------------------------------------------------
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


def grid_refinement(pde, key, gaps: dict, window=None) -> dict | None:
    """fit.json's ``pde_grid``: the grid-error estimate max_t |q_h(t) − q_h/2(t)| of the
    compared quantity ``key`` ("risk" or "free_energy") between the run's grid and one twice
    as fine per direction (``pde[key + "_fine"]``, same recorded times), set beside the
    particle–PDE gaps the run reports (``gaps``: name → one gap per N): for each, the smallest
    and the ratio error / smallest (a comparison the grid resolves wants it ≪ 1; the small
    modes keep it < 0.1 for the gap their tests check).  ``window`` (record indices) restricts
    the error in those ratios to the times the gaps are measured at (``max_abs_change_window``);
    ``max_abs_change`` is over every recorded time.  None when no fine grid was solved
    (``pde_refine=false``)."""
    if key + "_fine" not in pde:
        return None
    diff = np.abs(np.asarray(pde[key], dtype=np.float64) - np.asarray(pde[key + "_fine"], dtype=np.float64))
    err = float(diff.max())
    out = {"cells": int(pde["cells"]), "cells_fine": 2 * int(pde["cells"]), "quantity": key,
           "max_abs_change": err, "abs_change_T": float(diff[-1]), "gaps": {}}
    if window is not None:
        err = out["max_abs_change_window"] = float(diff[np.asarray(window)].max())
    for name, g in gaps.items():
        smallest = float(np.min(g))
        out["gaps"][name] = {"smallest": smallest, "ratio": err / smallest if smallest > 0 else math.inf}
    return out


def grid_plan(cfg, *, task, solve_pde, theta0, measure, snapshot, write_results, after=None,
              dynamics_kw=None) -> Plan:
    """The plan shared by pde2d-teacher and pde2d-torus: the grid PDE solved once (the
    prelude, checkpointed), then one phase per N of ``cfg.grid()`` running ``cfg.replicas``
    seeds of particles recorded against it.

    ``solve_pde(cfg, task, times) -> dict`` (the PDE record, with "density" [T, nx, ny] at the
    recorded ``times``); ``theta0(generator, N) -> [B, N, 2]`` float64 initial particles;
    ``measure(state, N, i, k, pde, w2) -> row`` at record index i (step k; W2 when ``w2``,
    at the :func:`w2_steps`); ``snapshot(state) -> array`` what a snapshot keeps; ``after(N, generator,
    pde) -> dict`` adds entries to N's record (with the phase's generator after the run).
    Per N the particles follow ``ParticleDynamics`` (population drift, dt, xi, beta from
    ``cfg``, plus ``dynamics_kw``), advanced in chunks between records, from a generator
    derived from (seed, "N", N).  ``write_results(done, pde, steps, snaps_at) -> summary rows``
    with done {N: {"series": rows, "snapshots": {k: snapshot}, **after}}."""
    rows_at, snaps_at = record_steps(cfg)
    steps = sorted(set(rows_at) | set(snaps_at))
    times = np.array([float(f"{k * cfg.dt:.15g}") for k in steps])
    index = {k: i for i, k in enumerate(steps)}
    keys = {N: f"N={N}" for N in cfg.grid()}
    dtype = getattr(torch, cfg.dtype)
    w2_set = set(w2_steps(cfg))

    def phases(shared):
        pde = shared["pde"]
        out = []
        for N in cfg.grid():
            def build(N=N):
                gen = derive_generator(cfg.seed, "N", N)
                dyn = ParticleDynamics(task, dt=cfg.dt, drift="population", xi=cfg.xi, beta=cfg.beta,
                                       backend=cfg.backend, **(dynamics_kw or {}))
                return dyn, dyn.init(theta0(gen, N).to(dtype), generator=gen)

            out.append(Phase(
                key=keys[N], build=build, chunked=True, snapshot=snapshot,
                measure=lambda dyn, st, pot, N=N: measure(st, N, index[st.step], st.step, pde,
                                                         st.step in w2_set),
                finish=(lambda dyn, st, rec, N=N: after(N, st.generator, pde)) if after else None))
        return out

    def results(ctx):
        done = {N: {"series": ctx.done[k].rows, "snapshots": ctx.done[k].snapshot_map(),
                    **ctx.done[k].result} for N, k in keys.items()}
        return write_results(ctx, done, ctx.shared["pde"], steps, snaps_at)

    return Plan(phases=phases, prelude=lambda: {"pde": solve_pde(cfg, task, times)},
                results=results, primary=keys[cfg.grid()[-1]],
                record={"task": task.to_dict(), "N_grid": cfg.grid()})


def plan(cfg: Config) -> Plan:
    """The grid PDE (and, with ``pde_refine``, its twice-as-fine twin) as the prelude, then one phase per N
    (:func:`grid_plan`): exact risks at every record, W2 to the grid density at snapshots."""
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
    out = ctx.out
    Ns = cfg.grid()
    metrics, summary = [], []
    gaps_T, sup_gaps, w2_T, w2_0 = [], [], [], []
    for N in Ns:
        series = done[N]["series"]
        for s in series:
            B = len(s["risk"])
            row = {"N": N, "step": s["step"], "t": s["t"], "risk": float(s["risk"].mean()),
                   "risk_se": float(s["risk"].std(ddof=1) / math.sqrt(B)), "risk_pde": s["risk_pde"],
                   "risk_gap": float(np.abs(s["risk"] - s["risk_pde"]).mean())}
            if "w2" in s:
                row["w2"] = float(s["w2"].mean())
            metrics.append(row)
        gap = np.abs(series[-1]["risk"] - series[-1]["risk_pde"])
        sup = np.max([np.abs(s["risk"] - s["risk_pde"]) for s in series], axis=0)
        w2s = [s["w2"] for s in series if "w2" in s]
        gaps_T.append(gap)
        sup_gaps.append(sup)
        w2_T.append(w2s[-1])
        w2_0.append(w2s[0])
        sd = lambda v: float(v.std(ddof=1) / math.sqrt(len(v)))  # noqa: E731
        summary.append({"N": N, "risk_gap_T": float(gap.mean()), "risk_gap_T_se": sd(gap),
                        "sup_risk_gap": float(sup.mean()), "sup_risk_gap_se": sd(sup),
                        "bias_T": float(abs(series[-1]["risk"].mean() - series[-1]["risk_pde"])),
                        "w2_0": float(w2s[0].mean()), "w2_0_se": sd(w2s[0]),
                        "w2_T": float(w2s[-1].mean()), "w2_T_se": sd(w2s[-1])})
    io.write_metrics(out / io.METRICS, metrics)
    io.write_metrics(out / "summary.csv", summary)
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    grid = Grid2D.box(cfg.box_lo, cfg.box_hi, cfg.cells)
    fit = {"N": Ns, "T": cfg.steps * cfg.dt, "theory_slope_w2": -0.5,
           "w2_T": loglog_rate(Ns, w2_T, **kw), "w2_0": loglog_rate(Ns, w2_0, **kw),
           "risk_gap_T": loglog_rate(Ns, gaps_T, **kw), "sup_risk_gap": loglog_rate(Ns, sup_gaps, **kw),
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
    io.write_json(out / "fit.json", fit)
    write_arrays(ctx, cfg, done, pde, task, snaps_at, ["w0", "w1"])
    return summary


def write_arrays(ctx, cfg, done, pde, task, snaps_at, param_names):
    """pde.npz (every array of the PDE record) and particles.npz (the runner's snapshot
    layout — t [S], step [S], theta [S, B, N_max, 2] for the largest N, phase<j>_theta for the
    others —, param_names, N_grid and the task's arrays)."""
    out = ctx.out
    io.write_npz(out / PDE_FILE, {k: np.asarray(v) for k, v in pde.items()})
    Ns = cfg.grid()
    arrays = snapshot_arrays(ctx.done, primary=f"N={Ns[-1]}")      # t [S]: the snapshot times
    arrays.update({"param_names": np.array(param_names), "N_grid": np.array(Ns), **task.arrays()})
    # every N's snapshots are in the runner's layout (theta: the largest N; phase<j>_theta)
    io.write_npz(out / io.PARTICLES, arrays)


def plot(run_dir, coords=None) -> list[Path]:
    """figures/density.png (the grid density at the snapshot times with the first seed's
    particles of the largest N, at most 500 of them, and the teacher units) and figures/rates.png (risk against t,
    the risk gaps and W2 against N with fitted slopes), from the run directory alone."""
    from ..plotting import pyplot, save_figure

    run_dir = Path(run_dir)
    plt = pyplot()
    fit = json.loads((run_dir / "fit.json").read_text())
    s = io.read_metrics(run_dir / "summary.csv")
    m = io.read_metrics(run_dir / io.METRICS)
    with np.load(run_dir / PDE_FILE) as z:
        pt, x, y, dens, prisk = z["t"], z["x"], z["y"], z["density"], z["risk"]
    cfg = Config.from_mapping(io.load_run_config(run_dir)["config"])
    with np.load(run_dir / io.PARTICLES) as z:
        st, Ns, ks = z["t"], z["N_grid"], z["step"]
        th = z["theta"][:, 0]                                   # (S, N, 2): the largest N, seed 0
        teacher = z["teacher_theta"]
    keep = still_snapshots(st, ks, cfg)
    st, th = st[keep], th[keep]
    idx = [int(np.argmin(np.abs(pt - t))) for t in st]
    fig, axes = plt.subplots(1, len(st), figsize=(2.6 * len(st), 2.8), dpi=120, squeeze=False)
    density_panels(fig, axes[0], (x, y), dens[idx], st, th, extra=teacher)
    fig.suptitle(f"grid density ({len(x)}² cells) and N = {Ns[-1]} particles (seed 0, ≤ 500 shown); "
                 "× teacher", fontsize=9)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "density.png")]

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6), dpi=120)
    ax[0].plot(pt, prisk, "k-", lw=1.5, label="grid PDE")
    for j, N in enumerate(Ns):
        sel = m["N"] == N
        ax[0].plot(m["t"][sel], m["risk"][sel], "o", ms=2.5, color=f"C{j}", label=f"N = {N}")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("t")
    ax[0].set_ylabel("R")
    ax[0].legend(frameon=False, fontsize=6)
    ax[0].grid(alpha=0.3)
    N = s["N"]
    plot_fits(ax[1], N, [("|R_N(T) − R(T)|", "risk_gap_T", s["risk_gap_T"], s["risk_gap_T_se"], "C0"),
                         ("sup_t |R_N − R|", "sup_risk_gap", s["sup_risk_gap"], s["sup_risk_gap_se"], "C1")],
              fit, guide=-1.0, guide_label="N^(−1)")
    if fit.get("pde_grid"):
        ax[1].axhline(fit["pde_grid"]["max_abs_change"], color="0.6", ls=":", lw=0.8,
                      label="grid error (max_t |R_h − R_h/2|)")
    ax[1].set_title("risk gap to the grid PDE", fontsize=9)
    ax[1].legend(frameon=False, fontsize=6)
    plot_fits(ax[2], N, [("W2 at T", "w2_T", s["w2_T"], s["w2_T_se"], "C2"),
                         ("W2 at 0 (i.i.d.)", "w2_0", s["w2_0"], s["w2_0_se"], "C3")],
              fit, floor=fit["pde"]["w2_quantisation_bound"])
    ax[2].set_title("W2(particles, grid density)", fontsize=9)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "rates.png"))
    return paths


FIGURES = plot
