"""mmn-bifurcation: a small initial scale stuck at a bad fixed point, a larger one converging (SGD and PDE).

MMN (PNAS 2018) show, on isotropic Gaussians with a non-monotone activation, that the
distributional dynamics started from N(0, κ²/d I_d) converges to a good network for a
larger κ and to a bad stationary point for a small κ, and that SGD follows the PDE in both
cases.  REFERENCES.md recalls d = 320, N = 800, Δ = 0.5 for that figure; the paper's text
(and its exact σ) could not be reached from here, so the activation is ours:

    σ = the W-shaped continuous piecewise-linear function through the knots
        (−1.25, 4), (−0.5, −2), (0, 0), (0.5, −2), (1.25, 4), constant outside,

found by scanning the radial PDE (``meanfield.pde.RadialDD``) over the width of the W.  Why
it bifurcates: for small r, E σ(s r Z) ≈ −(2/0.5)·E|s r Z| decreases with the data scale s,
so v(r) = −½[q(s₊r) − q(s₋r)] increases near r = 0 and pulls small units to w = 0, where
f ≡ σ(0) = 0 and R = 1 (a stationary point of the DD); for r beyond the W's wells, q grows
with s and the units settle where f ≈ y.  With κ = 0.1 the PDE collapses to r = 0 (R → 1.016),
with κ = 0.4 it converges to R = 0.021 by t ≈ 2 (measured with 600 cells on [0, 6]).

The two initial scales run as two replicas of one particle tensor (replica 0: ``kappa_small``,
replica 1: ``kappa_large``), each against its own PDE; metrics.csv has risk_r0/risk_r1 (SGD,
Monte Carlo), risk_pde_r0/risk_pde_r1 and w1_r0/w1_r1 (the ``risk`` column is their mean).
Conventions and the time axis are MMN's (ξ ≡ 1, t = kε), as in ``mmn-isotropic``; T = 4
(full) is ours: both PDE solutions are stationary by t ≈ 2.

The step ε matters more here than anywhere else: online SGD's gradient noise diffuses each
unit by ≈ (2ε σ'|x|)² per step, |x| ≈ (1 + Δ)√d, against a drift toward w = 0 of order 1, so
stuck units sit at a radius ∝ ε·d.  At d = 320 with ε = 10⁻⁴ that radius crosses the barrier
and the small-κ replica escapes and converges (measured: R = 0.035 for both replicas at
t = 5), unlike its PDE; ε = 10⁻⁶ (full) or d = 40 with ε = 10⁻⁵ (``scale=small``: N = 200,
T = 1) keep SGD on the PDE (small mode, T = 1, measured: SGD 1.015 vs 0.059, PDE 1.025 vs 0.051).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..figures import mmn
from ..models.activations import get_activation
from .mmn_common import MMNConfig, plan_mmn

NAME = "mmn-bifurcation"
VIEWS = ("radial",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=30", "steps=4000", "log_every=1000", "save_every=2000",
        "checkpoint_every=2000", "n_mc=500", "pde_cells=100")

SMALL = {"N": 200, "d": 40, "dt": 1e-5, "steps": 100_000, "log_every": 10_000,
         "save_every": 2_000, "checkpoint_every": 50_000, "n_mc": 5_000, "pde_cells": 400}


def _floats(name, text):
    try:
        vals = [float(x) for x in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{name} must be finite numbers, got {text!r}")
    return vals


@dataclass(frozen=True)
class Config(MMNConfig):
    """Keys of mmn-bifurcation (see the module docstring): the MMN keys, with two replicas
    started at the scales kappa_small (replica 0) and kappa_large (replica 1), and σ the
    continuous piecewise-linear function through (sigma_knots, sigma_values), constant
    outside; ``scale=small`` swaps in ``SMALL``."""

    N: int = 800
    d: int = 320
    delta: float = 0.5
    replicas: int = 2
    dt: float = 1e-6
    steps: int = 4_000_000
    log_every: int = 40_000
    save_every: int = 80_000      # 51 snapshots of 256 units per replica (see snapshot_particles)
    checkpoint_every: int = 500_000
    n_mc: int = 20_000
    kappa_small: float = 0.1
    kappa_large: float = 0.4
    sigma_knots: str = "-1.25,-0.5,0,0.5,1.25"
    sigma_values: str = "4,-2,0,-2,4"
    pde_rmax: float = 6.0
    pde_cells: int = 1200

    _presets = {"scale": {"small": SMALL}}
    _help = {"replicas": "2: replica 0 starts at kappa_small, replica 1 at kappa_large",
             "kappa_small": "κ of replica 0: the initial scale that stays stuck",
             "kappa_large": "κ of replica 1: the initial scale that converges",
             "sigma_knots": "σ's knots, comma-separated and increasing (σ constant outside)",
             "sigma_values": "σ's values at the knots, comma-separated"}
    # 51 snapshots of the first 256 units of each replica (33 MB; all 800 would take 104 MB:
    # d = 320); the movie and histograms.png draw those, the checkpoint keeps every unit
    snapshot_particles = 256

    def validate(self):
        """MMNConfig's checks, then (``ConfigError``): replicas = 2; kappa_small, kappa_large
        finite and > 0; sigma_knots and sigma_values numbers of one length ≥ 2, the knots
        strictly increasing."""
        super().validate()
        if self.replicas != 2:
            raise ConfigError(f"replicas must be 2 (one per initial scale), got {self.replicas}")
        self.check_bounds(positive=("kappa_small", "kappa_large"))
        z, v = _floats("sigma_knots", self.sigma_knots), _floats("sigma_values", self.sigma_values)
        if len(z) != len(v) or len(z) < 2:
            raise ConfigError(f"sigma_knots and sigma_values need the same length >= 2, "
                              f"got {len(z)} and {len(v)}")
        self.activation()                                  # knots must increase

    def activation(self):
        z, v = _floats("sigma_knots", self.sigma_knots), _floats("sigma_values", self.sigma_values)
        return get_activation("pwl", **{f"z{j}": x for j, x in enumerate(z)},
                              **{f"v{j}": x for j, x in enumerate(v)})

    def init_stds(self) -> list[float]:
        return [self.kappa_small, self.kappa_large]


def plan(cfg: Config):
    """The run's plan: ``mmn_common.plan_mmn`` (PDE prelude, one online-SGD phase)."""
    return plan_mmn(cfg)


FIGURES = mmn.radial_figures      # mmn-isotropic's figures: risk.png and histograms.png
