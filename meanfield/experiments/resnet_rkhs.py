"""resnet-rkhs: RKHS ResNets with random Fourier features, PL ratio and λ_min(K_X) against data separation.

Model (Barboni–Peyré–Vialard, NeurIPS 2022): residuals v_s(x) = Θ_s ψ(x) with fixed random
Fourier features ψ_j(x) = cos(⟨ω_j, x⟩ + φ_j), ω_j from the Student-t spectral density of
the Matérn-ν kernel (``models.resnet.random_fourier_units``; E[ψ(x)ψ(x')] = ½ k_ν(|x − x'|)),
the same M features in each of L layers; only Θ (the u of the units u cos(⟨w, x⟩ + b))
is trained, from Θ = 0 (the identity map), by the full-batch conditional-OT flow
(``train="u"``, ξ = 1, step dt).  Hidden dimension D = lift·d with BPV's lifting A, B.

Data with separation δ: n_pairs centres c_k ~ N(0, I_d), each giving the pair c_k ± (δ/2) e_k
(e_k a random unit vector), so the closest points are δ apart.  Targets:

* ``neg``: y = −x (Lipschitz: the residual varies little across a pair);
* ``split``: y = −x ± ``split`` e_k for the two members of pair k (points δ apart must be
  sent 2·split apart: the residual has an O(1) component along the pair's difference).

Recorded along training (metrics.csv, one row per ``log_every`` steps; columns target
(index into ``targets``), nu, delta, step, t, risk, velocity_sq, pl_ratio, lam_min,
lam_min_0, pl_bound, means over seeds):

    velocity_sq = ‖v‖²_{L²(μ)} = Σ_j m_j |v_j|²  (u-coordinates: the actual velocity),
    pl_ratio    = ‖v‖² / L   (the risk infimum is 0: interpolation),
                = (4/n) × the Rayleigh quotient of the tangent kernel along the residual,
    lam_min     = min_l λ_min(K_l),  K_l = (1/M) Ψ(X_l) Ψ(X_l)ᵀ  [n × n] at the hidden states
                  X_l of layer l;  lam_min_0 = λ_min(K_0) at the embedded data,
    pl_bound    = Σ_l h_l λ_min(K_l) ‖P_{l+1}‖²_F / (n² L) ≤ pl_ratio  (h_l = 1/L the layer
                  mass, P the adjoints: ‖v‖² = Σ_l h_l tr(P_{l+1}ᵀ K_l P_{l+1}) / n²).

Expected: for the Matérn-ν kernel λ_min(K_X) decays like δ^{min(2ν, 2)} as δ → 0 (the
pair's 2 × 2 block has smallest eigenvalue ½(1 − k_ν(δ√lift)), an upper bound on λ_min),
except ν = 1, where 1 − k_1 has a logarithm at leading order and λ_min ~ δ² log(1/δ).  The
PL *bound* follows λ_min, while the PL ratio itself (a Rayleigh quotient along the residual)
need not when the target is Lipschitz (``neg``) — the distinction of Robin–Scaman–Lelarge
(NeurIPS 2022) recalled in DESIGN.md.

Exponents of λ_min in δ (fit.json, and ``results.json["exponents"]``), three per ν, labelled:

* ``asymptotic`` — the exact kernel ½k_ν (``exact_lam_min``) on a grid of ``GRID_PER_DECADE``
  = 8 points per decade from δ = ``ASYMPTOTIC_FLOOR`` = 1e-4 up to the largest δ of the run;
  the exponent is the least-squares slope of log λ_min against log δ over the smallest decade
  [1e-4, 1e-3], and it counts as converged when the local slopes (successive grid points)
  inside that decade spread by less than ``SLOPE_TOL`` = 0.01.  For ν = 1 the fitted quantity
  is λ_min / log(2/z) (z = √2·δ√lift/ℓ, the Bessel argument at a pair's distance), so the
  exponent compares with 2; the uncorrected slope is kept as ``asymptotic_uncorrected``;
* ``pre_asymptotic`` — the exact kernel at the run's δ values (0.02 to 0.4 in full mode);
* ``trained_features`` — λ_min at initialisation of the M random features actually trained
  (the recorded ``lam_min_0``), at the run's δ values, with a bootstrap interval over seeds;
  beside it ``features_asymptotic``, the same features on the grid's smallest decade.

Measured (full mode: M = 256, n = 16; 44 s wall), asymptotic / pre-asymptotic / trained
features: ν = ½: 1.000 / 0.85 / 1.39;  ν = 1 (log-corrected): 1.993 / 1.44 / 1.92 (uncorrected
1.868, local slopes spread 0.035: not converged — the logarithm);  ν = 3/2: 1.999 / 1.71 /
1.86;  ν = ∞: 2.000 / 1.93 / 1.94.  Local slopes in [1e-4, 1e-3] spread by at most 0.004.
The M features are smooth, so on the grid's smallest decade they give δ² for every ν
(2.00); for ν = ½ the crossover sits near δ ~ 1/max_j |ω_j|, where hardly any of the M
Cauchy frequencies exceeds 1/δ — that is what steepens the trained-feature slope to 1.39.
float64 suffices: at δ = 1e-4 the eigensolver's λ_min agrees with 40-digit arithmetic to a
relative 6·10⁻⁸ (``exact_lam_min``).

results.json holds, per target and ν, λ_min(K_X) at initialisation (random features, and
``lam_min_0_exact_kernel`` for the M = ∞ kernel ½k_ν), the minimum over training of pl_ratio
and of pl_bound, the final risk, and fitted slopes in log δ (bootstrap over seeds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import io
from ..diagnostics import resnet_kernel_pl
from ..dynamics import ConditionalOTFlow
from ..errors import ConfigError
from ..models.resnet import ResNet, grid_measure, lift_matrices, random_fourier_units
from .config import ResNetConfig
from .plan import Plan
from ..plotting import save_figure
from .resnet_common import (fit_slope, job_phase, parse_floats, plt, read_results,
                            snapshots_arrays, write_outputs)

NAME = "resnet-rkhs"
VIEWS = ("depth", "params")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "targets=neg", "steps=10", "log_every=5", "save_every=5",
        "checkpoint_every=5")
FIT = "fit.json"
ASYMPTOTIC_FLOOR = 1e-4          # smallest δ of the exponent grid
GRID_PER_DECADE = 8
SLOPE_TOL = 0.01                 # the asymptotic window counts as converged when its local slopes spread by less

@dataclass(frozen=True)
class Config(ResNetConfig):
    """Keys of resnet-rkhs: M random features per layer, L layers, n_pairs separated pairs
    per δ in ``deltas``, Matérn smoothness ``nus``, the targets.  ``scale = "small"``
    presets M = 32, L = 2, n_pairs = 3, deltas 0.05,0.5, nus 0.5,inf (the defaults are the
    full run's)."""

    d: int = 2
    steps: int = 400
    dt: float = 0.1
    replicas: int = 2
    dtype: str = "float64"
    log_every: int = 20
    save_every: int = 200
    checkpoint_every: int = 100
    lift: int = 2
    M: int = 256
    L: int = 4
    n_pairs: int = 8
    deltas: str = "0.02,0.05,0.1,0.2,0.4"
    nus: str = "0.5,1,1.5,inf"
    targets: str = "neg,split"
    split: float = 0.5
    lengthscale: float = 1.0
    task_seed: int = 0

    _presets = {"scale": {"full": {}, "small": {"M": 32, "L": 2, "n_pairs": 3, "deltas": "0.05,0.5",
                                                 "nus": "0.5,inf"}}}

    def validate(self):
        """ResNetConfig's checks, then (``ConfigError``): targets among "neg", "split"; lift,
        M, L, n_pairs ≥ 1; task_seed ≥ 0; split, lengthscale finite and > 0; deltas numbers
        > 0, at least two, the largest ≥ 10·``ASYMPTOTIC_FLOOR``, and nus half-integers > 0
        or inf (:meth:`sizes`)."""
        super().validate()
        if not self.target_list or any(t not in ("neg", "split") for t in self.target_list):
            raise ConfigError(f"targets must list 'neg' and/or 'split', got {self.targets!r}")
        self.check_bounds(at_least_one=("lift", "M", "L", "n_pairs"),
                          nonnegative_ints=("task_seed",),
                          positive=("split", "lengthscale"))
        s = self.sizes()
        for nu in s["nus"]:
            if not (nu == math.inf or (nu > 0 and abs(2 * nu - round(2 * nu)) < 1e-12)):
                raise ConfigError(f"nus must be half-integers > 0 (0.5, 1, 1.5, …) or inf, got {nu!r}")
        if len(set(s["deltas"])) < 2 or max(s["deltas"]) < 10 * ASYMPTOTIC_FLOOR:
            raise ConfigError(f"deltas must hold at least two values, the largest >= {10 * ASYMPTOTIC_FLOOR:g} "
                              f"(the exponent grid starts at {ASYMPTOTIC_FLOOR:g}), got {self.deltas!r}")

    @property
    def target_list(self) -> list[str]:
        """The target names in ``targets`` (comma-separated, stripped, empty entries dropped)."""
        return [t.strip() for t in self.targets.split(",") if t.strip()]

    def sizes(self) -> dict:
        """{"M", "L", "n_pairs", "deltas", "nus"}, deltas and nus parsed to float lists
        (``parse_floats``; nus may hold inf)."""
        return {"M": self.M, "L": self.L, "n_pairs": self.n_pairs,
                "deltas": parse_floats("deltas", self.deltas),
                "nus": parse_floats("nus", self.nus, allow_inf=True)}

    def largest_job(self) -> tuple[int, int]:
        """(L, M): every job has the same size."""
        return self.L, self.M

    def unit_dim(self) -> int:
        """The linear unit's output u in D = lift·d and its random feature (w, b): 2D + 1."""
        return 2 * self.lift * self.d + 1


def separated_pairs(n_pairs: int, d: int, delta: float, *, generator: torch.Generator, split: float):
    """X [2·n_pairs, d] (pairs c_k ± (δ/2) e_k) and targets (neg: −X; split: −X ± split·e_k)."""
    c = torch.randn(n_pairs, d, generator=generator, dtype=torch.float64)
    e = torch.randn(n_pairs, d, generator=generator, dtype=torch.float64)
    e = e / e.norm(dim=-1, keepdim=True)
    X = torch.cat([c + 0.5 * delta * e, c - 0.5 * delta * e])
    off = torch.cat([split * e, -split * e])
    return X, {"neg": -X, "split": -X + off}


def _embedded(cfg, sz, delta):
    """The data of separation δ embedded in the hidden space, H = A X [2·n_pairs, lift·d]."""
    X, _ = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                           split=cfg.split)
    A, _ = lift_matrices(cfg.d, cfg.lift)
    return X @ A.T


def exact_lam_min(cfg, sz, nu, delta):
    """λ_min of the infinite-width kernel matrix ½ k_ν(|A x_k − A x_k'|) at the embedded data
    (``matern_kernel``: every half-integer ν and inf), in float64: distances as norms of
    differences (never the ‖a‖² + ‖b‖² − 2⟨a, b⟩ of ``torch.cdist``'s matrix-product mode,
    which cancels at small δ), then LAPACK's symmetric eigensolver.  At δ = 1e-4 this agrees
    with a 40-digit ``mpmath`` evaluation of the same matrix to a relative 6·10⁻⁸ (ν = ∞,
    λ_min ≈ 1.2·10⁻⁹; 3·10⁻¹³ for ν = ½; tests/test_resnet_rkhs.py)."""
    from ..models.resnet import matern_kernel

    H = _embedded(cfg, sz, delta)
    dist = (H[:, None] - H[None]).norm(dim=-1)                                 # (n, n)
    return float(torch.linalg.eigvalsh(0.5 * matern_kernel(dist, nu, cfg.lengthscale))[0])


def feature_lam_min(cfg, sz, nu, delta, D) -> np.ndarray:
    """λ_min((1/M) Ψ Ψᵀ) [replicas] at the embedded data for the M random features that
    ``_build`` draws (the trained ones, at initialisation), as the squared smallest singular
    value of Ψ/√M (no Gram product: its rounding would square the condition number)."""
    H = _embedded(cfg, sz, delta)
    feats = random_fourier_units(sz["M"], D, nu=nu, generator=torch.Generator().manual_seed(cfg.seed),
                                 lengthscale=cfg.lengthscale, replicas=cfg.replicas)    # (R, M, P)
    psi = torch.cos(H @ feats[..., D:2 * D].transpose(1, 2) + feats[:, None, :, 2 * D])  # (R, n, M)
    if psi.shape[1] > psi.shape[2]:
        return np.zeros(cfg.replicas)                                          # n > M: K is singular
    return (torch.linalg.svdvals(psi / math.sqrt(sz["M"]))[:, -1] ** 2).numpy()


def delta_grid(deltas) -> np.ndarray:
    """The δ grid of the exponent analysis: ``GRID_PER_DECADE`` points per decade from
    ``ASYMPTOTIC_FLOOR`` up to (at least) the largest δ of the run."""
    k = math.ceil(GRID_PER_DECADE * math.log10(max(deltas) / ASYMPTOTIC_FLOOR) - 1e-9)
    return ASYMPTOTIC_FLOOR * 10.0 ** (np.arange(k + 1) / GRID_PER_DECADE)


def log_factor(cfg, delta):
    """log(2/z), z = √2 · δ√lift / ℓ: the Matérn-1 argument at a pair's hidden distance δ√lift;
    ½(1 − k_1(δ√lift)) = (z²/4)(log(2/z) − γ + ½) + … is the ν = 1 pair block's λ_min."""
    z = math.sqrt(2) * np.asarray(delta) * math.sqrt(cfg.lift) / cfg.lengthscale
    return np.log(2 / z)


def local_slopes(grid, lam):
    """Local log-log slopes of lam(δ) between successive grid points, and where they sit
    (the geometric midpoints)."""
    grid, lam = np.asarray(grid, float), np.asarray(lam, float)
    return np.diff(np.log(lam)) / np.diff(np.log(grid)), np.sqrt(grid[1:] * grid[:-1])


def window_fit(grid, lam, lo, hi) -> dict:
    """Slope of log lam against log δ over the grid points in [lo, hi] (least squares), and
    the spread (max − min) of the local slopes inside it; ``converged`` when that spread is
    below ``SLOPE_TOL``."""
    grid, lam = np.asarray(grid, float), np.asarray(lam, float)
    sel = (grid >= lo * (1 - 1e-9)) & (grid <= hi * (1 + 1e-9))
    loc, mid = local_slopes(grid[sel], lam[sel])
    slope = float(np.polyfit(np.log(grid[sel]), np.log(lam[sel]), 1)[0])
    spread = float(loc.max() - loc.min()) if len(loc) else float("nan")
    return {"window": [float(grid[sel][0]), float(grid[sel][-1])], "points": int(sel.sum()), "slope": slope,
            "local_slope_min": float(loc.min()), "local_slope_max": float(loc.max()),
            "local_slope_spread": spread, "converged": bool(spread < SLOPE_TOL)}


def kernel_exponents(cfg, sz, nu, D=None) -> dict:
    """The exponent of λ_min(K_X) in δ for the exact kernel ½k_ν, asymptotic and
    pre-asymptotic, plus the same analysis for the M trained random features when ``D`` (the
    hidden dimension) is given.  See the module docstring for the rule."""
    grid = delta_grid(sz["deltas"])
    lam = np.array([exact_lam_min(cfg, sz, nu, d) for d in grid])
    run = np.array(sz["deltas"], float)
    run_lam = np.array([exact_lam_min(cfg, sz, nu, d) for d in run])
    corr = log_factor(cfg, grid) if nu == 1 else np.ones_like(grid)           # ν = 1: δ² log(1/δ)
    lo, hi = grid[0], grid[0] * 10
    loc, mid = local_slopes(grid, lam / corr)
    out = {"predicted": min(2 * nu, 2.0), "log_corrected": nu == 1, "grid": grid.tolist(),
           "lam_min_exact": lam.tolist(), "local_slope_at": mid.tolist(), "local_slope_exact": loc.tolist(),
           "asymptotic": window_fit(grid, lam / corr, lo, hi),
           "pre_asymptotic": window_fit(run, run_lam, run.min(), run.max())}
    if nu == 1:
        out["asymptotic_uncorrected"] = window_fit(grid, lam, lo, hi)
        out["local_slope_exact_uncorrected"] = local_slopes(grid, lam)[0].tolist()
    if D is not None:
        feat = np.stack([feature_lam_min(cfg, sz, nu, d, D) for d in grid], 1)  # (R, G)
        out["lam_min_features"] = feat.tolist()
        if (feat > 0).all():
            out["local_slope_features"] = local_slopes(grid, feat.mean(0))[0].tolist()
            out["features_asymptotic"] = window_fit(grid, feat.mean(0), lo, hi)
    return out


def plan(cfg: Config) -> Plan:
    """One job per (target, ν, δ), trained from Θ = 0; snapshots of the first job; results:
    λ_min, PL ratio and PL bound against δ with fitted slopes."""
    sz = cfg.sizes()
    dtype = getattr(torch, cfg.dtype)
    A, B = lift_matrices(cfg.d, cfg.lift)
    model = ResNet(A, B, activation="cos")
    jobs = [(ti, nu, delta) for ti in range(len(cfg.target_list)) for nu in sz["nus"] for delta in sz["deltas"]]

    def key(ti, nu, delta):
        return f"{cfg.target_list[ti]}/nu={nu:g}/delta={delta:g}"

    def phases(shared):
        return [job_phase(
            key(ti, nu, delta), {"target": ti, "nu": nu, "delta": delta},
            lambda nu=nu, delta=delta, target=cfg.target_list[ti]: _build(cfg, sz, model, nu, delta, target, dtype),
            log_every=cfg.log_every, measure=_measure,
            save_every=cfg.save_every if n == 0 else None,
            finish=lambda f, s, r, sn: {"layer": s.layer.numpy()})
            for n, (ti, nu, delta) in enumerate(jobs)]

    def results(ctx):
        res = {job: ctx.done[key(*job)] for job in jobs}
        first = res[jobs[0]]
        ti, nu, delta = jobs[0]
        X, Ys = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                                split=cfg.split)
        arrays = snapshots_arrays(first.snaps, first.result["layer"], model.param_names,
                                  {**model.arrays(), "data_X": X.numpy(),
                                   "data_Y": Ys[cfg.target_list[ti]].numpy()})
        analysis = _analyse(cfg, sz, res)
        io.write_json(ctx.out / FIT, analysis["exponents"])
        return write_outputs(ctx, arrays, analysis)

    return Plan(phases=phases, results=results, threads=cfg.threads,
                record={"model": model.to_dict(), "sizes": sz})


def _build(cfg, sz, model, nu, delta, target, dtype):
    X, Ys = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                            split=cfg.split)
    g = torch.Generator().manual_seed(cfg.seed)
    feats = random_fourier_units(sz["M"], model.D, nu=nu, generator=g, lengthscale=cfg.lengthscale,
                                 replicas=cfg.replicas)                        # (R, M, P), u = 0
    L = sz["L"]
    theta = feats[:, None].expand(cfg.replicas, L, sz["M"], model.P).to(dtype).contiguous()
    flow = ConditionalOTFlow(model, X.to(dtype), Ys[target].to(dtype), dt=cfg.dt, train="u", backend=cfg.backend)
    return flow, flow.init(grid_measure(theta, param_names=model.param_names), generator=g)


def _measure(flow, state):
    diag = resnet_kernel_pl(flow, state)
    row = {k: float(v.double().mean()) for k, v in diag.items()}
    row.update({f"risk_r{r}": float(x) for r, x in enumerate(diag["risk"])})
    row.update({f"pl_ratio_r{r}": float(x) for r, x in enumerate(diag["pl_ratio"])})
    row.update({f"lam_min_0_r{r}": float(x) for r, x in enumerate(diag["lam_min_0"])})
    row.update({f"pl_bound_r{r}": float(x) for r, x in enumerate(diag["pl_bound"])})
    return row


def _analyse(cfg, sz, res) -> dict:
    R = cfg.replicas
    D = cfg.d * cfg.lift
    out = {"experiment": NAME, "sizes": sz, "targets": {}}
    for ti, target in enumerate(cfg.target_list):
        per_nu = {}
        for nu in sz["nus"]:
            deltas = sz["deltas"]
            col = lambda name, rows: np.array([[r[f"{name}_r{i}"] for r in rows] for i in range(R)])  # noqa: E731
            lam0, plmin, pbmin, final = [], [], [], []
            for delta in deltas:
                rows = res[(ti, nu, delta)].rows
                lam0.append(col("lam_min_0", rows)[:, 0])
                plmin.append(col("pl_ratio", rows).min(-1))
                pbmin.append(col("pl_bound", rows).min(-1))
                final.append(col("risk", rows)[:, -1])
            lam0, plmin, pbmin, final = (np.stack(a, 1) for a in (lam0, plmin, pbmin, final))   # (R, K)
            exact = [exact_lam_min(cfg, sz, nu, delta) for delta in deltas]
            per_nu[f"{nu:g}"] = {
                "deltas": deltas, "lam_min_0": lam0.tolist(), "lam_min_0_exact_kernel": exact, "pl_ratio_min": plmin.tolist(),
                "pl_bound_min": pbmin.tolist(), "final_risk": final.tolist(),
                "lam_min_0_slope": fit_slope(deltas, lam0),
                "lam_min_0_exact_kernel_slope": fit_slope(deltas, np.array([exact]))["slope"],
                "pl_ratio_min_slope": fit_slope(deltas, plmin),
                "pl_bound_min_slope": fit_slope(deltas, pbmin),
                "predicted_lam_slope": min(2 * nu, 2.0)}
        out["targets"][target] = per_nu
    out["exponents"] = exponents(cfg, sz, out["targets"][cfg.target_list[0]], D)
    return out


def exponents(cfg, sz, per_nu, D) -> dict:
    """fit.json: per ν the three labelled exponents of λ_min(K_X) in δ (module docstring):
    ``asymptotic`` (exact kernel, the smallest decade of the grid, log-corrected for ν = 1),
    ``pre_asymptotic`` (exact kernel, the run's δ values), ``trained_features`` (the M features
    trained, at initialisation, the run's δ values; bootstrap over seeds), and the curves
    behind them (``kernel_exponents``)."""
    out = {"rule": (f"asymptotic: least-squares slope of log λ_min against log δ on the smallest decade "
                    f"[{ASYMPTOTIC_FLOOR:g}, {10 * ASYMPTOTIC_FLOOR:g}] of a grid with {GRID_PER_DECADE} points "
                    f"per decade, converged when its local slopes spread by < {SLOPE_TOL:g}; nu = 1: of "
                    f"λ_min / log(2/z) (λ_min ~ δ² log(1/δ)); pre_asymptotic and trained_features: "
                    f"the run's deltas"),
           "floor": ASYMPTOTIC_FLOOR, "grid_per_decade": GRID_PER_DECADE, "slope_tol": SLOPE_TOL, "nus": {}}
    for nu in sz["nus"]:
        r = per_nu[f"{nu:g}"]
        k = kernel_exponents(cfg, sz, nu, D)
        tr = r["lam_min_0_slope"]
        k["trained_features"] = {"window": [min(sz["deltas"]), max(sz["deltas"])], "M": sz["M"],
                                 "slope": tr["slope"], "boot_low": tr["boot_low"], "boot_high": tr["boot_high"],
                                 "t_low": tr["t_low"], "t_high": tr["t_high"]}
        k["summary"] = {"predicted": k["predicted"], "asymptotic": k["asymptotic"]["slope"],
                        "pre_asymptotic": k["pre_asymptotic"]["slope"], "trained_features": tr["slope"],
                        "asymptotic_error": abs(k["asymptotic"]["slope"] - k["predicted"]),
                        "asymptotic_converged": k["asymptotic"]["converged"]}
        out["nus"][f"{nu:g}"] = k
    return out


def plot(run_dir, coords=None) -> list[Path]:
    """figures/separation.png (the local slope d log λ_min / d log δ against δ, then per target
    λ_min(K_X0), min PL ratio and min PL bound against δ per ν) and figures/training.png
    (risk, ‖v‖², PL ratio and λ_min along training)."""
    from matplotlib.ticker import NullLocator

    run_dir = Path(run_dir)
    res = read_results(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    p = plt()
    targets = list(res["targets"])
    fig, axes = p.subplots(1, len(targets) + 1, figsize=(5 * (len(targets) + 1), 3.8), dpi=110, squeeze=False)
    _plot_local_slopes(axes[0, 0], res)
    for i, target in enumerate(targets):
        ax = axes[0, i + 1]
        for k, (nu, r) in enumerate(res["targets"][target].items()):
            x = np.array(r["deltas"])
            ax.loglog(x, r["lam_min_0_exact_kernel"], "x", color=f"C{k}", ms=6)
            for name, style in (("lam_min_0", "o-"), ("pl_ratio_min", "s--"), ("pl_bound_min", "^:")):
                y = np.array(r[name]).mean(0)
                lab = f"ν={nu}: {name}" + (f" (slope {r[name + '_slope']['slope']:.2f})" if name != "pl_bound_min" else "")
                ax.loglog(x, y, style, color=f"C{k}", label=lab, ms=4)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("separation δ   (x: λ_min of the exact kernel)")
        ax.set_title(f"target {target}")
        ax.legend(frameon=False, fontsize=6)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths = [run_dir / io.FIGURES / "separation.png"]
    save_figure(fig, paths[0])
    fig, axes = p.subplots(len(targets), 4, figsize=(14, 3.2 * len(targets)), dpi=100, squeeze=False)
    dmin, dmax = float(np.min(m["delta"])), float(np.max(m["delta"]))
    for i, target in enumerate(targets):
        for j, name in enumerate(("risk", "velocity_sq", "pl_ratio", "lam_min")):
            ax = axes[i, j]
            for k, nu in enumerate(sorted(set(m["nu"].tolist()))):
                for delta, ls in ((dmin, "-"), (dmax, "--")):
                    sel = (m["target"] == i) & (m["nu"] == nu) & (m["delta"] == delta)
                    ax.plot(m["t"][sel], m[name][sel], ls, color=f"C{k}", label=f"ν={nu:g}, δ={delta:g}")
            ax.set_yscale("log")
            ax.set_xlabel("t")
            ax.set_title(f"{target}: {name}")
            ax.grid(alpha=0.3)
        axes[i, 0].legend(frameon=False, fontsize=6)
    fig.tight_layout()
    paths.append(run_dir / io.FIGURES / "training.png")
    save_figure(fig, paths[1])
    return paths


def _plot_local_slopes(ax, res):
    """The local slope of λ_min(δ) against δ: exact kernel (solid; ν = 1 log-corrected, its raw
    slope dashed), the trained M features at initialisation (dotted), the prediction
    min(2ν, 2) (thin), the asymptotic window (grey) and the run's δ range (hatched)."""
    ex = res.get("exponents")
    if not ex:
        return
    for k, (nu, e) in enumerate(ex["nus"].items()):
        x = np.array(e["local_slope_at"])
        s = e["summary"]
        ax.semilogx(x, e["local_slope_exact"], "-", color=f"C{k}",
                    label=f"ν={nu}{' (÷log)' if e['log_corrected'] else ''}: asympt. {s['asymptotic']:.3f}, "
                          f"pre {s['pre_asymptotic']:.2f}, M feats {s['trained_features']:.2f}")
        if e["log_corrected"]:
            ax.semilogx(x, e["local_slope_exact_uncorrected"], "--", color=f"C{k}", lw=0.9,
                        label=f"ν={nu}: raw (no log correction)")
        if "local_slope_features" in e:
            ax.semilogx(x, e["local_slope_features"], ":", color=f"C{k}", lw=0.8)
        ax.axhline(e["predicted"], color=f"C{k}", lw=0.6, alpha=0.6)
    lo, hi = ex["nus"][next(iter(ex["nus"]))]["asymptotic"]["window"]
    ax.axvspan(lo, hi, color="0.85", zorder=0, label="asymptotic window")
    lo, hi = ex["nus"][next(iter(ex["nus"]))]["pre_asymptotic"]["window"]
    ax.axvspan(lo, hi, fill=False, hatch="//", ec="0.6", lw=0, zorder=0, label="run's δ (pre-asymptotic)")
    ax.set_xlabel("separation δ   (solid: exact kernel, dotted: M features)")
    ax.set_ylabel("local slope d log λ_min / d log δ")
    ax.set_ylim(-0.1, 2.6)
    ax.set_title("λ_min(K_X) ~ δ^p: local exponent")
    ax.legend(frameon=False, fontsize=6)
    ax.grid(alpha=0.3, which="both")


FIGURES = plot
