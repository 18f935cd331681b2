"""mfld-torus: mean-field Langevin on the 2-torus (Chizat 2022) — free-energy decay for fixed τ, and annealing.

Task (``meanfield.models.TorusMMD``): the squared MMD R(ρ) between m = 50 particles and 10
targets uniform on the torus [0, 2π)², kernel ∏_c (1 + 2 Σ_{k=1}^{5} cos(k x_c)/(1 + k)).
Settings of Chizat's ``MFL.ipynb`` (lchizat/2022-mean-field-langevin-rate; REFERENCES.md):
particles uniform on the torus, step η = 0.08, 1000 iterations, noise √(2ητ)·ζ switched off
after iteration 800, τ ∈ {0.03, 0.1, 0.3} over 10 runs, and annealed noise τ_k = τ0/(k + 1)
with τ0 = 20 against noiseless GD.  (The notebook's kernel, torus [0, 2π)² and plotting were
checked in its text; the update form and τ0 are taken from REFERENCES.md.)

Convention mapping (Chizat → ours, docs/design.md §1).  Chizat's particle update is
X ← X − η ∇Ψ(X; μ) + √(2ητ) ζ with Ψ the per-particle potential of the MMD (½ of its first
variation, our Ψ = V + ∫U dρ), i.e. Langevin dynamics whose Gibbs fixed point is ∝ exp(−Ψ/τ):
the Wasserstein gradient flow of ½R + τ∫ρ log ρ.  Ours is θ ← θ − 2 ξ dt ∇Ψ + √(4ξ dt/β) ζ;
with ξ = 1 this is his step for **dt = η/2 = 0.04** and **β = 1/τ**, his iteration k sitting
at t = k·dt.  The free energy we report is that Lyapunov functional,

    F_τ(ρ_k) = ½ R(ρ_k) − τ Ĥ(ρ_k),   Ĥ = Kozachenko–Leonenko 1-NN entropy on the torus
    (``meanfield.diagnostics.knn_entropy``, periodic distances; Chizat's estimator),

per seed, for the τ of the run (for the annealed run, τ_k at iteration k; without noise —
noiseless GD, and every run after ``noise_off`` — F = ½R and Ĥ is not estimated: the
particles merge, nearest-neighbour distances reach 10⁻¹⁶ and Ĥ → −∞).  The annealing τ_k = τ0/(k + 1) is the schedule β(t) = (1/τ0)(1 + t/dt)
(``linear:1/τ0,dt``).  After ``noise_off`` iterations every noisy run continues without noise
(``meanfield.dynamics.noise_switch.NoiseSwitch``).

Decay rates (fit.json): for each fixed τ, the seed-mean F_τ(k) minus its stationary value
F_τ^∞ (the mean over iterations ``noise_off``/2 … ``noise_off``), fitted by
``scipy.stats.linregress`` of log(F − F^∞) on k over the iterations before the gap first falls
below 5× the noise floor; the rate is −slope (per iteration; ``meanfield.analysis.decay.
decay_rate``).  Two floor rules are reported (``decay.decay_rate_rules``): the standard
deviation of the seed mean over the stationary window (the rate fit.json quotes) and the
mean standard error of the seed mean across seeds, each with a 95 % bootstrap interval over
seeds (the fit window fixed, F^∞ re-estimated) and the number of iterations fitted; their
relative difference is ``floor_sensitivity``.  Beside them, the mean-field limit's
asymptotic rate per iteration, 2μ₁·dt, with μ₁ the smallest non-zero eigenvalue of the grid
PDE linearised at its Gibbs state (``meanfield.pde.grid2d_spectrum``, ξ = 1, β = 1/τ) on
the ``spectral_cells`` grids and extrapolated to h → 0 (``analysis.rates.spectral_table``),
computed once as the prelude.  Theory (Chizat 2022): exponential convergence for fixed τ,
faster for larger τ.
Annealing: the final MMD R of the annealed runs against noiseless GD (seed means and the
fraction of seeds where annealing is lower).

Defaults are the paper's (above), with spectral grids of 32², 48², 64² cells.
``scale=small`` (CI): 4 seeds, 300 iterations, noise off after 240, spectral grids 12², 16².  Outputs: metrics.csv (per run — numbered as in config.json's "runs" — and logged
iteration: τ and the seed means of R, Ĥ, F),
curves.npz (per run: iteration [K], R, Ĥ, F [K, S]), fit.json, particles.npz (final
particles of every run, targets), figures free_energy.png (seed-mean F_τ − F_τ^∞ against iteration
for each τ, log scale, with the fitted exponential), annealing.png (R against iteration:
annealed, noiseless and fixed τ) and particles.png (final particles and targets).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import derive_generator
from .. import io
from ..analysis import decay
from ..analysis.rates import spectral_table
from ..diagnostics import knn_entropy
from ..dynamics import NoiseSwitch, ParticleDynamics
from ..errors import ConfigError
from ..figures import langevin
from ..figures.langevin import CURVES, FIT
from ..models import TorusMMD
from ..pde.grid2d_spectrum import spectral_sequence
from .config import TwoLayerConfig, spectral_cells
from .particles import size_phase
from .plan import Plan, snapshot_arrays

NAME = "mfld-torus"
VIEWS = ("torus",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "steps=20", "noise_off=10", "log_every=2", "checkpoint_every=10",
        "spectral_cells=")
PERIOD = 2 * math.pi

SMALL = {"replicas": 4, "steps": 300, "noise_off": 240, "log_every": 2, "save_every": 6,
         "checkpoint_every": 150, "spectral_cells": "12,16"}


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of mfld-torus (see the module docstring): N particles on the 2-torus (d = 2),
    n_targets targets drawn with target_seed, modes Fourier modes of the kernel, replicas
    seeds per run, taus the comma-separated fixed temperatures τ (β = 1/τ), tau0 the
    annealing τ0, noise_off the iteration after which every run is noiseless;
    ``scale=small`` swaps in ``SMALL``."""

    scale: str = "full"
    N: int = 50
    d: int = 2
    n_targets: int = 10
    target_seed: int = 0
    modes: int = 5
    replicas: int = 10
    taus: str = "0.03,0.1,0.3"
    tau0: float = 20.0
    dt: float = 0.04
    steps: int = 1000
    noise_off: int = 800
    log_every: int = 1
    save_every: int = 20          # 51 snapshots of every run: the movie of the five side by side
    checkpoint_every: int = 500
    dtype: str = "float64"
    spectral_cells: str = "32,48,64"   # grids of the mean-field asymptotic rates ("" for none)
    n_boot: int = 1000                 # bootstrap resamples of the rates' intervals

    _choices = {"scale": ("full", "small")}
    _presets = {"scale": {"small": SMALL}}
    _help = {"scale": "preset: full (Chizat's settings) or small (scale=small: the tests')",
             "N": "particles on the torus",
             "d": "2: the torus [0, 2π)²",
             "dt": "step (Chizat's η is 2·dt; iteration k sits at t = k·dt)",
             "replicas": "independent seeds per run (replicas of one tensor)",
             "n_targets": "targets of the MMD, uniform on the torus",
             "target_seed": "seed of the targets' draw",
             "modes": "Fourier modes of the kernel per coordinate",
             "taus": "the fixed temperatures τ = 1/β, comma-separated",
             "tau0": "the annealed run's τ_k = tau0/(k + 1)",
             "noise_off": "the iteration from which every run is noiseless",
             "spectral_cells": "grids of the mean-field asymptotic rates, comma-separated (\"\": none)",
             "n_boot": "bootstrap resamples of the rates' intervals"}
    # the kernel's (2·modes + 1)² Fourier modes at every particle of every run, and the targets'
    _size_terms = {"modes": lambda c: 32 * (2 * c.modes + 1) ** 2 * (8 * c.N * c.replicas + c.n_targets),
                   "n_targets": lambda c: 16 * c.n_targets * ((2 * c.modes + 1) ** 2 + 2),
                   "n_boot": lambda c: 32 * c.n_boot * c.replicas}
    # noise_off and the stationary window are fixed fractions of the run: no longer runs
    resume_mutable = ("checkpoint_every", "backend")

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): d = 2; N ≥ 2; n_targets, modes ≥ 1;
        target_seed ≥ 0; tau0 finite and > 0; 1 ≤ noise_off ≤ steps and noise_off ≥
        2·log_every; taus valid (:meth:`tau_values`)."""
        super().validate()
        if self.d != 2:
            raise ConfigError(f"mfld-torus lives on the 2-torus: d must be 2, got {self.d}")
        if self.N < 2:
            raise ConfigError(f"N must be >= 2 (the entropy estimate needs neighbours), got {self.N}")
        self.check_bounds(at_least_one=("n_targets", "modes"),
                          nonnegative_ints=("target_seed",),
                          positive=("tau0",))
        if not 1 <= self.noise_off <= self.steps:
            raise ConfigError(f"noise_off must be in [1, steps], got {self.noise_off} (steps={self.steps})")
        if self.noise_off < 2 * self.log_every:
            raise ConfigError(f"noise_off must be >= 2·log_every, got {self.noise_off}")
        if self.n_boot < 100:
            raise ConfigError(f"n_boot must be >= 100, got {self.n_boot}")
        self.tau_values()
        self.spectral_grid()

    def spectral_grid(self) -> list[int]:
        """Cells per direction of the grids on which the mean-field asymptotic rates are
        computed, from ``spectral_cells`` (comma-separated, increasing, each ≥ 6; "" for
        none); ``ConfigError`` otherwise."""
        return spectral_cells(self.spectral_cells)

    def tau_values(self) -> list[float]:
        """The fixed temperatures τ parsed from ``taus`` ("," or ";" separated), in order;
        ``ConfigError`` unless there is at least one and each is finite and > 0."""
        try:
            taus = [float(v) for v in self.taus.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"taus must be comma-separated numbers, got {self.taus!r}") from None
        if not taus or not all(math.isfinite(t) and t > 0 for t in taus):
            raise ConfigError(f"taus must be numbers > 0, got {self.taus!r}")
        return taus

    def runs(self) -> list[tuple[str, str]]:
        """(label, β schedule spec) of every run: fixed τ's, annealed, noiseless."""
        out = [(f"tau={t:g}", repr(1.0 / t)) for t in self.tau_values()]
        out.append((f"annealed tau0={self.tau0:g}", f"linear:{1.0 / self.tau0!r},{self.dt!r}"))
        out.append(("noiseless", "inf"))
        return out


def tau_at(cfg: Config, run: int, step: int) -> float:
    """τ of run ``run`` at iteration ``step`` (0 after noise_off and for noiseless GD)."""
    label, spec = cfg.runs()[run]
    if step >= cfg.noise_off or spec == "inf":
        return 0.0
    if label.startswith("annealed"):
        return cfg.tau0 / (step + 1)
    return 1.0 / float(spec)


def warmup(cfg) -> None:
    """Nothing to compile (plain torch; ``meanfield sweep`` calls this before fanning out)."""


def plan(cfg: Config) -> Plan:
    """One phase per run of :meth:`Config.runs` (fixed τ's, annealed, noiseless), seeds as
    replicas, particles uniform on the torus; rows carry τ, Ĥ and F per seed; one thread
    (50 particles)."""
    task = TorusMMD.random(cfg.n_targets, generator=torch.Generator().manual_seed(cfg.target_seed),
                           modes=cfg.modes)
    runs = cfg.runs()
    keys = {j: f"run={j}" for j in range(len(runs))}

    def phases(shared):
        clean = ParticleDynamics(task, dt=cfg.dt, backend=cfg.backend)
        dtype = getattr(torch, cfg.dtype)

        def init(j):
            gen = derive_generator(cfg.seed, "run", j)
            th = torch.rand(cfg.replicas, cfg.N, 2, generator=gen, dtype=torch.float64) * PERIOD
            return clean.init(th.to(dtype), generator=gen)

        def energy(j):
            def extra(state, pot):
                if pot is None:
                    pot = clean.potential(state)
                tau = tau_at(cfg, j, state.step)
                # without noise the particles merge (nearest-neighbour distances reach 1e-16),
                # Ĥ → −∞ and τ = 0: the entropy is estimated only while the noise is on
                H = knn_entropy(state.theta, period=PERIOD) if tau > 0 else np.full(cfg.replicas, np.nan)
                F = 0.5 * pot.risk.double().numpy() - (tau * H if tau > 0 else 0.0)
                return {"tau": tau, "entropy": float(H.mean()), "free_energy": float(F.mean()),
                        **{f"entropy_r{b}": float(h) for b, h in enumerate(H)},
                        **{f"free_energy_r{b}": float(f) for b, f in enumerate(F)}}
            return extra

        out = []
        for j, (_, spec) in enumerate(runs):
            dyn = NoiseSwitch(ParticleDynamics(task, dt=cfg.dt, beta=spec, backend=cfg.backend),
                               clean, cfg.noise_off)
            ph = size_phase(keys[j], {"N": j}, lambda j=j, dyn=dyn: (dyn, init(j)), label=f"N={j}",
                            extra=energy(j), snapshot_steps=None)
            ph.nonfinite_ok = ("pl_ratio", "entropy")
            out.append(ph)
        return out

    def results(ctx):
        return _write_results(cfg, ctx, task, [ctx.done[keys[j]] for j in range(len(runs))])

    def prelude():
        # the mean-field limit's asymptotic rate per τ: the spectrum of the grid PDE
        # linearised at its Gibbs state (ξ = 1, β = 1/τ), on each grid of spectral_cells
        cells = cfg.spectral_grid()
        return {"spectral": {f"tau={t:g}": spectral_sequence(task, cells, 1.0 / t, xi=1.0, period=PERIOD,
                                                            backend=cfg.backend)
                             for t in cfg.tau_values()} if cells else {}}

    return Plan(phases=phases, results=results, prelude=prelude, threads=1,
                record={"task": task.to_dict(), "runs": [r[0] for r in runs]})


def _write_results(cfg, ctx, task, done):
    """metrics.csv, fit.json, curves.npz and particles.npz from ``done``: the runs' PhaseRecords."""
    out = ctx.out
    runs = cfg.runs()
    curves = {j: decay.seed_curves(rec.rows, cfg.replicas) for j, rec in enumerate(done)}
    metrics = [{"run": j, "step": r["step"], "t": r["t"], "tau": r["tau"], "risk": r["risk"],
                "entropy": r["entropy"], "free_energy": r["free_energy"]}
               for j, rec in enumerate(done) for r in rec.rows]
    io.write_metrics(out / io.METRICS, metrics)
    fixed = {}
    spectral = ctx.shared.get("spectral") or {}
    for j, tau in enumerate(cfg.tau_values()):
        c = curves[j]
        rules = decay.decay_rate_rules(c["k"], c["F"], cfg.noise_off, n_boot=cfg.n_boot, seed=cfg.seed)
        main = rules["window_sd"]
        fixed[runs[j][0]] = {"tau": tau, "rate_per_iteration": main["rate"], "ci95": main["ci95"],
                             "F_inf": main["F_inf"], "fit_until": main["fit_until"],
                             "fit_points": main["points"], "fit_intercept": main["intercept"],
                             "F_final": float(c["F"][-1].mean()), "floor_rules": rules}
        if runs[j][0] in spectral:
            # per iteration: t = k·dt, so a rate r per unit t is r·dt per iteration
            fixed[runs[j][0]]["mean_field_asymptotic"] = spectral_table(spectral[runs[j][0]], time_unit=cfg.dt)
    Ra, Rn = curves[len(runs) - 2]["R"][-1], curves[len(runs) - 1]["R"][-1]    # annealed, noiseless
    rates = [v["rate_per_iteration"] for v in fixed.values()]
    fit = {"iterations": cfg.steps, "noise_off": cfg.noise_off, "eta": 2 * cfg.dt, "dt": cfg.dt,
           "fixed_tau": fixed,
           "rates_increase_with_tau": bool(all(np.diff(rates) > 0)) if len(rates) > 1 else None,
           "annealed": {"tau0": cfg.tau0, "final_risk_mean": float(Ra.mean()), "final_risk_per_seed": Ra.tolist()},
           "noiseless": {"final_risk_mean": float(Rn.mean()), "final_risk_per_seed": Rn.tolist()},
           "annealed_below_noiseless_fraction": float((Ra < Rn).mean()),
           "annealed_below_noiseless": bool(Ra.mean() < Rn.mean())}
    io.write_json(out / FIT, fit)
    arrays = {f"{key}_run{j}": v for j, c in curves.items() for key, v in c.items()}
    arrays["labels"] = np.array([r[0] for r in runs])
    io.write_npz(out / CURVES, arrays)
    parts = snapshot_arrays(ctx.done)
    parts.update({"t": np.array([cfg.steps * cfg.dt]), "param_names": np.array(task.param_names),
                  "theta": np.stack([rec.state["theta"].numpy() for rec in done])[None],
                  "labels": np.array([r[0] for r in runs])})
    parts.update(task.arrays())
    io.write_npz(out / io.PARTICLES, parts)
    return metrics


FIGURES = langevin.torus_figures
