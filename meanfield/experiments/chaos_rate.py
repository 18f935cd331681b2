"""chaos-rate: propagation of chaos — how fast N particles approach the radial PDE as N grows.

Task and dynamics are those of ``mmn-isotropic`` (MMN's isotropic Gaussians, piecewise-linear
σ, online SGD with ξ ≡ 1 and t = kε), run for every N of a geometric grid from ``N_min`` to
``N`` (``n_values`` values) with ``replicas`` independent seeds each, against one PDE
solution.  Per (N, seed) it records

* sup_{t ≤ T} |R_N(t) − R_PDE(t)| over the metrics rows,
* R_N(T) with its Monte Carlo standard error, and
* W1 between the empirical law of |w_i| at T and the PDE law at T, beside the exact
  expectation E W1 of N i.i.d. draws of the PDE law (``analysis.chaos.expected_w1_iid``, a
  binomial quadrature: no sampling noise; ``n_iid`` Monte Carlo draws of it are kept as a
  check),

then fits log-log slopes in N (``scipy.stats.linregress`` on the seed means) with percentile
bootstrap intervals (seeds resampled within each N).  Theory (Mei–Montanari–Nguyen Thm. 3;
Rotskoff–Vanden-Eijnden): fluctuations O(N^{−1/2}) (the 1-D empirical W1 alone is ∝ N^{−1/2},
so the test of chaos is the ratio W1 / E W1_iid, reported per seed: median, quartiles, range)
and a 1/N bias in the risk; online SGD adds an N-independent O(√ε) error, so ε must shrink
with the smallest error to be resolved.

The fluctuation of R_N(T) over seeds is reported with the Monte Carlo error of each risk
estimate taken out (s.d.² − mean s.e.², both terms in summary.csv; ``analysis.chaos.
corrected_sd``).  What remains has two sources: the initial sampling of the particles,
O(N^{−1/2}), and online SGD's own sample noise, which does not fall with N; at ε = 10⁻⁵ the
second dominates from N ≈ 200 on (measured: docs/pde.md), so the default grid cannot resolve
the −½.  ``paired=true`` starts seeds 2k and 2k + 1 from the same particles: the within-pair
spread is SGD's noise, the between-pair spread less half of it the initial sampling's
(``analysis.chaos.paired_components``), each with its slope in N.  ``scale=fluctuation`` is
that run: N from 20 to 320 (5 values), 64 seeds in 32 pairs, ε = 5·10⁻⁶, n_mc = 10⁵ on the
three rows t = 0, T/2, T.

The particles' risk is estimated with a control variate: R(ρ_N) = R_PDE + E[(y − f_N(x))² −
(y − f_PDE(x))²], the expectation by Monte Carlo on ``n_mc`` fresh samples (drawn and
evaluated in chunks), where f_PDE(x) = ∫ P_t(r) E_c σ(r |x| c) dr depends on |x| only and is
tabulated (Gauss–Jacobi in the cosine c, ``meanfield.analysis.chaos.pde_network``; cubic
interpolation in |x|).  Its standard error scales with |f_N − f_PDE| = O(N^{−1/2}) instead of
with R, so the gap stays resolved at large N.

Defaults: d = 20 (the reduced kernel needs 192 Hermite terms; d = 10 would need ~4000),
Δ = 0.8, κ = 0.8, ε = 10⁻⁵, T = 0.5, N from 50 to 5000 (6 values), 8 seeds.  ``scale=small``:
N from 20 to 500 (4 values), 4 seeds, ε = 2.5·10⁻⁵.  Why ε this small: at ε = 10⁻⁴ the SGD
bias of the law of |w| already exceeded the sampling W1 at N ≈ 500 and flattened the fitted
W1 slope to −0.37 (measured, N from 20 to 600); at ε = 3·10⁻⁵, T = 0.5 it was −0.52.
Outputs: metrics.csv (per N and recorded t: seed-mean risk and its s.e., risk_pde, w1),
summary.csv (per N: sup gap, W1 and the baseline, the ratio's distribution, bias, the
fluctuation's terms), fit.json (slopes, bootstrap intervals, the theory's slopes, the
acceptance; ``meanfield.analysis.chaos.statistics_at_T`` computes them), particles.npz (each
N's particles at T as theta_N<N>, the risks and s.e. at T), figures/chaos.png
(``meanfield.figures.mmn.chaos_figures``).  Resumable: finished N values are kept in the
checkpoint and skipped.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from .. import io
from ..analysis.chaos import expected_w1_iid, iid_radii, pde_network, statistics_at_T, w1_to_density
from ..errors import ConfigError, DivergenceError
from ..figures import mmn
from ..models import IsotropicGaussians, Unit
from ..pde import RadialGrid
from ..seeds import derive_generator
from .config import boot_bytes, check_n_grid, geometric_grid, n_grid_bytes
from .mmn_common import PiecewiseMMNConfig, build, record_steps, solve_pde
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
# the risk's fluctuation by source (seeds in pairs sharing their initial particles), on the N
# range where the initial sampling's N^(−1/2) is not buried under SGD's N-independent noise
FLUCTUATION = {"N": 320, "N_min": 20, "n_values": 5, "replicas": 64, "paired": True,
               "dt": 5e-6, "steps": 100_000, "log_every": 50_000, "save_every": 100_000,
               "checkpoint_every": 100_000, "n_mc": 100_000}
# samples per chunk of the risk estimate: (replicas, chunk, N) preactivations stay ≤ 64 MB
_CHUNK_ENTRIES = 16 * 2 ** 20


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
    n_iid: int = 16               # Monte Carlo draws of the i.i.d. baseline: a check of its quadrature
    paired: bool = False          # seeds 2k, 2k + 1 share their initial particles

    _choices = {"scale": ("full", "small", "fluctuation"), "pde_d": ("finite", "inf")}
    _presets = {"scale": {"small": SMALL, "fluctuation": FLUCTUATION}}
    _help = {"N": "the largest particle count of the N grid",
             "N_min": "the smallest particle count of the N grid",
             "n_values": "values of the geometric N grid from N_min to N",
             "replicas": "independent seeds per N (run as replicas of one tensor)",
             "n_boot": "bootstrap resamples of the fitted slopes' intervals",
             "n_iid": "Monte Carlo draws of N i.i.d. radii from the PDE law: a check of W1's baseline",
             "paired": "seeds 2k and 2k + 1 share their initial particles (needs even replicas >= 4)",
             "scale": "preset: full, small (a run of seconds) or fluctuation (paired seeds)"}
    _size_terms = {"n_values": n_grid_bytes, "n_boot": boot_bytes}
    shardable = False
    # the PDE reference is recorded at the run's k·dt: nothing that moves those times may change
    resume_mutable = ("checkpoint_every", "backend")

    def validate(self):
        """PiecewiseMMNConfig's checks, then the N grid's (``config.check_n_grid``), n_iid ≥ 2
        (the Monte Carlo check of the i.i.d. baseline needs two draws), and with ``paired`` an
        even number of replicas ≥ 4."""
        super().validate()
        check_n_grid(self)
        if self.n_iid < 2:
            raise ConfigError(f"n_iid must be >= 2 for the i.i.d. baseline's check, got {self.n_iid}")
        if self.paired and (self.replicas < 4 or self.replicas % 2):
            raise ConfigError(f"paired seeds need an even number of replicas >= 4, got {self.replicas}")

    def memory_bytes(self) -> int:
        """TwoLayerConfig's estimate with the risk's samples counted per chunk (:func:`risk_cv`
        evaluates at most _CHUNK_ENTRIES preactivations at a time), not all n_mc at once."""
        item = 4 if self.dtype == "float32" else 8
        R, N, d = self.replicas, self.N, self.d
        batch = max(1, self.n_mc)
        chunk = max(1, min(batch, _CHUNK_ENTRIES // (R * N)))
        return int(super().memory_bytes() - 3 * R * (batch - chunk) * (d + N) * item)

    def grid(self) -> list[int]:
        """N values: ``config.geometric_grid(N_min, N, n_values)``."""
        return geometric_grid(self.N_min, self.N, self.n_values)


def f_pde_table(cfg: Config, grid, density) -> CubicSpline:
    """f_PDE(|x|) of the radial law ``density`` [M] on ``grid`` as a cubic spline in |x| on
    [0, (1 + Δ)(√d + 8)] (400 nodes; every sample's norm lies there)."""
    q = np.linspace(0.0, (1 + cfg.delta) * (math.sqrt(cfg.d) + 8), 400)
    return CubicSpline(q, pde_network(cfg.activation(), cfg.d, grid.centers, grid.h, density, q))


def risk_cv(task, theta, n, generator, f_pde_fn, risk_pde):
    """Control-variate estimate of R(ρ_N) per replica and its s.e. (module docstring) from n
    fresh samples per replica, drawn and evaluated in chunks of at most _CHUNK_ENTRIES
    preactivations: (R [B], s.e. [B])."""
    B, N = theta.shape[0], theta.shape[-2]
    m = torch.full((1, N), 1.0 / N, dtype=theta.dtype)
    chunk = max(1, min(n, _CHUNK_ENTRIES // (B * N)))
    s1, s2 = np.zeros(B), np.zeros(B)
    for i0 in range(0, n, chunk):
        x, y = task.sample(min(chunk, n - i0), generator=generator, batch=B, dtype=theta.dtype)
        f = task.unit.network(x, theta, m).double().numpy()                 # (B, c)
        fp = f_pde_fn(x.double().norm(dim=-1).numpy())                       # (B, c)
        yv = y.double().numpy()
        diff = (yv - f) ** 2 - (yv - fp) ** 2
        s1 += diff.sum(-1)
        s2 += (diff ** 2).sum(-1)
    mean = s1 / n
    return risk_pde + mean, np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0) / n)


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
        tables = {k: f_pde_table(cfg, grid, dens[0, steps.index(k)]) for k in rows_at}
        out = []
        for N in cfg.grid():
            eval_gen = derive_generator(cfg.seed, "eval", N)
            iid_gen = derive_generator(cfg.seed, "iid", N)

            def measure(dyn, state, pot, N=N, eval_gen=eval_gen, iid_gen=iid_gen):
                k = state.step
                kp = steps.index(k)
                R, se = risk_cv(dyn.task, state.theta, cfg.n_mc, eval_gen, tables[k], float(risks[0, kp]))
                r = state.theta.double().norm(dim=-1).cpu().numpy()
                p = dens[0, kp]
                w1 = np.array([w1_to_density(r[b], grid.faces, p, grid.h) for b in range(cfg.replicas)])
                # the null baseline: E W1 of N exact draws of the PDE law at t, by quadrature
                # (its error at T: 8 against 16 Gauss nodes), and n_iid Monte Carlo draws of it
                w1_iid = expected_w1_iid(N, grid.faces, p, grid.h)
                u = torch.rand(cfg.n_iid, N, generator=iid_gen, dtype=torch.float64).numpy()
                w1_mc = np.array([w1_to_density(iid_radii(u[j], grid.faces, p, grid.h), grid.faces, p, grid.h)
                                  for j in range(cfg.n_iid)])
                if not np.isfinite(R).all():
                    raise DivergenceError(f"N={N}, step {k}: non-finite risk; the step size is likely too large")
                row = {"step": int(k), "t": float(times[kp]), "risk": R, "risk_se": se,
                       "risk_pde": float(risks[0, kp]), "w1": w1, "w1_iid": w1_iid, "w1_iid_mc": w1_mc}
                if k == cfg.steps:
                    row["w1_iid_err"] = abs(expected_w1_iid(N, grid.faces, p, grid.h, nodes=16) - w1_iid)
                return row

            out.append(Phase(key=keys[N], build=lambda N=N: build(cfg, N, paired=cfg.paired)[1:],
                             measure=measure,
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
        io.write_npz(ctx.out / mmn.PDE_FILE, {"t": z["t"], "r": grid.centers, "r_max": z["r_max"],
                                            "density": z["density"], "risk": z["risk"],
                                            "law_index": np.zeros(cfg.replicas, dtype=np.int64)})
        return _write_results(cfg, ctx, done)

    return Plan(phases=phases, prelude=prelude, results=results,
                record={"task": unit_task.to_dict(), "N_grid": cfg.grid()})


def _write_results(cfg, ctx, done):
    out = ctx.out
    Ns = cfg.grid()
    metrics = []
    at_T = {key: [] for key in ("sup_gap", "w1", "w1_iid", "w1_iid_err", "w1_iid_mc", "risk", "risk_pde",
                                "risk_se", "max_risk_se")}
    for N in Ns:
        series = done[N]["series"]
        for s in series:
            B = len(s["risk"])
            metrics.append({"N": N, "step": s["step"], "t": s["t"], "risk": float(s["risk"].mean()),
                            "risk_se": float(np.sqrt((s["risk_se"] ** 2).sum()) / B),
                            "risk_sd_raw": float(s["risk"].std(ddof=1)),
                            "mc_se": float(np.sqrt((s["risk_se"] ** 2).mean())), "risk_pde": s["risk_pde"],
                            "w1": float(s["w1"].mean()), "w1_iid": float(s["w1_iid"]),
                            "w1_iid_mc": float(s["w1_iid_mc"].mean()),
                            "w1_ratio": float(s["w1"].mean() / s["w1_iid"])})
        last = series[-1]
        at_T["sup_gap"].append(np.max([np.abs(s["risk"] - s["risk_pde"]) for s in series], axis=0))
        for key in ("w1", "w1_iid", "w1_iid_err", "w1_iid_mc", "risk", "risk_se"):
            at_T[key].append(np.asarray(last[key], dtype=np.float64))
        at_T["risk_pde"].append(float(last["risk_pde"]))
        at_T["max_risk_se"].append(float(max(s["risk_se"].max() for s in series)))
    summary, fit = statistics_at_T(Ns, at_T, n_boot=cfg.n_boot, seed=cfg.seed, paired=cfg.paired)
    io.write_metrics(out / io.METRICS, metrics)
    io.write_metrics(out / mmn.SUMMARY_FILE, summary)
    pde = ctx.shared["pde"]
    grid_err = float(np.abs(pde["risk"][0] - pde["risk_fine"][0]).max())
    fit = {"N": Ns, "T": cfg.steps * cfg.dt, **fit,
           "pde_grid": {"cells": int(pde["cells"]), "cells_fine": 2 * int(pde["cells"]),
                        "max_abs_risk_change": grid_err,
                        "over_smallest_sup_gap": grid_err / min(r["sup_risk_gap"] for r in summary),
                        "over_smallest_bias": grid_err / min(abs(r["risk_bias"]) for r in summary)}}
    io.write_json(out / mmn.FIT_FILE, fit)
    arrays = snapshot_arrays(ctx.done, primary=f"N={Ns[-1]}")     # t = [T]; theta: the largest N
    arrays.update({"param_names": np.array([f"w{k}" for k in range(cfg.d)]), "N_grid": np.array(Ns),
                   "risk_T": np.stack(at_T["risk"]), "risk_se_T": np.stack(at_T["risk_se"])})
    arrays.update({f"theta_N{N}": done[N]["theta"].numpy() for N in Ns})
    io.write_npz(out / io.PARTICLES, arrays)
    return summary


FIGURES = mmn.chaos_figures
