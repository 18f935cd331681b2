"""chaos-rate: propagation of chaos — how fast N particles approach the radial PDE as N grows.

Task and dynamics are those of ``mmn-isotropic`` (MMN's isotropic Gaussians, piecewise-linear
σ, online SGD with ξ ≡ 1 and t = kε), run for every N of a geometric grid from ``N_min`` to
``N`` (``n_values`` values) with ``replicas`` independent seeds each, against one PDE
solution.  Per (N, seed) it records

* sup_{t ≤ T} |R_N(t) − R_PDE(t)| over the metrics rows, and
* W1 between the empirical law of |w_i| at T and the PDE law at T,

then fits log-log slopes in N (``scipy.stats.linregress`` on the seed means) with percentile
bootstrap intervals (seeds resampled within each N).  Theory (Mei–Montanari–Nguyen Thm. 3;
Rotskoff–Vanden-Eijnden): fluctuations O(N^{−1/2}) (the 1-D empirical W1 alone is ∝ N^{−1/2})
and a 1/N bias in the risk; online SGD adds an N-independent O(√ε) error, so ε must shrink
with the smallest error to be resolved.

The particles' risk is estimated with a control variate: R(ρ_N) = R_PDE + E[(y − f_N(x))² −
(y − f_PDE(x))²], the expectation by Monte Carlo on ``n_mc`` fresh samples, where f_PDE(x)
= ∫ P_t(r) E_c σ(r |x| c) dr depends on |x| only and is tabulated (Gauss–Jacobi in the cosine
c, cubic interpolation in |x|).  Its standard error scales with |f_N − f_PDE| = O(N^{−1/2})
instead of with R, so the gap stays resolved at large N.

Defaults: d = 20 (the reduced kernel needs 192 Hermite terms; d = 10 would need ~4000),
Δ = 0.8, κ = 0.8, ε = 10⁻⁵, T = 0.5, N from 50 to 5000 (6 values), 8 seeds.  ``scale=small``:
N from 20 to 500 (4 values), 4 seeds, ε = 2.5·10⁻⁵.  Why ε this small: at ε = 10⁻⁴ the SGD
bias of the law of |w| already exceeded the sampling W1 at N ≈ 500 and flattened the fitted
W1 slope to −0.37 (measured, N from 20 to 600); at ε = 3·10⁻⁵, T = 0.5 it was −0.52.
Outputs: metrics.csv (per N and recorded t: seed-mean risk and its s.e., risk_pde, w1),
summary.csv (per N: sup gap and W1 at T, seed means and s.e.), fit.json (slopes, bootstrap
intervals, the theory's −1/2), particles.npz (each N's particles at T as theta_N<N>),
figures/chaos.png.  Resumable: finished N values are kept in the checkpoint and skipped.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from scipy.special import roots_jacobi

from ..seeds import derive_generator
from .. import io
from ..diagnostics import loglog_rate, rate_of, ratio_of_means, ratio_rate
from ..errors import ConfigError, DivergenceError
from ..models import IsotropicGaussians, Unit
from ..pde import RadialGrid
from .config import check_n_grid, geometric_grid
from .mmn_isotropic import PiecewiseMMNConfig, _w1_to_density, build, iid_radii, record_steps, solve_pde
from .plan import Phase, Plan, snapshot_arrays

NAME = "chaos-rate"
VIEWS = ("radial",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "N=40", "N_min=10", "n_values=3", "replicas=2", "steps=1000",
        "log_every=500", "save_every=1000", "checkpoint_every=1000", "n_mc=300",
        "pde_cells=100", "n_boot=100")

SMALL = {"N": 500, "N_min": 20, "n_values": 4, "replicas": 4, "dt": 2.5e-5, "steps": 20_000,
         "log_every": 2_000, "save_every": 400, "checkpoint_every": 20_000, "n_mc": 5_000,
         "pde_cells": 400}


@dataclass(frozen=True)
class Config(PiecewiseMMNConfig):
    """Keys of chaos-rate (see the module docstring): the mmn-isotropic keys, with N the
    largest and N_min the smallest particle count of a geometric grid of n_values values,
    replicas seeds per N, n_boot bootstrap resamples for the slope intervals;
    ``scale=small`` swaps in ``SMALL``."""

    N: int = 5000
    N_min: int = 50
    n_values: int = 6
    d: int = 20
    replicas: int = 8
    dt: float = 1e-5
    steps: int = 50_000
    log_every: int = 5_000
    save_every: int = 1_000       # snapshots of the largest N (51: its movie); other N at T
    checkpoint_every: int = 50_000
    n_mc: int = 20_000
    pde_cells: int = 1000
    pde_rmax: float = 6.0
    n_boot: int = 2000
    n_iid: int = 16               # i.i.d. N-samples of the PDE law per N and t: W1's null baseline

    _presets = {"scale": {"small": SMALL}}
    shardable = False
    # the PDE reference is recorded at the run's k·dt: nothing that moves those times may change
    resume_mutable = ("checkpoint_every", "backend")

    def validate(self):
        """PiecewiseMMNConfig's checks, then the N grid's (``config.check_n_grid``), and
        n_iid ≥ 2 (the i.i.d. baseline's interval needs two draws)."""
        super().validate()
        check_n_grid(self)
        if self.n_iid < 2:
            raise ConfigError(f"n_iid must be >= 2 for the i.i.d. baseline's interval, got {self.n_iid}")

    def grid(self) -> list[int]:
        """N values: ``config.geometric_grid(N_min, N, n_values)``."""
        return geometric_grid(self.N_min, self.N, self.n_values)


# ------------------------------------------------------------------------------------------
def pde_network(activation, d, r_centers, h, density, q, nodes: int = 256):
    """f_PDE(q) = ∫ P(r) E_c σ(r q c) dr for |x| = q [Q], with c the cosine of a uniform
    direction in R^d (density ∝ (1 − c²)^((d−3)/2), Gauss–Jacobi nodes) and P the cell
    values ``density`` [M] on cells of width h centred at ``r_centers`` [M]."""
    c, wc = roots_jacobi(nodes, (d - 3) / 2, (d - 3) / 2)
    wc = wc / wc.sum()
    keep = density * h > 1e-14
    rm, pm = r_centers[keep], density[keep] * h                         # (M',)
    out = np.empty(len(q))
    for i0 in range(0, len(q), 64):
        z = q[i0:i0 + 64, None, None] * rm[None, :, None] * c[None, None, :]   # (Q, M', C)
        s = activation(torch.from_numpy(z)).numpy()
        out[i0:i0 + 64] = (s @ wc) @ pm
    return out


def _risk_cv(task, theta, x, y, f_pde_fn, risk_pde):
    """Control-variate estimate of R(ρ_N) per replica and its s.e. (module docstring)."""
    N = theta.shape[-2]
    f = task.unit.network(x, theta, torch.full((1, N), 1.0 / N, dtype=theta.dtype))   # (B, n)
    fp = f_pde_fn(x.double().norm(dim=-1).numpy())                       # (B, n)
    yv, fv = y.double().numpy(), f.double().numpy()
    diff = (yv - fv) ** 2 - (yv - fp) ** 2
    return risk_pde + diff.mean(-1), diff.std(-1) / math.sqrt(diff.shape[-1])


def plan(cfg: Config) -> Plan:
    """The radial PDE as the prelude, then one phase per N (seeds as replicas), online SGD
    advanced in chunks between records; each row: the control-variate risk per seed and its
    s.e. (samples from a generator per N, checkpointed), the PDE's risk, W1 of |w| per seed;
    the final particles kept per N."""
    unit_task = IsotropicGaussians(Unit(cfg.d, cfg.activation(), output_weight=False), cfg.delta)
    keys = {N: f"N={N}" for N in cfg.grid()}

    def prelude():
        times, grid, dens, risks, _, _ = solve_pde(cfg)
        # the same PDE on a grid twice as fine: the grid error of R_PDE, beside the gaps it meets
        fine = solve_pde(dataclasses.replace(cfg, pde_cells=2 * cfg.pde_cells))[3]
        return {"pde": {"t": times, "r_max": grid.r_max, "cells": grid.centers.shape[0],
                        "density": dens, "risk": risks, "risk_fine": fine}}

    def phases(shared):
        z = shared["pde"]
        times, dens, risks = z["t"], z["density"], z["risk"]
        grid = RadialGrid(float(z["r_max"]), int(z["cells"]))
        steps = list(record_steps(cfg))
        rows_at = [k for k in steps if k % cfg.log_every == 0 or k == cfg.steps]
        # f_PDE(|x|) tables at the row times (|x| ≤ (1 + Δ)·(√d + 8) covers every sample)
        q = np.linspace(0.0, (1 + cfg.delta) * (math.sqrt(cfg.d) + 8), 400)
        act = cfg.activation()
        tables = {k: CubicSpline(q, pde_network(act, cfg.d, grid.centers, grid.h,
                                                dens[0, steps.index(k)], q)) for k in rows_at}
        out = []
        for N in cfg.grid():
            eval_gen = derive_generator(cfg.seed, "eval", N)
            iid_gen = derive_generator(cfg.seed, "iid", N)

            def measure(dyn, state, pot, N=N, eval_gen=eval_gen, iid_gen=iid_gen):
                k = state.step
                kp = steps.index(k)
                x, y = dyn.task.sample(cfg.n_mc, generator=eval_gen, batch=cfg.replicas,
                                       dtype=state.theta.dtype)
                R, se = _risk_cv(dyn.task, state.theta, x, y, tables[k], float(risks[0, kp]))
                r = state.theta.double().norm(dim=-1).cpu().numpy()
                w1 = np.array([_w1_to_density(r[b], grid.faces, dens[0, kp], grid.h)
                               for b in range(cfg.replicas)])
                # the null baseline: N i.i.d. draws from the PDE law at t, n_iid times
                u = torch.rand(cfg.n_iid, N, generator=iid_gen, dtype=torch.float64).numpy()
                w1_iid = np.array([_w1_to_density(iid_radii(u[j], grid.faces, dens[0, kp], grid.h),
                                                  grid.faces, dens[0, kp], grid.h)
                                   for j in range(cfg.n_iid)])
                if not np.isfinite(R).all():
                    raise DivergenceError(f"N={N}, step {k}: non-finite risk; the step size is likely too large")
                return {"step": int(k), "t": float(times[kp]), "risk": R, "risk_se": se,
                        "risk_pde": float(risks[0, kp]), "w1": w1, "w1_iid": w1_iid}

            out.append(Phase(key=keys[N], build=lambda N=N: build(cfg, N)[1:], measure=measure,
                             chunked=True, snapshot_steps=None if N == cfg.grid()[-1] else (),
                             snapshots=N == cfg.grid()[-1], generators={"eval": eval_gen, "iid": iid_gen},
                             # the movie shows one system: replica 0 (5000 × 20 × 51 floats, 20 MB)
                             snapshot=lambda s: s.theta[:1].detach().cpu().clone(),
                             finish=lambda dyn, st, rec: {"theta": st.theta.detach().cpu().clone()}))
        return out

    def results(ctx):
        done = {N: {"series": ctx.done[k].rows, "theta": ctx.done[k].result["theta"]}
                for N, k in keys.items()}
        z = ctx.shared["pde"]
        grid = RadialGrid(float(z["r_max"]), int(z["cells"]))
        io.write_npz(ctx.out / "pde.npz", {"t": z["t"], "r": grid.centers, "r_max": z["r_max"],
                                            "density": z["density"], "risk": z["risk"],
                                            "law_index": np.zeros(cfg.replicas, dtype=np.int64)})
        return _write_results(cfg, ctx, done)

    return Plan(phases=phases, prelude=prelude, results=results,
                record={"task": unit_task.to_dict(), "N_grid": cfg.grid()})


def _write_results(cfg, ctx, done):
    out = ctx.out
    Ns = cfg.grid()
    metrics = []
    at_T = {key: [] for key in ("sup_gap", "w1", "w1_iid", "risk", "risk_pde", "risk_se", "max_risk_se")}
    for N in Ns:
        series = done[N]["series"]
        for s in series:
            B = len(s["risk"])
            metrics.append({"N": N, "step": s["step"], "t": s["t"], "risk": float(s["risk"].mean()),
                            "risk_se": float(np.sqrt((s["risk_se"] ** 2).sum()) / B),
                            "risk_sd": float(s["risk"].std(ddof=1)), "risk_pde": s["risk_pde"],
                            "w1": float(s["w1"].mean()), "w1_iid": float(s["w1_iid"].mean()),
                            "w1_ratio": float(s["w1"].mean() / s["w1_iid"].mean())})
        last = series[-1]
        at_T["sup_gap"].append(np.max([np.abs(s["risk"] - s["risk_pde"]) for s in series], axis=0))
        for key in ("w1", "w1_iid", "risk", "risk_se"):
            at_T[key].append(np.asarray(last[key], dtype=np.float64))
        at_T["risk_pde"].append(float(last["risk_pde"]))
        at_T["max_risk_se"].append(float(max(s["risk_se"].max() for s in series)))
    summary, fit = statistics_at_T(Ns, at_T, n_boot=cfg.n_boot, seed=cfg.seed)
    io.write_metrics(out / io.METRICS, metrics)
    io.write_metrics(out / "summary.csv", summary)
    pde = ctx.shared["pde"]
    grid_err = float(np.abs(pde["risk"][0] - pde["risk_fine"][0]).max())
    fit = {"N": Ns, "T": cfg.steps * cfg.dt, **fit,
           "pde_grid": {"cells": int(pde["cells"]), "cells_fine": 2 * int(pde["cells"]),
                        "max_abs_risk_change": grid_err,
                        "over_smallest_sup_gap": grid_err / min(r["sup_risk_gap"] for r in summary),
                        "over_smallest_bias": grid_err / min(abs(r["risk_bias"]) for r in summary)}}
    io.write_json(out / "fit.json", fit)
    arrays = snapshot_arrays(ctx.done, primary=f"N={Ns[-1]}")     # t = [T]; theta: the largest N
    arrays.update({"param_names": np.array([f"w{k}" for k in range(cfg.d)]), "N_grid": np.array(Ns),
                   "risk_T": np.stack(at_T["risk"]), "risk_se_T": np.stack(at_T["risk_se"])})
    arrays.update({f"theta_N{N}": done[N]["theta"].numpy() for N in Ns})
    io.write_npz(out / io.PARTICLES, arrays)
    return summary


# the theory's slopes in N: W1 of N points ∝ N^{−1/2} (sampling), their ratio N-independent
# (chaos: the trained particles are as good as i.i.d. up to a constant), the risk's bias 1/N
# and its seed-to-seed fluctuation N^{−1/2}
THEORY = {"w1": -0.5, "w1_iid": -0.5, "w1_ratio": 0.0, "risk_bias": -1.0, "risk_sd": -0.5}


def statistics_at_T(Ns, at_T: dict, *, n_boot: int = 2000, seed: int = 0):
    """The per-N statistics at T and their rates in N.

    ``at_T`` holds, per N (lists of length K = len(Ns)): ``risk`` [B] the seeds' R_N(T),
    ``risk_pde`` R_PDE(T), ``risk_se`` [B] their Monte Carlo s.e., ``w1`` [B] W1(|w| of the
    seeds' particles, PDE law), ``w1_iid`` [n_iid] W1(N i.i.d. draws of the PDE law, PDE law),
    and optionally ``sup_gap`` [B] sup_t |R_N − R_PDE| and ``max_risk_se``.

    Returns (summary rows, fit dict): per N the seed means and s.e., the ratio
    W1/W1_iid with its bootstrap interval, the bias E_seeds[R_N − R_PDE] and the fluctuation
    s.d._seeds R_N; in fit their log-log slopes in N with intervals (``loglog_rate``,
    ``rate_of``, ``ratio_rate``), the theory's slopes, and :func:`acceptance`."""
    kw = {"n_boot": n_boot, "seed": seed}
    summary = []
    bias = [np.asarray(R) - p for R, p in zip(at_T["risk"], at_T["risk_pde"])]
    for i, N in enumerate(Ns):
        w1, w1i, R = at_T["w1"][i], at_T["w1_iid"][i], at_T["risk"][i]
        ratio = ratio_of_means(w1, w1i, **kw)
        row = {"N": N}
        if "sup_gap" in at_T:
            row.update({"sup_risk_gap": float(at_T["sup_gap"][i].mean()),
                        "sup_risk_gap_se": _se(at_T["sup_gap"][i])})
        row.update({
            "w1": float(np.mean(w1)), "w1_se": _se(w1), "w1_iid": float(np.mean(w1i)), "w1_iid_se": _se(w1i),
            "w1_ratio": ratio["ratio"], "w1_ratio_lo": ratio["ci95"][0], "w1_ratio_hi": ratio["ci95"][1],
            "risk_bias": float(bias[i].mean()), "risk_bias_se": _se(R), "risk_sd": float(np.std(R, ddof=1)),
            "mc_se": float(np.sqrt((np.asarray(at_T["risk_se"][i]) ** 2).mean()))})
        if "max_risk_se" in at_T:
            row["max_risk_se"] = at_T["max_risk_se"][i]
        summary.append(row)
    fit = {"theory": THEORY,
           "w1": loglog_rate(Ns, at_T["w1"], **kw), "w1_iid": loglog_rate(Ns, at_T["w1_iid"], **kw),
           "w1_ratio": ratio_rate(Ns, at_T["w1"], at_T["w1_iid"], **kw),
           "risk_bias": _maybe_rate(Ns, bias, "mean", kw),
           "risk_sd": _maybe_rate(Ns, at_T["risk"], "sd", kw)}
    if "sup_gap" in at_T:
        fit["sup_risk_gap"] = loglog_rate(Ns, at_T["sup_gap"], **kw)
    fit["acceptance"] = acceptance(summary, fit)
    return summary, fit


# acceptance: the largest N's law within RATIO_MAX × the i.i.d. W1; the risk's bias ∝ 1/N
RATIO_MAX = 1.5


def acceptance(summary: list[dict], fit: dict) -> dict:
    """Do the particles converge to this PDE solution?  Two checks at T, each of which fails
    on a PDE with a wrong time scale (ξ × 0.9 or × 1.1 fails both in the small mode,
    ``tests/test_chaos_rate.py``):

    * ``law``: at the largest N, W1(particles, PDE) ≤ RATIO_MAX · W1(N i.i.d. draws of the
      PDE law, PDE) — the trained particles sit as close to the PDE law as an exact sample
      of it does (up to 50 %);
    * ``risk``: the bias E_seeds[R_N(T)] − R_PDE(T) is positive at every N and decays like
      1/N: its fitted slope's 95 % interval contains −1 (a wrong R_PDE leaves an
      N-independent offset, which flattens the slope or changes the bias's sign).

    ``summary``, ``fit``: as :func:`statistics_at_T` makes them.  Returns {"law", "risk",
    "passed", "w1_ratio", "ratio_max", "risk_bias_slope", "risk_bias_ci95"}."""
    ratio = float(summary[-1]["w1_ratio"])
    b = fit["risk_bias"]
    risk = b.get("slope") is not None and b["ci95"][0] <= THEORY["risk_bias"] <= b["ci95"][1]
    law = ratio <= RATIO_MAX
    return {"law": bool(law), "risk": bool(risk), "passed": bool(law and risk), "w1_ratio": ratio,
            "ratio_max": RATIO_MAX, "risk_bias_slope": b.get("slope"), "risk_bias_ci95": b.get("ci95")}


def _se(v) -> float:
    v = np.asarray(v, dtype=np.float64)
    return float(v.std(ddof=1) / math.sqrt(v.size))


def _maybe_rate(Ns, samples, statistic, kw) -> dict:
    """``rate_of``, or the reason there is none (a bias that changes sign has no log-slope)."""
    try:
        return rate_of(Ns, samples, statistic=statistic, **kw)
    except ConfigError as e:
        return {"slope": None, "reason": str(e)}


def plot(run_dir, coords=None) -> list[Path]:
    """figures/chaos.png, three panels against N (log-log, seed means ± 2 s.e., fitted slopes
    with their intervals, and the theory's guides): the risk's bias E[R_N − R_PDE] at T
    (theory 1/N) and its seed-to-seed s.d. (N^{−1/2}); W1 of the particles and of N i.i.d.
    draws of the PDE law; and their ratio with its bootstrap interval (chaos: N-independent)."""
    from matplotlib.ticker import NullFormatter

    from ..plotting import pyplot, save_figure

    run_dir = Path(run_dir)
    s = io.read_metrics(run_dir / "summary.csv")
    fit = json.loads((run_dir / "fit.json").read_text())
    N = s["N"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=120)

    def line(ax, key, v, color, label):
        f = fit[key]
        if f.get("slope") is None:
            return
        c = np.exp(np.mean(np.log(v)) - f["slope"] * np.mean(np.log(N)))
        ax.plot(N, c * N ** f["slope"], "-", color=color, lw=1,
                label=f"{label}: slope {f['slope']:.2f} [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]")

    ax = axes[0]
    ax.errorbar(N, s["risk_bias"], yerr=2 * s["risk_bias_se"], fmt="o", color="C0", ms=4, capsize=2)
    line(ax, "risk_bias", s["risk_bias"], "C0", "bias E R_N − R_PDE")
    ax.plot(N, s["risk_sd"], "s", color="C1", ms=4)
    line(ax, "risk_sd", s["risk_sd"], "C1", "s.d. over seeds")
    ax.plot(N, s["risk_bias"][0] * N[0] / N, ":", color="0.4", label="1/N")
    ax.plot(N, s["risk_sd"][0] * np.sqrt(N[0] / N), "--", color="0.6", label="N^(−1/2)")
    ax.set_title(f"risk at T = {fit['T']:g}", fontsize=9)
    ax = axes[1]
    ax.errorbar(N, s["w1"], yerr=2 * s["w1_se"], fmt="o", color="C0", ms=4, capsize=2)
    line(ax, "w1", s["w1"], "C0", "particles")
    ax.errorbar(N, s["w1_iid"], yerr=2 * s["w1_iid_se"], fmt="^", color="C2", ms=4, capsize=2)
    line(ax, "w1_iid", s["w1_iid"], "C2", "i.i.d. from the PDE law")
    ax.set_title("W1(law of |w| at T, PDE law)", fontsize=9)
    ax = axes[2]
    r = fit["w1_ratio"]
    ax.errorbar(N, s["w1_ratio"], yerr=[s["w1_ratio"] - s["w1_ratio_lo"], s["w1_ratio_hi"] - s["w1_ratio"]],
                fmt="o", color="C3", ms=4, capsize=2,
                label=f"slope {r['slope']:.2f} [{r['slope_ci95'][0]:.2f}, {r['slope_ci95'][1]:.2f}]")
    ax.axhline(1.0, color="0.5", ls="--", lw=1, label="i.i.d. accuracy")
    ax.set_ylim(0, max(2.0, float(np.max(s["w1_ratio_hi"])) * 1.1))
    ax.set_title("W1(particles) / W1(i.i.d.), 95 % interval", fontsize=9)
    for k, ax in enumerate(axes):
        ax.set_xscale("log")
        if k < 2:
            ax.set_yscale("log")
        ax.set_xticks(N, [str(int(n)) for n in N])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("N")
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, run_dir / io.FIGURES / "chaos.png")]


FIGURES = plot
