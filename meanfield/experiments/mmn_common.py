"""The pieces the MMN isotropic-Gaussians experiments share (mmn-isotropic, mmn-bifurcation,
chaos-rate): their config keys, the online-SGD particle system, the radial PDE solved at the
run's recording times, and the plan of one SGD run against that PDE.

Task (MMN 2018, PNAS, arXiv:1804.06561, "isotropic Gaussians"): y = ±1 with probability ½,
x | y ~ N(0, (1 + yΔ)² I_d), units φ(x; w) = σ(⟨w, x⟩) with no output weight; N particles per
replica started from N(0, κ²/d I_d), online SGD with one fresh sample per step, step ε =
``dt``, so step k sits at t = kε (docs/design.md §1).  The limit is the radial DD for the law
of r = |w| (``meanfield.pde.RadialDD``).  The experiments' docstrings say what each runs;
the statistics they report are in ``meanfield.analysis.chaos`` and their figures in
``meanfield.figures.mmn``.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

import numpy as np
import torch

from .. import io
from ..analysis.chaos import iid_radii, tracking_acceptance, w1_to_density
from ..dynamics import ParticleDynamics, as_schedule
from ..errors import ConfigError
from ..figures.mmn import FIT_FILE, PDE_FILE
from ..models import IsotropicGaussians, Unit
from ..models.activations import get_activation
from ..models.radial import IsotropicRadialPotentials
from ..pde import RadialDD, RadialGrid, chi_law
from ..seeds import derive_generator
from .config import TwoLayerConfig
from .particles import simulation_phase
from .plan import Plan, default_results


@dataclass(frozen=True)
class MMNConfig(TwoLayerConfig):
    """Keys shared by the MMN isotropic-Gaussians experiments (mmn-isotropic's docstring
    says what each means)."""

    scale: str = "full"
    delta: float = 0.8
    init_std: float = 0.8
    xi: str = "1.0"
    beta: str = "inf"
    lam: float = 0.0
    n_mc: int = 50_000
    pde_cells: int = 2000
    pde_rmax: float = 10.0
    pde_d: str = "finite"
    pde_cfl: float = 0.4
    pde_refine: bool = True       # also solve on a grid twice as fine: the grid error in fit.json
    n_iid: int = 8                # i.i.d. N-samples of the PDE law per row: W1's null baseline

    _schedule_fields = ("xi", "beta")
    _choices = {"scale": ("full", "small"), "pde_d": ("finite", "inf")}
    shardable = True
    # particles kept per replica in each snapshot of particles.npz (None: all of them)
    snapshot_particles: typing.ClassVar[int | None] = None
    # the PDE reference is recorded at the run's k·dt: only cadences that keep those times
    resume_mutable = ("checkpoint_every", "backend", "shards", "shard_timeout")
    _help = {
        "scale": "preset: full (the paper's settings) or small (a run of seconds)",
        "dt": "step ε of online SGD (step k sits at t = kε)",
        "delta": "Δ: x | y ~ N(0, (1 + yΔ)² I_d) for the label y = ±1",
        "init_std": "κ: the initial units w_i ~ N(0, κ²/d I_d)",
        "xi": "time scale ξ(t): a number or a schedule spec (power:, log:, linear:)",
        "beta": "inverse temperature β of the noise (inf: none): a number or a schedule spec",
        "lam": "λ of the penalty (λ/2)|w|² (noisy SGD / mean-field Langevin)",
        "n_mc": "fresh samples of the Monte Carlo risk on each metrics row",
        "pde_cells": "cells of the radial PDE's grid on [0, pde_rmax]",
        "pde_rmax": "where the radial PDE's grid of r = |w| ends",
        "pde_d": "the PDE's reduction: finite (the run's d) or inf (d = ∞)",
        "pde_cfl": "CFL number of the PDE's time steps, in (0, 0.5]",
        "pde_refine": "also solve the PDE on a grid twice as fine (its grid error in fit.json)",
        "n_iid": "draws of N i.i.d. radii from the PDE law per row: W1's null baseline",
    }
    # the radial solver's tables (cells × its quadrature nodes; ×3 with the finer grid) and
    # the i.i.d. baseline's n_iid × N draws
    _size_terms = {"pde_cells": lambda c: 8 * 1024 * c.pde_cells * (3 if c.pde_refine else 1),
                   "n_iid": lambda c: 32 * c.n_iid * c.N * c.replicas}

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): 0 ≤ delta < 1; d ≥ 2; init_std,
        pde_rmax finite and > 0; lam finite ≥ 0; n_mc ≥ 2; pde_cells ≥ 3; 0 < pde_cfl ≤ 0.5
        (xi, beta: schedule specs; scale, pde_d: among their choices)."""
        super().validate()
        if not (0 <= self.delta < 1):
            raise ConfigError(f"delta must be in [0, 1), got {self.delta}")
        if self.d < 2:
            raise ConfigError(f"d must be >= 2 for the radial reduction, got {self.d}")
        for name in ("init_std", "pde_rmax"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be finite and > 0, got {v}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError(f"lam must be finite and >= 0, got {self.lam}")
        if self.n_mc < 2:
            raise ConfigError(f"n_mc must be >= 2, got {self.n_mc}")
        if self.n_iid < 1:
            raise ConfigError(f"n_iid must be >= 1, got {self.n_iid}")
        if self.pde_cells < 3:
            raise ConfigError(f"pde_cells must be >= 3, got {self.pde_cells}")
        if not 0 < self.pde_cfl <= 0.5:
            raise ConfigError(f"pde_cfl must be in (0, 0.5], got {self.pde_cfl}")

    # --- the pieces ---------------------------------------------------------------------
    def activation(self):
        """σ of the units (an ``Activation`` with closed-form Hermite coefficients)."""
        raise NotImplementedError

    def init_stds(self) -> list[float]:
        """κ of each replica's initial law N(0, κ²/d I_d) (one value per replica)."""
        return [self.init_std] * self.replicas


@dataclass(frozen=True)
class PiecewiseMMNConfig(MMNConfig):
    """MMNConfig with MMN's piecewise-linear σ (s1 below t1, s2 above t2, linear between)."""

    t1: float = 0.5
    t2: float = 1.5
    s1: float = -2.5
    s2: float = 7.5

    _help = {"t1": "σ = s1 below t1 (MMN's piecewise-linear σ)",
             "t2": "σ = s2 above t2 (linear between t1 and t2)",
             "s1": "σ's value below t1", "s2": "σ's value above t2"}

    def validate(self):
        """MMNConfig's checks, then t1, t2, s1, s2 finite and t2 > t1 (``ConfigError``)."""
        super().validate()
        for name in ("t1", "t2", "s1", "s2"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be finite, got {getattr(self, name)}")
        if not self.t2 > self.t1:
            raise ConfigError(f"t2 must be > t1, got t1={self.t1}, t2={self.t2}")

    def activation(self):
        """MMN's piecewise-linear σ: s1 below t1, s2 above t2, linear in between."""
        return get_activation("piecewise", t1=self.t1, t2=self.t2, s1=self.s1, s2=self.s2)


# ------------------------------------------------------------------------------------------
def build(cfg: MMNConfig, N: int | None = None, *, paired: bool = False):
    """(task, dynamics, initial state): online SGD on MMN's isotropic Gaussians, replica b
    started from N(0, κ_b²/d I_d) with κ_b = ``cfg.init_stds()[b]``; N particles per replica
    (default ``cfg.N``).  The generator is seeded with ``cfg.seed`` for the run's own N,
    and derived from (seed, "N", N) for another N (chaos-rate's grid: independent systems
    across N, not prefixes of one draw).  ``paired``: replicas 2k and 2k + 1 start from the
    same draw (they differ only in their SGD samples; an even number of replicas)."""
    gen = torch.Generator().manual_seed(cfg.seed) if N is None else derive_generator(cfg.seed, "N", N)
    N = cfg.N if N is None else N
    unit = Unit(cfg.d, cfg.activation(), output_weight=False)
    task = IsotropicGaussians(unit, cfg.delta)
    dyn = ParticleDynamics(task, dt=cfg.dt, drift="sgd", batch_size=1, xi=cfg.xi, beta=cfg.beta,
                           lam=cfg.lam)
    kappa = torch.tensor(cfg.init_stds(), dtype=torch.float64).view(-1, 1, 1)
    if paired:
        w = torch.randn(cfg.replicas // 2, N, cfg.d, generator=gen,
                        dtype=torch.float64).repeat_interleave(2, dim=0)
    else:
        w = torch.randn(cfg.replicas, N, cfg.d, generator=gen, dtype=torch.float64)
    theta = (w * kappa / math.sqrt(cfg.d)).to(getattr(torch, cfg.dtype))
    return task, dyn, dyn.init(theta, generator=gen)


def record_steps(cfg) -> np.ndarray:
    """Steps at which metrics rows or snapshots are taken (the PDE is recorded there too)."""
    ks = set(range(0, cfg.steps, cfg.log_every)) | set(range(0, cfg.steps, cfg.save_every))
    return np.array(sorted(ks | {cfg.steps}))


def solve_pde(cfg: MMNConfig):
    """The radial DD from each distinct initial law, recorded at the run's recording times.

    Returns (times [T], grid, densities [L, T, M], risks [L, T], gibbs [L, M] or None,
    law index per replica [B])."""
    act = cfg.activation()
    pot = IsotropicRadialPotentials(act, cfg.delta, math.inf if cfg.pde_d == "inf" else cfg.d)
    grid = RadialGrid(cfg.pde_rmax, cfg.pde_cells)
    xi, beta = as_schedule(cfg.xi, "xi"), as_schedule(cfg.beta, "beta")
    dd = RadialDD(pot, grid, d=cfg.d, xi=xi, beta=beta, lam=cfg.lam, cfl=cfg.pde_cfl,
                  risk_sharp=1.0)
    times = np.array([float(f"{k * cfg.dt:.15g}") for k in record_steps(cfg)])
    kappas = cfg.init_stds()
    laws = sorted(set(kappas))
    dens, risks, gibbs = [], [], []
    for kappa in laws:
        sol = dd.solve(grid.cell_averages(chi_law(cfg.d, kappa / math.sqrt(cfg.d))), times)
        dens.append(sol.density)
        risks.append(sol.risk)
        if beta.is_constant and beta.params[0] != math.inf:
            gibbs.append(dd.gibbs_fixed_point(beta.params[0], sol.density[-1])[0])
    index = np.array([laws.index(k) for k in kappas])
    return times, grid, np.array(dens), np.array(risks), (np.array(gibbs) if gibbs else None), index


def plan_mmn(cfg: MMNConfig) -> Plan:
    """The shared MMN plan: the radial PDE as the prelude (checkpointed; written to pde.npz
    with the results), then one chunked online-SGD phase whose rows gain the PDE columns
    (risk_pde, gap_bound, w1, mean_r, mean_r_pde and per-replica ones)."""
    def prelude():
        times, grid, dens, risks, gibbs, index = solve_pde(cfg)
        arrays = {"t": times, "r": grid.centers, "r_max": grid.r_max, "density": dens,
                  "risk": risks, "law_index": index, "kappa": np.array(sorted(set(cfg.init_stds())))}
        if gibbs is not None:
            arrays["gibbs"] = gibbs
        if cfg.pde_refine:
            arrays["risk_fine"] = solve_pde(dataclasses.replace(cfg, pde_cells=2 * cfg.pde_cells))[3]
        return {"pde": arrays}

    def phases(shared):
        z = shared["pde"]
        times, dens, risks, index = z["t"], z["density"], z["risk"], z["law_index"]
        grid = RadialGrid(float(z["r_max"]), int(dens.shape[-1]))
        h, faces, centers = grid.h, grid.faces, grid.centers
        iid_gen = derive_generator(cfg.seed, "iid")

        def pde_columns(st):
            k = int(np.argmin(np.abs(times - st.t)))
            if abs(times[k] - st.t) > 1e-9 * max(1.0, st.t):
                raise ConfigError(f"no PDE record at t={st.t}")  # pragma: no cover - internal
            r = st.theta.double().norm(dim=-1).cpu().numpy()                 # (B, N)
            cols, w1s, rp = {}, [], []
            for b in range(r.shape[0]):
                law = int(index[b])
                w1s.append(w1_to_density(r[b], faces, dens[law, k], h))
                rp.append(float(risks[law, k]))
                if r.shape[0] > 1:
                    cols[f"risk_pde_r{b}"] = rp[-1]
                    cols[f"w1_r{b}"] = w1s[-1]
            mean_r_pde = float(np.mean([(dens[int(index[b]), k] * centers).sum() * h
                                        for b in range(r.shape[0])]))
            # the null baseline: W1 of N exact draws of each replica's PDE law (n_iid draws)
            u = torch.rand(cfg.n_iid, r.shape[1], generator=iid_gen, dtype=torch.float64).numpy()
            w1_iid = {law: np.mean([w1_to_density(iid_radii(uj, faces, dens[law, k], h), faces,
                                                   dens[law, k], h) for uj in u])
                      for law in sorted(set(int(i) for i in index))}
            w1_iid = float(np.mean([w1_iid[int(index[b])] for b in range(r.shape[0])]))
            return {"risk_pde": float(np.mean(rp)), "gap_bound": 0.05 * float(np.mean(rp)) + 25.0 / cfg.N,
                    "w1": float(np.mean(w1s)), "w1_iid": w1_iid, "w1_ratio": float(np.mean(w1s)) / w1_iid,
                    "mean_r": float(r.mean()), "mean_r_pde": mean_r_pde, **cols}

        phase = simulation_phase(cfg, lambda: build(cfg)[1:], n_mc=cfg.n_mc, risk_inf=None,
                                 extra=pde_columns, chunked=True, generators={"iid": iid_gen})
        if cfg.snapshot_particles is not None:
            n = cfg.snapshot_particles
            phase.snapshot = lambda s: s.theta[:, :n].detach().cpu().clone()
        return [phase]

    unit = Unit(cfg.d, cfg.activation(), output_weight=False)
    task = IsotropicGaussians(unit, cfg.delta)
    base = Plan(phases=phases, arrays={"param_names": np.array(task.param_names)})

    def results(ctx):
        rows = default_results(base)(ctx)
        pde = ctx.shared["pde"]
        io.write_npz(ctx.out / PDE_FILE, pde)
        m = io.read_metrics(ctx.out / io.METRICS)
        acc = tracking_acceptance(m["risk"], m["risk_se"], m["risk_pde"], m["w1"], m["w1_iid"], m["mean_r_pde"], cfg.N)
        fit = {"acceptance": acc}
        if "risk_fine" in pde:
            err = float(np.abs(pde["risk"] - pde["risk_fine"]).max())
            gap = float(np.abs(m["risk"] - m["risk_pde"]).max())
            fit["pde_grid"] = {"cells": cfg.pde_cells, "cells_fine": 2 * cfg.pde_cells,
                               "max_abs_risk_change": err, "max_gap": gap,
                               "over_max_gap": err / gap if gap > 0 else math.inf}
        io.write_json(ctx.out / FIT_FILE, fit)
        return rows

    base.prelude, base.results, base.record = prelude, results, {"task": task.to_dict()}
    return base
