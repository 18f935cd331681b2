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

Convention mapping (Chizat–Bach → ours, DESIGN.md §1).  They minimise F_CB = ½ E(y − f)² + G
and move particle i by −η·m·∇_{θ_i}F_CB (the m-scaled gradient); since ∇_{θ_i} ½R(ρ_m) =
(1/m)∇Ψ(θ_i), that is θ ← θ − η ∇Ψ, i.e. our step θ ← θ − 2 dt ∇Ψ with dt = η/2 (t = k·η/2).
Inputs uniform on the sphere vs ours x ~ N(0, I_d): the ReLU network is 1-homogeneous in x
and |x|, x/|x| are independent, so R_Gauss = E|x|²·R_sphere = d·R_sphere — the same
minimisers, the landscape scaled by d (equivalently time rescaled by d); we use the exact
Gaussian population risk instead of 500-sample minibatches.

**Excess loss.**  R_# = E[y²] = E[f*(x)²], x ~ N(0, I_d), the risk of the zero network (no
label noise; closed form, ``TeacherStudent.risk_sharp``).  The excess loss of a system at
time T is R(T)/R_#, its risk relative to R_#.  With λ = 0 and m ≥ m0 the teacher is
representable, so inf R = 0 and R(T)/R_# is the whole optimisation error; for m < m0,
inf R > 0 and R(T)/R_# also holds the approximation error.

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

All m share one batched tensor: every (m, seed) system holds m_max particles of which the
first m carry weight 1/m and the rest weight 0 and sit at θ = 0, where ∇Ψ(0; ρ) = 0 for
these units (a = 0, w = 0), so they never move and never change f (left free they would be
test particles, which grow exponentially along descent directions of a stuck system's Ψ); the
whole experiment is one population-GD run on θ [M·S, m_max, D].

Written (besides metrics.csv, whose rows carry the seed-mean risk per m, ``risk_m<m>``):
results.csv (one row per horizon T and m: median, mean, max of the seeds' R(T)/R_#, the
success fraction, and every seed's ``excess_s<s>``), thresholds.csv (one row per horizon and
criterion: T, success_tol, success_frac, primary, m_star, m_star_over_m0), fit.json (the
criterion in words, R_#, m*(T)/m0 per horizon, the sensitivity table, the stuck systems),
particles.npz (snapshots at t = 0, at each horizon and at the end; ``excess`` [H, M, S] at the
horizons ``horizons`` [H]; the whole trajectory ``excess_traj`` [rows, M, S] at ``excess_t``).

Defaults: d = 50, m0 = 10, m ∈ {5, 8} ∪ {10, 11, …, 20} (every integer from m0 to 2·m0),
16 seeds, dt = 0.5, 24 000 steps, horizons T = 3000, 6000, 12 000, init_radius 1,
success_tol 10⁻³, success_frac 0.9 (sensitivity: tolerances 10⁻² and 10⁻⁴, fractions 0.75
and 1), stuck_rtol 10⁻³.  ``scale=small`` (CI): d = 10, m0 = 3, m ∈ {2, 3, …, 6}, 8 seeds,
dt = 0.5, 2400 steps, horizons T = 150, 300, 600, 1200.
Figures: figures/threshold.png (success fraction against m for each T with m*(T) marked;
every seed's excess loss against m at each T; m*(T)/m0 against T for every criterion) and
figures/risk.png (seed-mean R(t)/R_# per m; every seed at m = m0, the stuck ones marked).

Measured (``meanfield run cb-threshold``, 2026-12-04: 4 min 48 s wall, 3 min 41 s CPU, on
2 cores shared at load ≈ 3.5): R_# = 0.0477; m*(T)/m0 = 1.4, 1.1, 1.1 at T = 3000, 6000,
12 000 (tolerance 10⁻², or fraction 0.75: 1.1, 1.0, 1.0; tolerance 10⁻⁴: 1.5, 1.1, 1.1;
every seed: 1.5, 1.4, 1.2).  At m = m0, 6, 13, 13 of 16 seeds succeed; the 3 others are stuck
at R/R_# = 6.1128·10⁻³ from T = 6000 to 12 000 (relative change ≤ 2·10⁻⁸); no system with
m > m0 is stuck (m = 11's one failing seed still moves, 7.0 → 6.0·10⁻³).  m = 5 and 8 stay at
7.0·10⁻² and 2.3·10⁻² (median).  ``scale=small`` (5 s): m*(T)/m0 = none, none, 4/3, 4/3 at
T = 150, 300, 600, 1200, 1 from T = 600 at fraction 0.75; one seed at m = m0 stuck at 0.24.
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
from ..dynamics import gradient_flow
from ..errors import ConfigError
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
    """Keys of cb-threshold (see the module docstring; ``N`` is unused): m0 teacher units,
    m_values the comma-separated widths m, replicas seeds per m, teacher_seed, teacher_sign
    ("alternate" or "plus"), init_radius, lam, horizons (times T, besides steps·dt, at which
    the excess losses are tabulated), success_tol on R(T)/R_#, success_frac,
    sensitivity_tols and sensitivity_fracs (the other criteria m* is reported at),
    stuck_rtol; ``scale=small`` swaps in ``SMALL``."""

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


def system_generator(seed: int, m: int, s: int) -> torch.Generator:
    """The generator of system (m, seed s): ``seeds.derive_generator(seed, m, s)``, so a
    system's initial particles do not depend on which other m or how many seeds the run
    holds (``m_values=5,10`` and the full grid start m = 5 alike)."""
    return derive_generator(seed, m, s)


def padded_system(cfg: Config, dyn):
    """Initial state θ [len(ms)·S, m_max, 1 + d] uniform on the sphere of radius init_radius,
    and weights [len(ms)·S, m_max]: 1/m on the first m particles of the systems of size m
    (system (m, s) drawn by :func:`system_generator`), the rest zero and at θ = 0."""
    ms, S = cfg.ms(), cfg.replicas
    m_max = ms[-1]
    th = torch.zeros(len(ms) * S, m_max, cfg.d + 1, dtype=torch.float64)
    w = torch.zeros(len(ms) * S, m_max, dtype=torch.float64)
    for j, m in enumerate(ms):
        for s in range(S):
            z = torch.randn(m, cfg.d + 1, generator=system_generator(cfg.seed, m, s),
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


def threshold(ms, success, frac) -> int | None:
    """The smallest m from which every m' ≥ m has a success fraction ≥ ``frac`` (None if none)."""
    m_star = None
    for m, s in zip(reversed(ms), reversed(success)):
        if s >= frac:
            m_star = m
        else:
            break
    return m_star


def threshold_table(ms, excess: dict, criteria) -> list[dict]:
    """One row per horizon T (the keys of ``excess``: {T: R(T)/R_# [M, S]}) and criterion
    (tol, frac): {"T", "success_tol", "success_frac", "primary" (1 for the first criterion),
    "m_star", "m_star_over_m0" filled by the caller}; m_star is None when no m succeeds."""
    rows = []
    for T, ex in excess.items():
        for c, (tol, frac) in enumerate(criteria):
            success = (np.asarray(ex) < tol).mean(-1)
            rows.append({"T": float(T), "success_tol": tol, "success_frac": frac,
                         "primary": int(c == 0), "m_star": threshold(list(ms), list(success), frac)})
    return rows


def stuck_systems(ms, ex_a, ex_b, tol, rtol) -> list[dict]:
    """The systems (m, seed) that fail at the longer horizon (R(T_b)/R_# ≥ ``tol``) and did not
    move between the two horizons (|ex_b − ex_a| ≤ ``rtol``·ex_a), from R(T)/R_# [M, S] at
    T_a (``ex_a``) and T_b (``ex_b``): [{"m", "seed", "excess_from", "excess_to", "rel_change"}]."""
    out = []
    ex_a, ex_b = np.asarray(ex_a, float), np.asarray(ex_b, float)
    for j, m in enumerate(ms):
        for s in range(ex_a.shape[1]):
            a, b = ex_a[j, s], ex_b[j, s]
            change = abs(b - a) / a
            if b >= tol and change <= rtol:
                out.append({"m": int(m), "seed": s, "excess_from": float(a), "excess_to": float(b),
                            "rel_change": float(change)})
    return out


def criterion_text(cfg: Config) -> str:
    """The primary success criterion in words (fit.json)."""
    return (f"a seed succeeds at T when R(T)/R_# < {cfg.success_tol:g}, with R_# = E[y^2] the risk of "
            f"the zero network (x ~ N(0, I_d), no label noise); m*(T) is the smallest m of the grid "
            f"from which every larger m of the grid succeeds in at least {cfg.success_frac:g} of the "
            f"{cfg.replicas} seeds")


def _write_results(cfg, ctx, task, rec):
    out = ctx.out
    ms, S, m0 = cfg.ms(), cfg.replicas, cfg.m0
    rows = rec.rows
    by_step = {int(r["step"]): np.asarray(r["risk64"], float).reshape(len(ms), S) / task.risk_sharp
               for r in rows}
    ks = cfg.horizon_steps()
    missing = [k for k in ks if k not in by_step]
    if missing:                                    # pragma: no cover (validation prevents it)
        raise RuntimeError(f"cb-threshold: no metrics row at the horizon steps {missing}")
    excess = {k * cfg.dt: by_step[k] for k in ks}                  # {T: [M, S]}
    results = []
    for T, rel in excess.items():
        for j, m in enumerate(ms):
            r = rel[j]
            row = {"T": T, "m": m, "m_over_m0": m / m0, "excess_median": float(np.median(r)),
                   "excess_mean": float(r.mean()), "excess_max": float(r.max()),
                   "success_frac": float((r < cfg.success_tol).mean())}
            row.update({f"excess_s{s}": float(x) for s, x in enumerate(r)})
            results.append(row)
    io.write_metrics(out / "results.csv", results)
    table = threshold_table(ms, excess, cfg.criteria())
    for row in table:
        row["m_star_over_m0"] = None if row["m_star"] is None else row["m_star"] / m0
    io.write_metrics(out / "thresholds.csv",
                     [{k: (math.nan if v is None else v) for k, v in r.items()} for r in table])
    Ts = list(excess)
    T_final, final = Ts[-1], excess[Ts[-1]]
    primary = {r["T"]: r for r in table if r["primary"]}
    m_star = primary[T_final]["m_star"]
    stuck = None
    if len(Ts) >= 2:
        systems = stuck_systems(ms, excess[Ts[-2]], final, cfg.success_tol, cfg.stuck_rtol)
        stuck = {"T_from": Ts[-2], "T_to": T_final, "rtol": cfg.stuck_rtol,
                 "criterion": f"R(T_to)/R_# >= {cfg.success_tol:g} and |R(T_to) - R(T_from)| <= "
                              f"{cfg.stuck_rtol:g} R(T_from)",
                 "count_by_m": {str(m): sum(s["m"] == m for s in systems) for m in ms},
                 "systems": systems}
    below = [j for j, m in enumerate(ms) if m <= m0]
    above = [j for j, m in enumerate(ms) if m_star is not None and m >= m_star]
    fit = {"m0": m0, "d": cfg.d, "replicas": S, "m_values": ms, "dt": cfg.dt, "T": T_final,
           "horizons": Ts, "risk_sharp": task.risk_sharp,
           "excess_loss": "R(T)/R_#, R_# = E[y^2] = risk of the zero network (closed form)",
           "criterion": criterion_text(cfg),
           "success_tol": cfg.success_tol, "success_frac": cfg.success_frac,
           "m_star": m_star, "m_star_over_m0": None if m_star is None else m_star / m0,
           "m_star_by_T": {f"{T:g}": primary[T]["m_star"] for T in Ts},
           "m_star_over_m0_by_T": {f"{T:g}": primary[T]["m_star_over_m0"] for T in Ts},
           "thresholds": table,
           "success_frac_at_m0_by_T": ({f"{T:g}": float((excess[T][ms.index(m0)] < cfg.success_tol).mean())
                                        for T in Ts} if m0 in ms else None),
           "median_excess_at_m0_or_below": float(np.median(final[below], -1).max()) if below else None,
           "max_excess_from_m_star": float(final[above].max()) if above else None,
           "stuck": stuck}
    io.write_json(out / "fit.json", fit)
    arrays = snapshot_arrays(ctx.done)            # t = [0, horizons…], theta [K, M·S, m_max, D]
    steps_rows = sorted(by_step)
    arrays.update({"weights": rec.state["weights"].numpy(), "m_values": np.array(ms),
                   "param_names": np.array(task.param_names),
                   "horizons": np.array(Ts, float), "excess": np.stack([excess[T] for T in Ts]),
                   "excess_t": np.array(steps_rows, float) * cfg.dt,
                   "excess_traj": np.stack([by_step[k] for k in steps_rows])})
    arrays.update(task.arrays())
    io.write_npz(out / io.PARTICLES, arrays)
    return results


def plot(run_dir, coords=None) -> list[Path]:
    """figures/threshold.png: (left) the success fraction against m for each horizon T, m*(T)
    marked; (middle) R(T)/R_# of every seed against m at each T, with the medians; (right)
    m*(T)/m0 against T for every criterion.  figures/risk.png: (left) the seed-mean
    R(t)/R_# for every m; (right) every seed at m = m0, the stuck ones in red."""
    from ..plotting import pyplot, save_figure

    run_dir = Path(run_dir)
    res = io.read_metrics(run_dir / "results.csv")
    thr = io.read_metrics(run_dir / "thresholds.csv")
    fit = json.loads((run_dir / "fit.json").read_text())
    met = io.read_metrics(run_dir / io.METRICS)
    plt = pyplot()
    Ts = [float(T) for T in fit["horizons"]]
    m0, tol, frac = fit["m0"], fit["success_tol"], fit["success_frac"]
    cols = {T: plt.cm.plasma(0.1 + 0.7 * i / max(1, len(Ts) - 1)) for i, T in enumerate(Ts)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=120)
    ax = axes[0]
    for i, T in enumerate(Ts):
        sel = res["T"] == T
        m = res["m"][sel]
        ms_T = fit["m_star_by_T"][f"{T:g}"]
        lab = f"T = {T:g}: " + (f"m* = {ms_T}, m*/m0 = {ms_T / m0:.3g}" if ms_T is not None else "no m*")
        ax.plot(m + 0.06 * (i - (len(Ts) - 1) / 2), res["success_frac"][sel], "o-", color=cols[T],
                ms=4, lw=1.2, label=lab)
        if ms_T is not None:
            ax.plot([ms_T], [1.04 + 0.025 * i], "v", color=cols[T], ms=7)
    ax.axhline(frac, color="0.5", lw=0.7, ls="--", label=f"success fraction {frac:g}")
    ax.axvline(m0, color="k", lw=0.8, ls=":", label=f"m0 = {m0}")
    ms_all = np.unique(res["m"])
    ax.set_xticks(ms_all, [str(int(v)) for v in ms_all], fontsize=7)
    ax.set_ylim(-0.03, 1.03 + 0.025 * len(Ts) + 0.03)
    ax.set_xlabel("number of particles m  (▼: m*(T))")
    ax.set_ylabel(f"fraction of {fit['replicas']} seeds with R(T)/R_# < {tol:g}")
    ax.set_title(f"d = {fit['d']}, teacher m0 = {m0}; R_# = E[y²] = {fit['risk_sharp']:.3g}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7, loc="center right")
    ax = axes[1]
    floor = 1e-14
    seeds = sorted((k for k in res if k.startswith("excess_s")), key=lambda k: int(k[8:]))
    for i, T in enumerate(Ts):
        sel = res["T"] == T
        m = res["m"][sel] + 0.12 * (i - (len(Ts) - 1) / 2)
        for k in seeds:
            ax.scatter(m, np.maximum(res[k][sel], floor), s=6, color=cols[T], alpha=0.45, lw=0)
        ax.plot(m, np.maximum(res["excess_median"][sel], floor), "-", color=cols[T], lw=1.2,
                label=f"T = {T:g}: median")
    ax.axhline(tol, color="C2", lw=0.8, ls="--", label=f"tolerance {tol:g}")
    ax.axvline(m0, color="k", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xticks(ms_all, [str(int(v)) for v in ms_all], fontsize=7)
    ax.set_xlabel("number of particles m  (dots: seeds)")
    ax.set_ylabel("excess loss R(T) / R_#")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    ax = axes[2]
    crits = []
    for tol_c, frac_c, prim in zip(thr["success_tol"], thr["success_frac"], thr["primary"]):
        if (tol_c, frac_c, prim) not in crits:
            crits.append((tol_c, frac_c, prim))
    for c, (tol_c, frac_c, prim) in enumerate(crits):
        sel = (thr["success_tol"] == tol_c) & (thr["success_frac"] == frac_c)
        ax.plot(thr["T"][sel] * np.exp(0.025 * (c - (len(crits) - 1) / 2)), thr["m_star_over_m0"][sel],
                "o-" if prim else "s--", lw=2 if prim else 1, ms=5 if prim else 4,
                color="k" if prim else f"C{c}",
                label=f"tol {tol_c:g}, fraction {frac_c:g}" + (" (primary)" if prim else ""))
    ax.axhline(1, color="0.5", lw=0.7, ls=":")
    ax.set_xscale("log")
    ax.set_xticks(Ts, [f"{T:g}" for T in Ts])
    ax.minorticks_off()
    ax.set_xlabel("horizon T (MMN time, t = k·dt)")
    ax.set_ylabel("m*(T) / m0")
    ax.set_title("m*(T)/m0 per success criterion (points shifted in T to be seen)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "threshold.png")]

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
    ax = axes[0]
    risk_cols = sorted((k for k in met if k.startswith("risk_m")), key=lambda k: int(k[6:]))
    sel = met["t"] > 0
    for j, k in enumerate(risk_cols):
        ax.plot(met["t"][sel], met[k][sel] / fit["risk_sharp"],
                color=plt.cm.viridis(j / max(1, len(risk_cols) - 1)), lw=1.1, label=f"m = {k[6:]}")
    ax.set_ylabel("seed-mean R(t) / R_#")
    ax.legend(frameon=False, fontsize=6, ncol=2)
    ax = axes[1]
    with np.load(run_dir / io.PARTICLES) as z:
        t_traj, traj, m_vals = z["excess_t"], z["excess_traj"], list(z["m_values"])
    if m0 in m_vals:
        j0 = m_vals.index(m0)
        stuck = {s["seed"] for s in (fit["stuck"] or {}).get("systems", []) if s["m"] == m0}
        keep = t_traj > 0
        for s in range(traj.shape[2]):
            ax.plot(t_traj[keep], np.maximum(traj[keep, j0, s], floor), lw=1.4 if s in stuck else 0.8,
                    color="C3" if s in stuck else "0.4", alpha=0.9 if s in stuck else 0.6)
        ax.plot([], [], color="C3", label=f"stuck ({len(stuck)}): unchanged to {fit['stuck']['rtol']:g}"
                if fit["stuck"] else "stuck")
        ax.plot([], [], color="0.4", label="other seeds")
        ax.axhline(tol, color="C2", lw=0.8, ls="--")
        ax.set_ylabel(f"R(t) / R_# of every seed at m = m0 = {m0}")
        ax.legend(frameon=False, fontsize=7)
    for ax in axes:
        for T in Ts:
            ax.axvline(T, color=cols[T], lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t (MMN time, t = k·dt)")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "risk.png"))
    return paths


FIGURES = plot
warmup = relu_warmup          # compiles the ReLU pair sums before a sweep's workers start
