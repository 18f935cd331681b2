"""mmn-isotropic: Mei–Montanari–Nguyen Fig. 1 — online SGD against the radial PDE on isotropic Gaussians.

Task (MMN 2018, PNAS, arXiv:1804.06561, "isotropic Gaussians"): y = ±1 with probability ½,
x | y ~ N(0, (1 + yΔ)² I_d), units φ(x; w) = σ(⟨w, x⟩) with MMN's piecewise-linear σ
(s1 below t1, s2 above t2, linear in between).  Particles: N units, w_i ~ N(0, κ²/d I_d)
(κ = ``init_std``), online SGD with one fresh sample per step, step ε = ``dt`` and ξ ≡ 1, so
step k sits at t = kε (docs/design.md §1; MMN's own convention, nothing to map).  With ``beta`` and
``lam`` the same run is noisy SGD (mean-field Langevin) and the PDE gains its diffusion.

The limit: ρ_t stays rotation invariant, the law of r = |w| solves the radial DD, solved by
``meanfield.pde.RadialDD`` on a grid (MUSCL, second order) with the exact finite-d reduced
potentials (``models.radial``; ``pde_d = "inf"`` uses the d = ∞ reduction instead).  With
finite β and a constant schedule the self-consistent Gibbs law is also computed.

Settings.  The defaults are MMN's Fig. 1 as recalled from the paper: Δ = 0.8,
d = 40, N = 800, t1 = 0.5, t2 = 1.5, s1 = −2.5, s2 = 7.5, κ = 0.8, ε = 10⁻⁶, ξ ≡ 1.  They could
not be checked against the paper's text here (the search tool reached only abstracts); the
horizon T = 20 is ours (the risk has fallen from 1.70 to 0.07 by then).  ``scale=small``
(N = 300, ε = 2.5·10⁻⁵, T = 8, 2400 cells on [0, 8]) keeps the picture in ~15 s.  Its ε is
small because online SGD's own time-scale bias at ε = 10⁻⁴ was larger than a 5 % error in ξ
(those particles matched the PDE solved with ξ × 1.05 best); its grid is fine because 600
cells moved R_PDE by 40 % of the gap compared.

Outputs (docs/design.md §3, plus ``pde.npz``): metrics.csv rows with the particles' risk (Monte
Carlo on ``n_mc`` fresh samples, with its s.e.), ``risk_pde`` at the same t, ``gap_bound`` =
0.05·R_PDE + 25/N (25/N bounds the 1/N self-interaction term: Var σ ≤ (s2 − s1)²/4), ``w1``
(W1 between the empirical law of |w_i| and the PDE law), ``w1_iid`` (the same W1 for N exact
draws of the PDE law, mean of ``n_iid`` draws: the null baseline) and ``w1_ratio``,
``mean_r`` and ``mean_r_pde``; fit.json: the acceptance
(``meanfield.analysis.chaos.tracking_acceptance``) and, with ``pde_refine``, the
grid error max_t |R_PDE(cells) − R_PDE(2·cells)| beside the largest gap; particles.npz snapshots; pde.npz (t [T], r [M], density [L, T, M], risk [L, T], and
``gibbs`` [L, M] when computed, ``risk_fine`` [L, T] on the finer grid; L initial laws); figures risk.png (SGD symbols, PDE line)
and histograms.png (|w| at 4 times with the PDE density).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..figures import mmn
from .mmn_common import PiecewiseMMNConfig, plan_mmn
from .plan import Plan

NAME = "mmn-isotropic"
VIEWS = ("radial",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=30", "steps=4000", "log_every=1000", "save_every=2000",
        "checkpoint_every=2000", "n_mc=500", "pde_cells=100")

SMALL = {"N": 300, "dt": 2.5e-5, "steps": 320_000, "log_every": 16_000, "save_every": 6_400,
         "checkpoint_every": 80_000, "n_mc": 10_000, "pde_cells": 2400, "pde_rmax": 8.0}


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


def plan(cfg: Config) -> Plan:
    """The run's plan (``mmn_common.plan_mmn``): the radial PDE as the prelude, one chunked
    online-SGD phase recorded against it; fit.json's acceptance is
    ``analysis.chaos.tracking_acceptance``."""
    return plan_mmn(cfg)


FIGURES = mmn.radial_figures
