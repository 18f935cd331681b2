"""The pieces the 2-D grid PDE experiments share (pde2d-teacher, pde2d-torus): their common
config keys and checks (:class:`GridRunConfig`), their recording steps, the plan
(:func:`grid_plan`: the grid PDE solved once as the prelude, then one phase per N of
``replicas`` particle systems recorded against it) and the pde.npz / particles.npz writer
(:func:`write_arrays`), and pde2d-torus's grid solve to its Gibbs state (:func:`solve_torus_pde`).

Each experiment supplies its task, its PDE solve, its initial particles and what a record
measures (docs/design.md §3 for the runner's contract); their rates are fitted in
``meanfield.analysis.rates`` and their figures drawn by ``meanfield.figures.pde2d``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import io
from ..dynamics import ParticleDynamics
from ..errors import ConfigError
from ..figures.pde2d import PDE_FILE, PERIOD, w2_steps
from ..pde import Grid2D, GridDD
from ..pde.grid2d_spectrum import spectral_sequence
from ..seeds import derive_generator
from .config import TwoLayerConfig, boot_bytes, check_n_grid, geometric_grid, n_grid_bytes
from .plan import Phase, Plan, snapshot_arrays


@dataclass(frozen=True)
class GridRunConfig(TwoLayerConfig):
    """Keys shared by the pde2d experiments (their docstrings say what each means): the N grid
    (N_min … N, n_values values, ``replicas`` seeds per N, ``n_boot`` bootstrap resamples),
    d = 2, the snapshot (``save_every``) and W2 (``w2_every``, on ``w2_replicas`` seeds, cells
    split into ``w2_sub``² points) intervals, the time scale ξ and the grid (``cells``² cells,
    ``pde_cfl``, ``pde_dt_max``, ``pde_refine``: also solve on (2·cells)²)."""

    scale: str = "full"
    N: int = 2000
    N_min: int = 20
    n_values: int = 5
    d: int = 2
    replicas: int = 8
    w2_every: int = 500
    xi: float = 1.0
    cells: int = 100
    pde_cfl: float = 0.4
    pde_dt_max: float = 0.1
    pde_refine: bool = True       # also solve on (2·cells)²: the grid error in fit.json
    w2_replicas: int = 4
    w2_sub: int = 1
    n_boot: int = 2000

    _choices = {"scale": ("full", "small")}
    # the grid PDE is recorded at the run's k·dt: nothing that moves those times may change
    resume_mutable = ("checkpoint_every", "backend")
    _surface = "grid"             # what is two-dimensional (the d check's message)
    _min_cells = 6
    _help = {"scale": "preset: full (the README's run) or small (scale=small: the tests')",
             "N": "the largest particle count of the N grid",
             "N_min": "the smallest particle count of the N grid",
             "n_values": "values of the geometric N grid from N_min to N",
             "d": "2: the PDE's grid is two-dimensional",
             "replicas": "independent seeds per N (replicas of one tensor)",
             "w2_every": "W2 between the particles and the grid density every this many steps",
             "xi": "time scale ξ of the dynamics",
             "cells": "cells per direction of the PDE's grid (cells² in all)",
             "pde_cfl": "CFL number of the grid PDE's time steps",
             "pde_dt_max": "the grid PDE's largest time step",
             "pde_refine": "also solve on (2·cells)² cells: the grid error in fit.json",
             "w2_replicas": "seeds whose W2 to the grid density is measured",
             "w2_sub": "each cell split into w2_sub² points for W2",
             "n_boot": "bootstrap resamples of the fitted slopes' intervals"}
    # the grid's densities at every record (and the finer grid), W2's cost matrices
    # (N × cells²·w2_sub²), the N grid's phases and the bootstrap
    _size_terms = {
        "cells": lambda c: 8 * c.cells ** 2 * (c.steps // max(1, c.log_every) + 66) * (5 if c.pde_refine else 1),
        "w2_sub": lambda c: 16 * c.N * (c.cells * c.w2_sub) ** 2,
        "n_values": n_grid_bytes, "n_boot": boot_bytes}

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): d = 2; the N grid
        (:func:`validate_n_grid`); w2_sub ≥ 1; xi, pde_cfl, pde_dt_max finite and > 0;
        cells ≥ ``_min_cells``; 2 ≤ w2_replicas ≤ replicas."""
        super().validate()
        if self.d != 2:
            raise ConfigError(f"d must be 2 (the {self._surface} is two-dimensional), got {self.d}")
        validate_n_grid(self)
        self.check_bounds(at_least_one=("w2_sub",), positive=("xi", "pde_cfl", "pde_dt_max"))
        if self.cells < self._min_cells:
            raise ConfigError(f"cells must be >= {self._min_cells}, got {self.cells}")
        if not 2 <= self.w2_replicas <= self.replicas:
            raise ConfigError(f"w2_replicas must be in [2, replicas={self.replicas}], got {self.w2_replicas}")

    def grid(self) -> list[int]:
        """N values: ``config.geometric_grid(N_min, N, n_values)``."""
        return geometric_grid(self.N_min, self.N, self.n_values)


def validate_n_grid(cfg) -> None:
    """Check the N-grid keys of the pde2d experiments (``ConfigError``): those of
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


def grid_plan(cfg, *, task, solve_pde, theta0, measure, snapshot, write_results, after=None,
              dynamics_kw=None) -> Plan:
    """The plan shared by pde2d-teacher and pde2d-torus: the grid PDE solved once (the
    prelude, checkpointed), then one phase per N of ``cfg.grid()`` running ``cfg.replicas``
    seeds of particles recorded against it.

    ``solve_pde(cfg, task, times) -> dict`` (the PDE record, with "density" [T, nx, ny] at the
    recorded ``times``); ``theta0(generator, N) -> [B, N, 2]`` float64 initial particles;
    ``measure(state, N, i, k, pde, w2) -> row`` at record index i (step k; W2 when ``w2``,
    at ``figures.pde2d.w2_steps``); ``snapshot(state) -> array`` what a snapshot keeps;
    ``after(N, generator, pde) -> dict`` adds entries to N's record (with the phase's
    generator after the run).  Per N the particles follow ``ParticleDynamics`` (population
    drift, dt, xi, beta from ``cfg``, plus ``dynamics_kw``), advanced in chunks between
    records, from a generator derived from (seed, "N", N).  ``write_results(ctx, done, pde,
    steps, snaps_at) -> summary rows`` with done {N: {"series": rows, "snapshots": {k:
    snapshot}, **after}}."""
    rows_at, snaps_at = record_steps(cfg)
    steps = sorted(set(rows_at) | set(snaps_at))
    times = np.array([float(f"{k * cfg.dt:.15g}") for k in steps])
    index = {k: i for i, k in enumerate(steps)}
    keys = {N: f"N={N}" for N in cfg.grid()}
    dtype = getattr(torch, cfg.dtype)
    w2_set = set(w2_steps(cfg.steps, cfg.w2_every))

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


def solve_torus_pde(cfg, task, times):
    """pde2d-torus's prelude: the grid solution at ``times`` (up to T), then on to t_long with
    the Gibbs residual recorded, the grid's Gibbs fixed point (Newton–Krylov from ρ_{t_long})
    and F_∞ = F_β of it, and with ``pde_refine`` F and R on a grid twice as fine: a dict of
    arrays."""
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
            "h": np.array(grid.h), "cells": cfg.cells, **_refined(cfg, task, times),
            **_spectral(cfg, task)}


def _spectral(cfg, task) -> dict:
    """The asymptotic rates from the spectrum of the flow linearised at each grid's Gibbs
    state (``meanfield.pde.grid2d_spectrum.spectral_sequence``) on the grids of
    ``cfg.spectral_grid()``, as arrays "spectral_<key>"; {} when there are none."""
    cells = cfg.spectral_grid()
    if not cells:
        return {}
    seq = spectral_sequence(task, cells, cfg.beta, xi=cfg.xi, period=PERIOD, backend=cfg.backend)
    return {f"spectral_{k}": v for k, v in seq.items()}


def _refined(cfg, task, times) -> dict:
    """With ``pde_refine``: F and R at ``times`` on a grid twice as fine per direction (same
    CFL rule, so its time steps are finer too: the estimate covers both errors)."""
    if not cfg.pde_refine:
        return {}
    grid = Grid2D.torus(2 * cfg.cells, PERIOD)
    dd = GridDD(task, grid, xi=cfg.xi, beta=cfg.beta, cfl=cfg.pde_cfl, backend=cfg.backend,
                dtype=torch.float64, dt_max=cfg.pde_dt_max)
    sol = dd.solve(grid.uniform(), times)
    return {"free_energy_fine": sol.free_energy, "risk_fine": sol.risk}
