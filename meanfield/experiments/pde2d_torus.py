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
to T and then on (``t_long``) towards its stationary state, the self-consistent Gibbs law
ρ_∞ ∝ exp(−βΨ(·; ρ_∞)): the residual ‖G(ρ) − ρ‖₁ of the Gibbs map G is reported at T and
at t_long, and F_∞ = F_β(ρ_{t_long}).

Particles: for every N of a geometric grid from ``N_min`` to ``N`` (``n_values`` values),
``replicas`` seeds (one tensor), mean-field Langevin (``ParticleDynamics`` with population
drift), free energy F_N = ½R(ρ_N) + τ Ĥ_N with R exact and Ĥ_N the Kozachenko–Leonenko
1-NN estimate of ∫ρ log ρ with periodic distances (``meanfield.diagnostics.knn_entropy``,
the notebook's estimator, with the sign of ∫ρ log ρ), every ``log_every`` steps; W2 to the grid density with the periodic
ground cost every ``w2_every`` steps.  Reference: the same F_N estimate for N i.i.d.
draws of the grid density at T (what sampling the limit would give, estimator bias included;
the self-interaction term alone adds ≈ k(0)/(2N) = 7.6/N to ½R there).  Reported against N (log-log slopes, 95 %
bootstrap intervals over seeds): the free-energy gap |F_N − F| averaged over the last quarter
of [0, T] per seed, and W2 at T.  Decay rates: log(F(t) − F_∞) fitted over the window
t ≥ ``fit_t0`` where the grid's gap exceeds ``fit_floor``, for the grid and, per N, for the
seed-mean particle curve against its own plateau (the mean over the last quarter), with a
bootstrap interval over seeds.

Defaults: τ = 0.1, N from 20 to 2000 (5 values), 8 seeds, dt = 0.02 (a quarter of the
notebook's step), T = 40 (2000 steps), 64² cells (h = 0.098; at 128² the free energy moved
by < 6e-5 at every recorded t and 4e-7 at T = 40, measured), t_long = 100.  ``scale=small``:
N from 20 to 200 (3 values), 4 seeds, dt = 0.05, T = 10, 24² cells, t_long = 30.  Outputs: metrics.csv
(per N and t: seed means of F_N, R, Ĥ, and F of the grid), summary.csv (per N), fit.json,
pde.npz (density snapshots, F, R, residuals), particles.npz, figures density.png (grid
density with the particles of the largest N and the targets at the snapshots) and
free_energy.png.  Resumable per N like pde2d-teacher.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import bootstrap, linregress

from .. import io
from ..diagnostics import loglog_rate
from ..errors import ConfigError, DivergenceError
from ..interact import evaluate
from ..models import TorusMMD
from ..pde import Grid2D, GridDD, knn_neg_entropy, w2_grid
from .config import RunConfig, geometric_grid
from .pde2d_teacher import (density_panels, grid_plan, plot_fits, record_steps, still_snapshots,
                            validate_n_grid, write_arrays)
from .plan import Plan

NAME = "pde2d-torus"
PDE_FILE = "pde.npz"
PERIOD = 2 * math.pi

SMALL = {"N": 200, "N_min": 20, "n_values": 3, "replicas": 4, "dt": 0.05, "steps": 200,
         "log_every": 8, "save_every": 4, "w2_every": 200, "checkpoint_every": 200, "cells": 24,
         "pde_cfl": 4.0,
         "pde_dt_max": 0.1, "t_long": 30.0, "w2_replicas": 2, "n_boot": 300, "fit_t0": 1.0}


@dataclass(frozen=True)
class Config(RunConfig):
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
    log_every: int = 50
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
    t_long: float = 100.0
    fit_t0: float = 2.0
    fit_floor: float = 1e-3
    w2_replicas: int = 4
    w2_sub: int = 1
    n_boot: int = 2000

    _choices = {"scale": ("full", "small")}
    _presets = {"scale": {"small": SMALL}}
    # the grid PDE is recorded at the run's k·dt: nothing that moves those times may change
    resume_mutable = ("checkpoint_every", "backend")

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): d = 2; the N grid
        (``pde2d_teacher.validate_n_grid``); tau, xi, pde_cfl, pde_dt_max, fit_floor finite
        and > 0; n_targets, modes ≥ 1; cells ≥ 8; t_long ≥ T = steps·dt; 0 ≤ fit_t0 < 0.75·T;
        2 ≤ w2_replicas ≤ replicas; w2_sub ≥ 1."""
        super().validate()
        if self.d != 2:
            raise ConfigError(f"d must be 2 (the torus is two-dimensional), got {self.d}")
        validate_n_grid(self)
        self.check_bounds(at_least_one=("n_targets", "modes", "w2_sub"),
                          positive=("tau", "xi", "pde_cfl", "pde_dt_max", "fit_floor"))
        if self.cells < 8:
            raise ConfigError(f"cells must be >= 8, got {self.cells}")
        T = self.steps * self.dt
        if not (math.isfinite(self.t_long) and self.t_long >= T):
            raise ConfigError(f"t_long must be >= T = steps·dt = {T:g}, got {self.t_long}")
        if not 0 <= self.fit_t0 < 0.75 * T:
            raise ConfigError(f"fit_t0 must be in [0, 0.75·T = {0.75 * T:g}), got {self.fit_t0}")
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
    dd_long = GridDD(task, grid, xi=cfg.xi, beta=cfg.beta, cfl=cfg.pde_cfl, backend=cfg.backend,
                     dtype=torch.float64, dt_max=4 * cfg.pde_dt_max)
    res_long = []
    tail = dd_long.solve(sol.density[-1], long_t,
                         callback=lambda k, t, P: res_long.append(dd.gibbs_residual(P, cfg.beta)))
    F_inf = float(tail.free_energy[-1])
    return {"t": times, "x": grid.axes()[0], "y": grid.axes()[1], "density": sol.density,
            "risk": sol.risk, "free_energy": sol.free_energy, "mass": sol.mass,
            "neg_entropy": np.array([dd.neg_entropy(P) for P in sol.density]),
            "residual": np.array([dd.gibbs_residual(P, cfg.beta) for P in sol.density]),
            "t_tail": T + long_t, "free_energy_tail": tail.free_energy,
            "residual_tail": np.array(res_long), "mass_tail": tail.mass, "gibbs": tail.density[-1],
            "F_inf": F_inf, "steps": sol.steps + tail.steps, "dt_min": min(sol.dt_min, tail.dt_min),
            "dt_max": max(sol.dt_max, tail.dt_max), "cfl": sol.cfl, "scheme": sol.scheme,
            "h": np.array(grid.h), "cells": cfg.cells}


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
def _window(cfg, pde):
    """Record indices of the grid's log-linear fit: t ≥ fit_t0 and F(t) − F_∞ ≥ fit_floor."""
    gap = pde["free_energy"] - pde["F_inf"]
    idx = np.flatnonzero((pde["t"] >= cfg.fit_t0) & (gap >= cfg.fit_floor))
    if len(idx) < 3:
        raise ConfigError(f"fewer than 3 recorded times with t >= fit_t0={cfg.fit_t0} and a grid "
                          f"free-energy gap >= fit_floor={cfg.fit_floor:g}; lower fit_t0 or fit_floor, "
                          "or record more often (log_every)")
    return idx


def _plateau(cfg, t):
    """Record indices of the last quarter of [0, T]."""
    return np.flatnonzero(t >= 0.75 * cfg.steps * cfg.dt)


def _decay_rate(t, gap):
    """−slope of log(gap) against t (linregress); NaN when a gap is not positive."""
    if (gap <= 0).any():
        return float("nan")
    return float(-linregress(t, np.log(gap)).slope)


def _exp_fit(t, F, r0):
    """Least-squares fit of F(t) ≈ c + A e^{−r t} (``scipy.optimize.curve_fit``): the rate r
    (NaN when the fit fails).  Used where the limit c is unknown (the particles' plateau
    carries their N-dependent bias), and on the grid over the same window for comparison."""
    from scipy.optimize import curve_fit

    t0 = t[0]
    try:
        p, _ = curve_fit(lambda u, c, A, r: c + A * np.exp(-r * (u - t0)), t, F,
                         p0=(F[-1], F[0] - F[-1], r0), maxfev=20_000)
    except (RuntimeError, ValueError):
        return float("nan")
    return float(p[2]) if np.isfinite(p).all() and p[2] > 0 else float("nan")


def _particle_rate(F, t, win, r0, *, n_boot, seed):
    """Decay rate of the seed-mean F_N(t) (F [B, T]) by :func:`_exp_fit` on ``win``, with a
    95 % percentile bootstrap interval (seeds resampled, whole curves kept together)."""

    def stat(seeds):
        return _exp_fit(t[win], F[np.asarray(seeds, dtype=int)].mean(0)[win], r0)

    rate = stat(np.arange(len(F)))
    rng = np.random.default_rng(seed)
    kw = {"rng": rng} if "rng" in inspect.signature(bootstrap).parameters else {"random_state": rng}
    res = bootstrap((np.arange(len(F)),), stat, n_resamples=n_boot, method="percentile",
                    vectorized=False, **kw)
    ci = res.confidence_interval
    return {"rate": rate, "ci95": [float(ci.low), float(ci.high)]}


def _write_results(cfg, ctx, done, pde_all, task, snaps_at):
    out = ctx.out
    Ns = cfg.grid()
    # the analysis uses the PDE at the metrics rows' times; pde.npz keeps every recorded time
    # (the snapshots' too, for the movie)
    rows_at, _ = record_steps(cfg)
    row_t = np.array([float(f"{k * cfg.dt:.15g}") for k in rows_at])
    sel = np.isin(np.asarray(pde_all["t"]), row_t)
    pde = {k: (np.asarray(v)[sel] if k in ("t", "density", "risk", "free_energy", "mass",
                                           "neg_entropy", "residual") else v) for k, v in pde_all.items()}
    t = np.asarray(pde["t"])
    Fg = np.asarray(pde["free_energy"])
    win, plat = _window(cfg, pde), _plateau(cfg, t)
    rate_pde = _decay_rate(t[win], Fg[win] - pde["F_inf"])
    pwin = np.flatnonzero(t >= cfg.fit_t0)                 # the particles' window: [fit_t0, T]
    rate_pde_window = _exp_fit(t[pwin], Fg[pwin], rate_pde)
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
        rates[N] = _particle_rate(F, t, pwin, rate_pde_window, n_boot=max(100, cfg.n_boot // 10),
                                  seed=cfg.seed + N)
        sd = lambda v: float(v.std(ddof=1) / math.sqrt(len(v)))  # noqa: E731
        summary.append({"N": N, "free_energy_gap": float(gap.mean()), "free_energy_gap_se": sd(gap),
                        "free_energy_bias": float((F[:, plat] - Fg[plat]).mean()),
                        "free_energy_gap_iid": float(gaps_iid[-1].mean()),
                        "free_energy_gap_iid_se": sd(gaps_iid[-1]),
                        "w2_T": float(w2.mean()), "w2_T_se": sd(w2),
                        "decay_rate": rates[N]["rate"], "decay_rate_lo": rates[N]["ci95"][0],
                        "decay_rate_hi": rates[N]["ci95"][1]})
    io.write_metrics(out / io.METRICS, metrics)
    io.write_metrics(out / "summary.csv", summary)
    fit = {"N": Ns, "T": cfg.steps * cfg.dt, "tau": cfg.tau, "beta": cfg.beta,
           "free_energy_gap": loglog_rate(Ns, gaps, **kw), "w2_T": loglog_rate(Ns, w2_T, **kw),
           "free_energy_gap_iid": loglog_rate(Ns, gaps_iid, **kw),
           "decay_rate_pde": rate_pde, "fit_window_pde": [float(t[win][0]), float(t[win][-1])],
           "decay_rate_pde_window": rate_pde_window,
           "decay_rate_particles": {str(N): rates[N] for N in Ns},
           "fit_window": [float(t[pwin][0]), float(t[pwin][-1])],
           "pde": {"cells": cfg.cells, "h": list(map(float, pde["h"])), "steps": int(pde["steps"]),
                   "dt_min": float(pde["dt_min"]), "dt_max": float(pde["dt_max"]),
                   "cfl": float(pde["cfl"]), "scheme": str(pde["scheme"]),
                   "mass_error": float(max(np.abs(pde["mass"] - 1).max(), np.abs(pde["mass_tail"] - 1).max())),
                   "F_T": float(Fg[-1]), "F_inf": float(pde["F_inf"]), "t_long": cfg.t_long,
                   "gibbs_residual_T": float(pde["residual"][-1]),
                   "gibbs_residual_long": float(pde["residual_tail"][-1]),
                   "w2_quantisation_bound": Grid2D.torus(cfg.cells, PERIOD).quantisation(cfg.w2_sub)}}
    io.write_json(out / "fit.json", fit)
    write_arrays(ctx, cfg, done, pde_all, task, snaps_at, ["x0", "x1"])
    return summary


def plot(run_dir, coords=None) -> list[Path]:
    """figures/density.png (grid density at the snapshots with the first seed's particles of
    the largest N and the targets) and figures/free_energy.png (F − F_∞ against t for the grid
    and the particles, the free-energy gap and W2 against N), from the run directory alone."""
    from ..plotting import _plt, save_figure

    run_dir = Path(run_dir)
    plt = _plt()
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

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6), dpi=120)
    tall = np.concatenate([pt, tt[1:]])
    Fall = np.concatenate([Fg, Ft[1:]])
    # F_∞ is F at t_long: the gap is resolved only well above F's last change
    ok = Fall - F_inf > 100 * max(abs(Ft[-2] - Ft[-1]), 1e-15)
    ax[0].plot(tall[ok], (Fall - F_inf)[ok], "k-", lw=1.5,
               label=f"grid PDE, rate {fit['decay_rate_pde']:.3f} (window fit "
                     f"{fit['decay_rate_pde_window']:.3f})")
    for j, N in enumerate(Ns):
        sel = m["N"] == N
        tN, FN = m["t"][sel], m["free_energy"][sel]
        gap = FN - F_inf
        r = fit["decay_rate_particles"][str(int(N))]
        ax[0].plot(tN[gap > 0], gap[gap > 0], "o", ms=2.5, color=f"C{j}",
                   label=f"N = {N}, rate {r['rate']:.3f}")
    ax[0].axvspan(*fit["fit_window"], color="0.9", zorder=0)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("t (= notebook iterations × η)")
    ax[0].set_ylabel("F_β(t) − F_∞ (grid's F_∞)")
    ax[0].legend(frameon=False, fontsize=6)
    ax[0].grid(alpha=0.3)
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
