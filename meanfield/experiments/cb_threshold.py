"""cb-threshold: final excess loss against the number of particles m (Chizat–Bach 2018), with m*/m0.

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
form) with λ = 0, so that inf R = 0 and the excess loss is R(T) itself.

Convention mapping (Chizat–Bach → ours, DESIGN.md §1).  They minimise F_CB = ½ E(y − f)² + G
and move particle i by −η·m·∇_{θ_i}F_CB (the m-scaled gradient); since ∇_{θ_i} ½R(ρ_m) =
(1/m)∇Ψ(θ_i), that is θ ← θ − η ∇Ψ, i.e. our step θ ← θ − 2 dt ∇Ψ with dt = η/2 (t = k·η/2).
Inputs uniform on the sphere vs ours x ~ N(0, I_d): the ReLU network is 1-homogeneous in x
and |x|, x/|x| are independent, so R_Gauss = E|x|²·R_sphere = d·R_sphere — the same
minimisers, the landscape scaled by d (equivalently time rescaled by d); we use the exact
Gaussian population risk instead of 500-sample minibatches.

All m share one batched tensor: every (m, seed) system holds m_max particles of which the
first m carry weight 1/m and the rest weight 0 and sit at θ = 0, where ∇Ψ(0; ρ) = 0 for
these units (a = 0, w = 0), so they never move and never change f (left free they would be
test particles, which grow exponentially along descent directions of a stuck system's Ψ); the
whole experiment is one population-GD run on θ [M·S, m_max, D].

Reported (results.csv, fit.json): per m, the seeds' excess losses R(T)/R_# (relative to the
risk of the zero network), their median, mean, the success fraction (R(T)/R_# <
``success_tol``), and the threshold m* = the smallest m from which every larger m in the grid
succeeds in at least ``success_frac`` of the seeds; fit.json reports m*/m0.

Defaults: d = 50, m0 = 10, m ∈ {5, 8, 10, 12, 15, 20, 25, 30, 40, 60, 80}, 16 seeds, dt = 0.5,
6000 steps (T = 3000), init_radius 1, success_tol 10⁻³, success_frac 0.9.  ``scale=small``
(CI): d = 10, m0 = 3, m ∈ {2, 3, 4, 6, 9, 12}, 8 seeds, 1200 steps.
Figures: figures/threshold.png (excess loss of every seed against m, median and mean, m0 and
m* marked; success fraction) and figures/risk.png (seed-mean risk against t per m).
"""
from __future__ import annotations

import json
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
from .config import RunConfig
from .n_scaling import warmup  # noqa: F401 (sweep warm-up)
from .particles import legacy_entries, size_phase
from .plan import Plan, snapshot_arrays

NAME = "cb-threshold"

SMALL = {"d": 10, "m0": 3, "m_values": "2,3,4,6,9,12", "replicas": 8, "steps": 1200,
         "log_every": 50, "checkpoint_every": 600}


@dataclass(frozen=True)
class Config(RunConfig):
    """Keys of cb-threshold (see the module docstring; ``N`` is unused): m0 teacher units,
    m_values the comma-separated widths m, replicas seeds per m, teacher_seed, teacher_sign
    ("alternate" or "plus"), init_radius, lam, success_tol on R(T)/R_#, success_frac;
    ``scale=small`` swaps in ``SMALL``."""

    scale: str = "full"
    d: int = 50
    m0: int = 10
    m_values: str = "5,8,10,12,15,20,25,30,40,60,80"
    replicas: int = 16
    teacher_seed: int = 0
    teacher_sign: str = "alternate"
    init_radius: float = 1.0
    dt: float = 0.5
    steps: int = 6000
    lam: float = 0.0
    success_tol: float = 1e-3
    success_frac: float = 0.9
    log_every: int = 100
    save_every: int = 6000
    checkpoint_every: int = 2000

    _choices = {"scale": ("full", "small"), "teacher_sign": ("plus", "alternate")}
    _presets = {"scale": {"small": SMALL}}
    # more steps continue every system from its final state (a threshold at a longer horizon)
    resume_mutable = ("steps", "checkpoint_every", "backend")

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): m_values parses to ≥ 2 distinct
        integers ≥ 1; m0 ≥ 1; teacher_seed ≥ 0; init_radius, success_tol finite and > 0;
        lam finite ≥ 0; success_frac in (0, 1]."""
        super().validate()
        ms = self.ms()
        if len(ms) < 2:
            raise ConfigError(f"m_values needs at least two particle counts, got {self.m_values!r}")
        self.check_bounds(at_least_one=("m0",),
                          nonnegative_ints=("teacher_seed",),
                          positive=("init_radius", "success_tol"),
                          nonnegative=("lam",))
        if not 0 < self.success_frac <= 1:
            raise ConfigError(f"success_frac must be in (0, 1], got {self.success_frac}")

    def ms(self) -> list[int]:
        """The particle counts m, sorted; ConfigError on anything but positive integers."""
        try:
            ms = sorted({int(v) for v in self.m_values.replace(";", ",").split(",") if v.strip()})
        except ValueError:
            raise ConfigError(f"m_values must be comma-separated integers, got {self.m_values!r}") from None
        if not ms or ms[0] < 1:
            raise ConfigError(f"m_values must be integers >= 1, got {self.m_values!r}")
        return ms


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
    (:func:`padded_system`), population GD; rows carry the per-m seed-mean risks; the final
    risks re-evaluated in float64; one thread (small pair sums)."""
    task = teacher_task(cfg)
    ms, S = cfg.ms(), cfg.replicas
    key = f"m<={ms[-1]}"

    def per_m(risk):
        r = risk.double().reshape(len(ms), S)
        return {f"risk_m{m}": float(r[j].mean()) for j, m in enumerate(ms)}

    def phases(shared):
        dyn = gradient_flow(task, dt=cfg.dt, lam=cfg.lam, backend=cfg.backend)

        def final(state):
            pot = evaluate(task, state.theta.double(), state.weights.double(), backend=cfg.backend)
            return pot.risk, {"risk64": pot.risk.numpy().copy()}

        return [size_phase(key, {"N": ms[-1]}, lambda: (dyn, padded_system(cfg, dyn)),
                           label=f"N={ms[-1]}", final=final, per_replica=False,
                           extra=lambda st, pot: per_m(pot.risk) if pot is not None else {})]

    def results(ctx):
        entry = legacy_entries(ctx, {ms[-1]: key})[ms[-1]]
        rows = entry["rows"]
        last = per_m(torch.as_tensor(entry["risk64"]))
        rows[-1].update(last)
        rows[-1]["risk"] = float(np.mean(entry["risk64"]))
        io.write_metrics(ctx.out / io.METRICS, rows)
        _write_results(cfg, ctx, task, entry)
        return rows

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


def _write_results(cfg, ctx, task, entry):
    out = ctx.out
    ms, S = cfg.ms(), cfg.replicas
    rel = np.asarray(entry["risk64"], float).reshape(len(ms), S) / task.risk_sharp
    results = []
    for j, m in enumerate(ms):
        r = rel[j]
        row = {"m": m, "m_over_m0": m / cfg.m0, "excess_median": float(np.median(r)),
               "excess_mean": float(r.mean()), "excess_max": float(r.max()),
               "success_frac": float((r < cfg.success_tol).mean())}
        row.update({f"excess_s{s}": float(x) for s, x in enumerate(r)})
        results.append(row)
    io.write_metrics(out / "results.csv", results)
    m_star = threshold(ms, [r["success_frac"] for r in results], cfg.success_frac)
    below = [r for r in results if r["m"] < cfg.m0 or r["m"] == cfg.m0]
    above = [r for r in results if m_star is not None and r["m"] >= m_star]
    fit = {"m0": cfg.m0, "d": cfg.d, "T": cfg.steps * cfg.dt, "risk_sharp": task.risk_sharp,
           "success_tol": cfg.success_tol, "success_frac": cfg.success_frac,
           "m_star": m_star, "m_star_over_m0": None if m_star is None else m_star / cfg.m0,
           "median_excess_at_m0_or_below": max(r["excess_median"] for r in below) if below else None,
           "max_excess_from_m_star": max(r["excess_max"] for r in above) if above else None}
    io.write_json(out / "fit.json", fit)
    arrays = snapshot_arrays(ctx.done)            # t = [0, T], theta [2, M·S, m_max, D]
    arrays.update({"weights": entry["state"]["weights"].numpy(), "m_values": np.array(ms),
                   "param_names": np.array(task.param_names)})
    arrays.update(task.arrays())
    io.write_npz(out / io.PARTICLES, arrays)
    return results


def plot(run_dir, coords=None) -> list[Path]:
    """figures/threshold.png: (left) R(T)/R_# of every seed against m (log-log), the median and
    the mean, m0 and m* marked; (right) the success fraction against m/m0.
    figures/risk.png: the seed-mean risk against t for every m."""
    from ..plotting import _plt, save_figure

    run_dir = Path(run_dir)
    res = io.read_metrics(run_dir / "results.csv")
    fit = json.loads((run_dir / "fit.json").read_text())
    met = io.read_metrics(run_dir / io.METRICS)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    ax = axes[0]
    m = res["m"]
    floor = 1e-16
    for k in sorted(k for k in res if k.startswith("excess_s")):
        ax.scatter(m * np.exp(np.random.default_rng(len(k)).uniform(-0.04, 0.04, len(m))),
                   np.maximum(res[k], floor), s=7, color="0.4", alpha=0.5, lw=0)
    ax.plot(m, np.maximum(res["excess_median"], floor), "o-", color="C0", label="median over seeds")
    ax.plot(m, np.maximum(res["excess_mean"], floor), "s--", color="C3", ms=4, label="mean over seeds")
    ax.axvline(fit["m0"], color="k", lw=0.8, ls=":", label=f"m0 = {fit['m0']}")
    if fit["m_star"] is not None:
        ax.axvline(fit["m_star"], color="C2", lw=1.2, label=f"m* = {fit['m_star']} (m*/m0 = {fit['m_star_over_m0']:.2g})")
    ax.axhline(fit["success_tol"], color="C2", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(m, [str(int(v)) for v in m], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("number of particles m")
    ax.set_ylabel("excess loss R(T) / R_#")
    ax.set_title(f"d = {fit['d']}, teacher m0 = {fit['m0']}, T = {fit['T']:.3g}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7)
    ax2 = axes[1]
    ax2.plot(res["m_over_m0"], res["success_frac"], "o-", color="C2")
    ax2.axhline(fit["success_frac"], color="0.5", lw=0.6, ls="--")
    ax2.set_xscale("log")
    ax2.set_xticks(res["m_over_m0"], [f"{v:g}" for v in res["m_over_m0"]], fontsize=7)
    ax2.minorticks_off()
    ax2.set_xlabel("m / m0")
    ax2.set_ylabel(f"fraction of seeds with R(T)/R_# < {fit['success_tol']:g}")
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths = [save_figure(fig, run_dir / io.FIGURES / "threshold.png")]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    cols = sorted((k for k in met if k.startswith("risk_m")), key=lambda k: int(k[6:]))
    for j, k in enumerate(cols):
        sel = met["t"] > 0
        ax.plot(met["t"][sel], met[k][sel], color=plt.cm.viridis(j / max(1, len(cols) - 1)), lw=1.1,
                label=f"m = {k[6:]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t (MMN time, t = k·dt)")
    ax.set_ylabel("seed-mean risk")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(save_figure(fig, run_dir / io.FIGURES / "risk.png"))
    return paths
