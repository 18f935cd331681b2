"""mmn-isotropic: Mei–Montanari–Nguyen Fig. 1 — online SGD against the radial PDE on isotropic Gaussians.

Task (MMN 2018, PNAS, arXiv:1804.06561, "isotropic Gaussians"): y = ±1 with probability ½,
x | y ~ N(0, (1 + yΔ)² I_d), units φ(x; w) = σ(⟨w, x⟩) with MMN's piecewise-linear σ
(s1 below t1, s2 above t2, linear in between).  Particles: N units, w_i ~ N(0, κ²/d I_d)
(κ = ``init_std``), online SGD with one fresh sample per step, step ε = ``dt`` and ξ ≡ 1, so
step k sits at t = kε (DESIGN.md §1; MMN's own convention, nothing to map).  With ``beta`` and
``lam`` the same run is noisy SGD (mean-field Langevin) and the PDE gains its diffusion.

The limit: ρ_t stays rotation invariant, the law of r = |w| solves the radial DD, solved by
``meanfield.pde.RadialDD`` on a grid (MUSCL, second order) with the exact finite-d reduced
potentials (``models.radial``; ``pde_d = "inf"`` uses the d = ∞ reduction instead).  With
finite β and a constant schedule the self-consistent Gibbs law is also computed.

Settings.  The defaults are MMN's Fig. 1 as recorded in REFERENCES.md and the issue: Δ = 0.8,
d = 40, N = 800, t1 = 0.5, t2 = 1.5, s1 = −2.5, s2 = 7.5, κ = 0.8, ε = 10⁻⁶, ξ ≡ 1.  They could
not be checked against the paper's text here (the search tool reached only abstracts); the
horizon T = 20 is ours (the risk has fallen from 1.70 to 0.07 by then).  ``scale=small``
(N = 300, ε = 2.5·10⁻⁵, T = 8, 2400 cells on [0, 8]) keeps the picture in ~15 s.  Its ε is
small because online SGD's own time-scale bias at ε = 10⁻⁴ was larger than a 5 % error in ξ
(those particles matched the PDE solved with ξ × 1.05 best); its grid is fine because 600
cells moved R_PDE by 40 % of the gap compared.

Outputs (DESIGN.md §3, plus ``pde.npz``): metrics.csv rows with the particles' risk (Monte
Carlo on ``n_mc`` fresh samples, with its s.e.), ``risk_pde`` at the same t, ``gap_bound`` =
0.05·R_PDE + 25/N (25/N bounds the 1/N self-interaction term: Var σ ≤ (s2 − s1)²/4), ``w1``
(W1 between the empirical law of |w_i| and the PDE law), ``w1_iid`` (the same W1 for N exact
draws of the PDE law, mean of ``n_iid`` draws: the null baseline) and ``w1_ratio``,
``mean_r`` and ``mean_r_pde``; fit.json: :func:`acceptance` and, with ``pde_refine``, the
grid error max_t |R_PDE(cells) − R_PDE(2·cells)| beside the largest gap; particles.npz snapshots; pde.npz (t [T], r [M], density [L, T, M], risk [L, T], and
``gibbs`` [L, M] when computed, ``risk_fine`` [L, T] on the finer grid; L initial laws); figures risk.png (SGD symbols, PDE line)
and histograms.png (|w| at 4 times with the PDE density).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..seeds import derive_generator
from .. import io
from ..dynamics import ParticleDynamics, as_schedule
from ..errors import ConfigError
from ..models import IsotropicGaussians, Unit
from ..models.activations import get_activation
from ..models.radial import IsotropicRadialPotentials
from ..pde import RadialDD, RadialGrid, chi_law
from .config import TwoLayerConfig
from .particles import simulation_phase
from .plan import Plan, default_results

NAME = "mmn-isotropic"
VIEWS = ("radial",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=30", "steps=4000", "log_every=1000", "save_every=2000",
        "checkpoint_every=2000", "n_mc=500", "pde_cells=100")
PDE_FILE = "pde.npz"

SMALL = {"N": 300, "dt": 2.5e-5, "steps": 320_000, "log_every": 16_000, "save_every": 6_400,
         "checkpoint_every": 80_000, "n_mc": 10_000, "pde_cells": 2400, "pde_rmax": 8.0}


@dataclass(frozen=True)
class MMNConfig(TwoLayerConfig):
    """Keys shared by the MMN isotropic-Gaussians experiments (see the module docstring)."""

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


@dataclass(frozen=True)
class Config(PiecewiseMMNConfig):
    """Keys of mmn-isotropic: MMN's Fig. 1 defaults (see the module docstring);
    ``scale=small`` swaps in ``SMALL``."""

    N: int = 800
    d: int = 40
    dt: float = 1e-6
    steps: int = 20_000_000
    log_every: int = 200_000
    save_every: int = 400_000     # 51 snapshots (6.5 MB of θ): the movie of |w| against the PDE
    checkpoint_every: int = 2_000_000
    pde_cells: int = 3000         # 2000 cells moved R_PDE by 13 % of the largest gap (vs 4000)

    _presets = {"scale": {"small": SMALL}}


# ------------------------------------------------------------------------------------------
def build(cfg: MMNConfig, N: int | None = None):
    """(task, dynamics, initial state): online SGD on MMN's isotropic Gaussians, replica b
    started from N(0, κ_b²/d I_d) with κ_b = ``cfg.init_stds()[b]``; N particles per replica
    (default ``cfg.N``).  The generator is seeded with ``cfg.seed`` for the run's own N,
    and derived from (seed, "N", N) for another N (chaos-rate's grid: independent systems
    across N, not prefixes of one draw)."""
    gen = torch.Generator().manual_seed(cfg.seed) if N is None else derive_generator(cfg.seed, "N", N)
    N = cfg.N if N is None else N
    unit = Unit(cfg.d, cfg.activation(), output_weight=False)
    task = IsotropicGaussians(unit, cfg.delta)
    dyn = ParticleDynamics(task, dt=cfg.dt, drift="sgd", batch_size=1, xi=cfg.xi, beta=cfg.beta,
                           lam=cfg.lam)
    kappa = torch.tensor(cfg.init_stds(), dtype=torch.float64).view(-1, 1, 1)
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


def iid_radii(u, r_faces, density, h):
    """Exact draws from the piecewise-constant radial law (cell values ``density`` [M] on
    cells of width h with faces ``r_faces`` [M+1]) by its inverse CDF, which is piecewise
    linear: u [n] uniform on (0, 1) → r [n]."""
    cdf = np.concatenate([[0.0], np.cumsum(density) * h])
    return np.interp(u, cdf / cdf[-1], r_faces)


def _w1_to_density(r_samples, r_faces, density, h) -> float:
    """W1 between samples and the piecewise-constant density (cell values ``density``)."""
    from ..diagnostics import w1_1d

    cdf = np.concatenate([[0.0], np.cumsum(density) * h])
    q = (np.arange(4096) + 0.5) / 4096
    return w1_1d(np.asarray(r_samples, dtype=np.float64), np.interp(q, cdf / cdf[-1], r_faces))


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
                w1s.append(_w1_to_density(r[b], faces, dens[law, k], h))
                rp.append(float(risks[law, k]))
                if r.shape[0] > 1:
                    cols[f"risk_pde_r{b}"] = rp[-1]
                    cols[f"w1_r{b}"] = w1s[-1]
            mean_r_pde = float(np.mean([(dens[int(index[b]), k] * centers).sum() * h
                                        for b in range(r.shape[0])]))
            # the null baseline: W1 of N exact draws of each replica's PDE law (n_iid draws)
            u = torch.rand(cfg.n_iid, r.shape[1], generator=iid_gen, dtype=torch.float64).numpy()
            w1_iid = {law: np.mean([_w1_to_density(iid_radii(uj, faces, dens[law, k], h), faces,
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
        acc = acceptance(m["risk"], m["risk_se"], m["risk_pde"], m["w1"], m["w1_iid"], m["mean_r_pde"], cfg.N)
        fit = {"acceptance": acc}
        if "risk_fine" in pde:
            err = float(np.abs(pde["risk"] - pde["risk_fine"]).max())
            gap = float(np.abs(m["risk"] - m["risk_pde"]).max())
            fit["pde_grid"] = {"cells": cfg.pde_cells, "cells_fine": 2 * cfg.pde_cells,
                               "max_abs_risk_change": err, "max_gap": gap,
                               "over_max_gap": err / gap if gap > 0 else math.inf}
        io.write_json(ctx.out / "fit.json", fit)
        return rows

    base.prelude, base.results, base.record = prelude, results, {"task": task.to_dict()}
    return base


# the law's acceptance against the i.i.d. baseline: W1(particles) ≤ RATIO_MAX · W1(i.i.d.)
RATIO_MAX = 2.5


def acceptance(risk, risk_se, risk_pde, w1, w1_iid, mean_r_pde, N: int) -> dict:
    """Does SGD follow this PDE solution?  Three checks, at every recorded time:

    * ``risk`` (MMN's bound, as the issue set it): |R_SGD − R_PDE| ≤ 0.05 R_PDE + 25/N + 3 s.e.
      (25/N bounds the 1/N self-interaction term, Var σ ≤ (s2 − s1)²/4 for MMN's σ; the s.e.
      is the particles' Monte Carlo risk estimate);
    * ``law``: W1(law of |w_i|, PDE law of r) ≤ 5 % of the PDE's mean r;
    * ``law_vs_iid``: W1 ≤ RATIO_MAX · W1(N i.i.d. draws of the PDE law, PDE law) — the
      particles are as close to the PDE law as an exact sample of it, up to a factor 2.5.

    risk, risk_se, risk_pde [T] at the metrics rows; w1, w1_iid, mean_r_pde [T'] at the times
    the law was compared (the rows, or the snapshots).  The first two are loose: a 10 % error
    in the PDE's time scale ξ passed them at ε = 10⁻⁴ (SGD's own time-scale bias at that ε
    fitted ξ × 1.05 best); the third rejects ξ × 0.9 and × 1.1 in the small mode
    (``tests/test_mmn.py``).  Returns {"risk", "law", "law_vs_iid", "passed",
    "max_gap_over_bound", "max_w1_over_mean_r", "max_w1_ratio"}."""
    risk, risk_pde = np.asarray(risk, np.float64), np.asarray(risk_pde, np.float64)
    bound = 0.05 * risk_pde + 25.0 / N
    gap = np.abs(risk - risk_pde)
    ok_risk = bool((gap <= bound + 3 * np.asarray(risk_se)).all())
    w = np.asarray(w1, np.float64) / np.asarray(mean_r_pde, np.float64)
    ratio = np.asarray(w1, np.float64) / np.asarray(w1_iid, np.float64)
    ok_law, ok_iid = bool((w <= 0.05).all()), bool((ratio <= RATIO_MAX).all())
    return {"risk": ok_risk, "law": ok_law, "law_vs_iid": ok_iid, "passed": ok_risk and ok_law and ok_iid,
            "max_gap_over_bound": float((gap / bound).max()), "max_w1_over_mean_r": float(w.max()),
            "max_w1_ratio": float(ratio.max()), "ratio_max": RATIO_MAX}


def plan(cfg: Config) -> Plan:
    """The run's plan (:func:`plan_mmn`)."""
    return plan_mmn(cfg)


# ------------------------------------------------------------------------------------------
def plot(run_dir, coords=None) -> list[Path]:
    """risk.png (particles' risk ± 2 s.e. as symbols, the PDE as lines, per initial law) and
    histograms.png (|w_i| at 4 snapshot times against the PDE density), from the run
    directory alone."""
    from ..plotting import pyplot, save_figure

    run_dir = Path(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    with np.load(run_dir / PDE_FILE) as z:
        pt, r, dens, prisk, index = z["t"], z["r"], z["density"], z["risk"], z["law_index"]
        gibbs = z["gibbs"] if "gibbs" in z else None
        kappa = z["kappa"]
    with np.load(run_dir / io.PARTICLES) as z:
        theta, ts = z["theta"], z["t"]
    if theta.ndim == 3:
        theta = theta[:, None]                                               # (K, B, N, D)
    B = theta.shape[1]
    n_run = io.load_run_config(run_dir)["config"]["N"]
    labels = [f" (κ = {kappa[i]:g})" if len(kappa) > 1 else "" for i in index]
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for b in range(B) if B > 1 else [0]:
        key = f"risk_r{b}" if B > 1 else "risk"
        c = f"C{int(index[b])}"
        ax.plot(m["t"], m[key], "o", ms=3, color=c, alpha=0.8,
                label=f"SGD, N = {n_run}{labels[b]}" if b == list(index).index(index[b]) else None)
    if B == 1 and "risk_se" in m:
        ax.errorbar(m["t"], m["risk"], yerr=2 * m["risk_se"], fmt="none", color="C0", alpha=0.5)
    for law in range(prisk.shape[0]):
        ax.plot(pt, prisk[law], "-", color=f"C{law}", lw=1.4,
                label="PDE" + (labels[list(index).index(law)] if prisk.shape[0] > 1 else ""))
    ax.set_yscale("log")
    ax.set_xlabel("t (= k ε)")
    ax.set_ylabel("risk R")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "risk.png")]

    picks = np.unique(np.linspace(0, len(ts) - 1, min(4, len(ts))).round().astype(int))
    laws = sorted(set(int(i) for i in index))
    fig, axes = plt.subplots(len(laws), len(picks), figsize=(3.2 * len(picks), 2.8 * len(laws)),
                             dpi=120, squeeze=False)
    for row, law in enumerate(laws):
        b = list(index).index(law)
        for ax, k in zip(axes[row], picks):
            rs = np.linalg.norm(theta[k, b], axis=-1)
            kp = int(np.argmin(np.abs(pt - ts[k])))
            ax.hist(rs, bins=40, density=True, color=f"C{law}", alpha=0.45, label="SGD")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            h = r[1] - r[0]
            faces = np.append(r - h / 2, r[-1] + h / 2)
            ax.stairs(dens[law, kp], faces, color="k", lw=1.2, label="PDE (cell averages)")
            if gibbs is not None and k == picks[-1]:
                ax.stairs(gibbs[law], faces, color="C3", ls="--", lw=1.0, label="Gibbs")
            rmax = max(rs.max(), faces[1:][dens[law, kp] > 1e-3 * dens[law, kp].max()].max()) * 1.05
            ax.set_xlim(0, rmax)
            # a spike of units near w = 0 would flatten the bulk: clip it and print its mass
            cut = 0.1 * rmax
            bulk = dens[law, kp][r > cut]
            mass_pde = float(dens[law, kp][r <= cut].sum() * (r[1] - r[0]))
            if mass_pde > 0.02 and bulk.size:
                ax.set_ylim(0, 1.6 * bulk.max())
                ax.text(0.97, 0.95, f"mass at |w| < {cut:.2g}:\nPDE {mass_pde:.0%}, SGD "
                        f"{(rs < cut).mean():.0%}", ha="right", va="top", fontsize=7,
                        transform=ax.transAxes)
            ax.set_title(f"t = {ts[k]:.3g}{labels[b]}", fontsize=9)
            ax.set_xlabel("|w|")
        axes[row][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "histograms.png"))
    return paths


FIGURES = plot
