"""cb-threshold: excess loss against the number of particles m at several horizons T
(Chizat–Bach 2018), with the threshold m*(T)/m0 and its sensitivity to the success criterion.

Chizat and Bach (NeurIPS 2018, arXiv:1805.09545) show that particle gradient descent on a
two-layer ReLU network finds the global minimiser once m is a small multiple of the
teacher's width m0, while m ≈ m0 gets stuck; Chizat's code ``success_2NNalt.jl``
(lchizat/2019-sparse-optim-measures, checked) uses d = 20, m0 = 5 unit-norm teacher
directions, inputs uniform on the sphere, 500 fresh samples a step, step 0.004, λ = 5·10⁻⁴,
10⁵ iterations, m ∈ {1, 3, 5, 7}, 5 repetitions (with its own signed-square parametrisation).

Here: teacher f*(x) = (1/m0) Σ_k s_k relu(⟨w*_k, x⟩), |w*_k| = 1 uniform on the sphere,
signs s_k alternating +, −, … (with all signs + even m = m0 succeeded from every seed in
d = 20: no threshold to see), student f(x) = (1/m) Σ_i a_i relu(⟨w_i, x⟩), θ_i = (a_i, w_i)
drawn uniformly on the sphere of radius ``init_radius`` in R^{1+d}, population GD (closed
form) with λ = 0.

Convention mapping (Chizat–Bach → ours, docs/design.md §1).  They minimise F_CB = ½ E(y − f)² + G
and move particle i by −η·m·∇_{θ_i}F_CB (the m-scaled gradient); since ∇_{θ_i} ½R(ρ_m) =
(1/m)∇Ψ(θ_i), that is θ ← θ − η ∇Ψ, i.e. our step θ ← θ − 2 dt ∇Ψ with dt = η/2 (t = k·η/2).
Inputs uniform on the sphere vs ours x ~ N(0, I_d): the ReLU network is 1-homogeneous in x
and |x|, x/|x| are independent, so R_Gauss = E|x|²·R_sphere = d·R_sphere — the same
minimisers, the landscape scaled by d (equivalently time rescaled by d); we use the exact
Gaussian population risk instead of 500-sample minibatches.

**Excess loss.**  R(T)/R_# with R_# = E[y²] the risk of the zero network (closed form).  With
λ = 0 and m ≥ m0 the teacher is representable, so inf R = 0 and R(T)/R_# is the whole
optimisation error; for m < m0 it also holds the approximation error.

**Success criterion and threshold.**  A system (m, seed) *succeeds at T* when
R(T)/R_# < ``success_tol``; m*(T) is the smallest m of the grid from which every m' ≥ m of
the grid has a fraction of successful seeds ≥ ``success_frac`` (None if even the largest m
does not).  The criterion is arbitrary, so m*(T) is also reported at every tolerance of
``sensitivity_tols`` (fraction fixed) and every fraction of ``sensitivity_fracs``
(tolerance fixed).  A failing system is *stuck* when its excess loss at the two longest
horizons T_a < T_b satisfies R(T_b)/R_# ≥ success_tol and
|R(T_b) − R(T_a)| ≤ ``stuck_rtol``·R(T_a) (it has stopped moving, not merely slowed).

**Horizons.**  One run records every system's float64 risk on every metrics row, so the
horizons are read off one trajectory: ``horizons`` lists times T (multiples of
log_every·dt) and the final T = steps·dt is always one; horizons beyond steps·dt are not
reached yet.  ``meanfield resume DIR --set steps=K [--set horizons=...]`` continues every
system from its final state (bit for bit the uninterrupted run) and recomputes the tables.

All m share one batched tensor (:func:`padded_system`): the whole experiment is one
population-GD run on θ [M·S, m_max, D].

Written: metrics.csv (the seed-mean risk per m, ``risk_m<m>``), results.csv (per horizon
and m: the seeds' R(T)/R_# and the success fraction), thresholds.csv (m*(T) per horizon
and criterion), fit.json (the criterion in words, R_#, m*(T)/m0, the sensitivity table,
the stuck systems), particles.npz (snapshots at 0, the horizons and the end; ``excess``
[H, M, S]; ``excess_traj`` at ``excess_t``) and the figures of ``meanfield.figures.chizat_bach``.

Defaults (``meanfield config cb-threshold``): d = 50, m0 = 10, every integer m from m0 to
2·m0 besides 5 and 8, 16 seeds, horizons T = 3000, 6000, 12 000; ``scale=small`` (CI): d = 10,
m0 = 3, m = 2 … 6, 8 seeds, T up to 1200.
Measured (full and small modes, and their cost): docs/sweeps.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import derive_generator
from .. import io
from ..analysis import thresholds
from ..dynamics import gradient_flow
from ..errors import ConfigError
from ..figures import chizat_bach
from ..figures.chizat_bach import FIT, RESULTS, THRESHOLDS
from ..interact import evaluate
from ..models import TeacherStudent, Unit
from .config import TwoLayerConfig
from .particles import relu_warmup, size_phase
from .plan import Plan, snapshot_arrays

NAME = "cb-threshold"
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "steps=40", "log_every=20", "checkpoint_every=20")

SMALL = {"d": 10, "m0": 3, "m_values": "2,3,4,5,6", "replicas": 8, "steps": 2400,
         "horizons": "150,300,600", "log_every": 50, "checkpoint_every": 1200}


def _floats(text: str, key: str) -> list[float]:
    """The comma-separated numbers of config key ``key`` (ConfigError naming it otherwise)."""
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{key} must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{key} must be finite numbers, got {text!r}")
    return vals


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of cb-threshold (module docstring): the teacher (m0, teacher_seed, teacher_sign),
    the widths ``m_values`` (``N`` is not used), the horizons and the success criteria;
    ``scale=small`` swaps in ``SMALL``."""

    scale: str = "full"
    d: int = 50
    m0: int = 10
    m_values: str = "5,8,10,11,12,13,14,15,16,17,18,19,20"
    replicas: int = 16
    teacher_seed: int = 0
    teacher_sign: str = "alternate"
    init_radius: float = 1.0
    dt: float = 0.5
    steps: int = 24000
    lam: float = 0.0
    horizons: str = "3000,6000"
    success_tol: float = 1e-3
    success_frac: float = 0.9
    sensitivity_tols: str = "1e-2,1e-4"
    sensitivity_fracs: str = "0.75,1"
    stuck_rtol: float = 1e-3
    log_every: int = 100
    save_every: int = 6000
    checkpoint_every: int = 4000

    _choices = {"scale": ("full", "small"), "teacher_sign": ("plus", "alternate")}
    _presets = {"scale": {"small": SMALL}}
    _help = {"scale": "preset: full (the README's run) or small (scale=small: the tests')",
             "N": "not used: the widths are m_values",
             "dt": "GD step (Chizat–Bach's step η is 2·dt)",
             "m0": "units of the teacher",
             "m_values": "the widths m, comma-separated (all run as one batched system)",
             "replicas": "independent seeds per width",
             "teacher_seed": "seed of the teacher's directions",
             "teacher_sign": "the teacher's output signs: plus (all +) or alternate (+, −, …)",
             "init_radius": "particles start uniform on the sphere of this radius in R^(1+d)",
             "lam": "λ of the penalty (λ/2)|θ|²",
             "horizons": "times T at which the excess loss is read, comma-separated",
             "success_tol": "a system succeeds at T when R(T)/R_# < success_tol",
             "success_frac": "m*(T): every larger m succeeds for at least this fraction of seeds",
             "sensitivity_tols": "other tolerances at which m*(T) is also reported",
             "sensitivity_fracs": "other fractions at which m*(T) is also reported",
             "stuck_rtol": "a failing system is stuck when R moved by less than this (relative)"}
    # the teacher's units (the estimate of memory_bytes sizes the students only)
    _size_terms = {"m0": lambda c: 4 * c.m0 * (c.d + 2) * 8}
    # more steps continue every system from its final state; every metrics row holds every
    # system's risk, so horizons may be added on resume (multiples of log_every·dt)
    resume_mutable = ("steps", "horizons", "checkpoint_every", "backend")

    def validate(self):
        """TwoLayerConfig's checks, then (``ConfigError``): m_values parses to ≥ 2 distinct
        integers ≥ 1; m0 ≥ 1; teacher_seed ≥ 0; init_radius, success_tol, stuck_rtol finite
        and > 0; lam finite ≥ 0; success_frac in (0, 1]; horizons > 0 and multiples of
        log_every·dt; sensitivity_tols > 0; sensitivity_fracs in (0, 1]."""
        super().validate()
        ms = self.ms()
        if len(ms) < 2:
            raise ConfigError(f"m_values needs at least two particle counts, got {self.m_values!r}")
        self.check_bounds(at_least_one=("m0",),
                          nonnegative_ints=("teacher_seed",),
                          positive=("init_radius", "success_tol", "stuck_rtol"),
                          nonnegative=("lam",))
        if not 0 < self.success_frac <= 1:
            raise ConfigError(f"success_frac must be in (0, 1], got {self.success_frac}")
        self.horizon_steps()
        if any(v <= 0 for v in _floats(self.sensitivity_tols, "sensitivity_tols")):
            raise ConfigError(f"sensitivity_tols must be > 0, got {self.sensitivity_tols!r}")
        if any(not 0 < v <= 1 for v in _floats(self.sensitivity_fracs, "sensitivity_fracs")):
            raise ConfigError(f"sensitivity_fracs must be in (0, 1], got {self.sensitivity_fracs!r}")

    def memory_bytes(self) -> int:
        """TwoLayerConfig's estimate for the one batched system: len(m_values)·replicas
        replicas of m_max particles (``N`` is not used)."""
        ms = self.ms()
        big = {**self.to_dict(), "N": max(ms), "replicas": len(ms) * self.replicas}
        return TwoLayerConfig.memory_bytes(TwoLayerConfig.from_mapping(
            {k: v for k, v in big.items() if k in TwoLayerConfig.field_types()}))

    def ms(self) -> list[int]:
        """The particle counts m, sorted; ConfigError on anything but positive integers."""
        try:
            ms = sorted({int(v) for v in self.m_values.replace(";", ",").split(",") if v.strip()})
        except ValueError:
            raise ConfigError(f"m_values must be comma-separated integers, got {self.m_values!r}") from None
        if not ms or ms[0] < 1:
            raise ConfigError(f"m_values must be integers >= 1, got {self.m_values!r}")
        return ms

    def horizon_steps(self) -> list[int]:
        """The steps k of the horizons T = k·dt reached by this run, sorted: every T of
        ``horizons`` up to steps·dt, and steps itself.  ConfigError when a horizon is not
        > 0 or not a multiple of log_every·dt (no metrics row would hold it)."""
        ks = {self.steps}
        for T in _floats(self.horizons, "horizons"):
            k = round(T / self.dt)
            if T <= 0 or abs(k * self.dt - T) > 1e-9 * T or k % self.log_every:
                raise ConfigError(f"horizons must be > 0 and multiples of log_every·dt = "
                                  f"{self.log_every * self.dt:g}, got {T:g}")
            if k <= self.steps:
                ks.add(k)
        return sorted(ks)

    def criteria(self) -> list[tuple[float, float]]:
        """(success_tol, success_frac) pairs m* is reported at: the primary one first, then
        each of ``sensitivity_tols`` at success_frac, each of ``sensitivity_fracs`` at
        success_tol (duplicates dropped)."""
        out = [(self.success_tol, self.success_frac)]
        out += [(t, self.success_frac) for t in _floats(self.sensitivity_tols, "sensitivity_tols")]
        out += [(self.success_tol, f) for f in _floats(self.sensitivity_fracs, "sensitivity_fracs")]
        return list(dict.fromkeys(out))


def teacher_task(cfg: Config) -> TeacherStudent:
    """m0 unit-norm directions uniform on the sphere, a* = 1, weights s_k/m0 (signs per teacher_sign)."""
    unit = Unit(cfg.d, "relu", output_weight=True)
    return TeacherStudent.random(unit, cfg.m0, generator=torch.Generator().manual_seed(cfg.teacher_seed),
                                 sign=cfg.teacher_sign)


def padded_system(cfg: Config, dyn):
    """Initial state θ [len(ms)·S, m_max, 1 + d] uniform on the sphere of radius init_radius,
    and weights [len(ms)·S, m_max]: 1/m on the first m particles of the systems of size m,
    the rest zero and at θ = 0, where ∇Ψ(0; ρ) = 0 for these units (a = 0, w = 0), so they
    never move and never change f (left free they would be test particles, which grow
    exponentially along descent directions of a stuck system's Ψ).  System (m, seed s) is drawn from
    ``seeds.derive_generator(seed, m, s)``, so its initial particles do not depend on which
    other m or how many seeds the run holds (``m_values=5,10`` and the full grid start m = 5
    alike)."""
    ms, S = cfg.ms(), cfg.replicas
    m_max = ms[-1]
    th = torch.zeros(len(ms) * S, m_max, cfg.d + 1, dtype=torch.float64)
    w = torch.zeros(len(ms) * S, m_max, dtype=torch.float64)
    for j, m in enumerate(ms):
        for s in range(S):
            z = torch.randn(m, cfg.d + 1, generator=derive_generator(cfg.seed, m, s),
                            dtype=torch.float64)
            th[j * S + s, :m] = cfg.init_radius * z / z.norm(dim=-1, keepdim=True)
            w[j * S + s, :m] = 1.0 / m     # padding: θ = 0 is a fixed point (∇Ψ(0) = 0)
    dtype = getattr(torch, cfg.dtype)
    return dyn.init(th.to(dtype), generator=torch.Generator().manual_seed(cfg.seed),
                    weights=w.to(dtype))


def plan(cfg: Config) -> Plan:
    """One phase: every (m, seed) system padded to m_max particles in one tensor
    (:func:`padded_system`), population GD; every row carries every system's risk
    re-evaluated in float64 (``risk64`` [M·S], kept out of metrics.csv) and the per-m seed
    means; snapshots at 0, at the horizons and at the end; one thread (small pair sums)."""
    task = teacher_task(cfg)
    ms, S = cfg.ms(), cfg.replicas
    key = f"m<={ms[-1]}"

    def extra(state, pot):
        r = evaluate(task, state.theta.double(), state.weights.double(), backend=cfg.backend).risk
        rm = r.reshape(len(ms), S)
        row = {"risk": float(r.mean())}
        row.update({f"risk_m{m}": float(rm[j].mean()) for j, m in enumerate(ms)})
        row["risk64"] = r.numpy().copy()
        return row

    def phases(shared):
        dyn = gradient_flow(task, dt=cfg.dt, lam=cfg.lam, backend=cfg.backend)
        return [size_phase(key, {"N": ms[-1]}, lambda: (dyn, padded_system(cfg, dyn)),
                           label=f"N={ms[-1]}", extra=extra, per_replica=False,
                           snapshot_steps=(0, *cfg.horizon_steps()))]

    def results(ctx):
        rec = ctx.done[key]
        io.write_metrics(ctx.out / io.METRICS,
                         [{k: v for k, v in r.items() if k != "risk64"} for r in rec.rows])
        return _write_results(cfg, ctx, task, rec)

    return Plan(phases=phases, results=results, primary=key, threads=1,
                record={"task": task.to_dict(), "m": ms})


def _write_results(cfg, ctx, task, rec):
    """results.csv, thresholds.csv, fit.json and particles.npz from the phase's record."""
    ms, S, m0 = cfg.ms(), cfg.replicas, cfg.m0
    by_step = thresholds.excess_at(rec.rows, "risk64", (len(ms), S), task.risk_sharp)
    ks = cfg.horizon_steps()
    missing = [k for k in ks if k not in by_step]
    if missing:                                    # pragma: no cover (validation prevents it)
        raise RuntimeError(f"cb-threshold: no metrics row at the horizon steps {missing}")
    excess = {k * cfg.dt: by_step[k] for k in ks}                  # {T: [M, S]}
    results = thresholds.excess_table(ms, m0, excess, cfg.success_tol)
    io.write_metrics(ctx.out / RESULTS, results)
    table = thresholds.threshold_table(ms, excess, cfg.criteria(), m0)
    io.write_metrics(ctx.out / THRESHOLDS,
                     [{k: (math.nan if v is None else v) for k, v in r.items()} for r in table])
    Ts = list(excess)
    fit = {"m0": m0, "d": cfg.d, "replicas": S, "m_values": ms, "dt": cfg.dt, "T": Ts[-1],
           "horizons": Ts, "risk_sharp": task.risk_sharp,
           "excess_loss": "R(T)/R_#, R_# = E[y^2] = risk of the zero network (closed form)",
           "criterion": thresholds.criterion_text(cfg.success_tol, cfg.success_frac, S),
           "success_tol": cfg.success_tol, "success_frac": cfg.success_frac,
           **thresholds.threshold_summary(ms, m0, excess, table, cfg.success_tol, cfg.stuck_rtol)}
    io.write_json(ctx.out / FIT, fit)
    arrays = snapshot_arrays(ctx.done)            # t = [0, horizons…], theta [K, M·S, m_max, D]
    steps_rows = sorted(by_step)
    arrays.update({"weights": rec.state["weights"].numpy(), "m_values": np.array(ms),
                   "param_names": np.array(task.param_names),
                   "horizons": np.array(Ts, float), "excess": np.stack([excess[T] for T in Ts]),
                   "excess_t": np.array(steps_rows, float) * cfg.dt,
                   "excess_traj": np.stack([by_step[k] for k in steps_rows])})
    arrays.update(task.arrays())
    io.write_npz(ctx.out / io.PARTICLES, arrays)
    return results


FIGURES = chizat_bach.threshold_figures
warmup = relu_warmup          # compiles the ReLU pair sums before a sweep's workers start
