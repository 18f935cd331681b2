"""λ_min of kernel matrices at separated data, and its exponent in the separation δ.

The analysis of resnet-rkhs (its module docstring is the documentation): for data of
separation δ (``models.resnet_tasks.separated_pairs``, lifted by A to the hidden dimension
D = lift·d), λ_min of the kernel matrix of the exact kernel ½k_ν (:func:`exact_lam_min`) and
of the M random Fourier features trained (:func:`feature_lam_min`); their exponent in δ on a
grid of ``GRID_PER_DECADE`` points per decade from ``ASYMPTOTIC_FLOOR``
(:func:`delta_grid`, :func:`local_slopes`, :func:`window_fit`, :func:`kernel_exponents`);
the per-ν table of a run (:func:`separation_fits`) and the three labelled exponents that go
to ``FIT`` = fit.json (:func:`lam_min_exponents`).

``cfg`` below is any object with the keys of resnet-rkhs's Config that the data depend on:
d, lift, task_seed, split, lengthscale (and seed, replicas for the random features); ``sz``
is its ``sizes()``: {"M", "L", "n_pairs", "deltas": [δ …], "nus": [ν …]}.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..models.resnet import lift_matrices, matern_kernel, random_fourier_units
from ..models.resnet_tasks import separated_pairs
from .fits import fit_slope

FIT = "fit.json"
ASYMPTOTIC_FLOOR = 1e-4          # smallest δ of the exponent grid
GRID_PER_DECADE = 8
SLOPE_TOL = 0.01                 # the asymptotic window counts as converged when its local slopes spread by less


def _embedded(cfg, sz, delta):
    """The data of separation δ embedded in the hidden space, H = A X [2·n_pairs, lift·d]."""
    X, _ = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                           split=cfg.split)
    A, _ = lift_matrices(cfg.d, cfg.lift)
    return X @ A.T


def exact_lam_min(cfg, sz, nu, delta) -> float:
    """λ_min of the infinite-width kernel matrix ½ k_ν(|A x_k − A x_k'|) [n × n] at the
    embedded data of separation δ (``matern_kernel``: every half-integer ν and inf), in
    float64: distances as norms of differences (never the ‖a‖² + ‖b‖² − 2⟨a, b⟩ of
    ``torch.cdist``'s matrix-product mode, which cancels at small δ), then LAPACK's symmetric
    eigensolver.  At δ = 1e-4 this agrees with a 40-digit ``mpmath`` evaluation of the same
    matrix to a relative 6·10⁻⁸ (ν = ∞, λ_min ≈ 1.2·10⁻⁹; 3·10⁻¹³ for ν = ½;
    tests/test_resnet_rkhs.py).  Returns a float."""
    H = _embedded(cfg, sz, delta)
    dist = (H[:, None] - H[None]).norm(dim=-1)                                 # (n, n)
    return float(torch.linalg.eigvalsh(0.5 * matern_kernel(dist, nu, cfg.lengthscale))[0])


def feature_lam_min(cfg, sz, nu, delta, D) -> np.ndarray:
    """λ_min(K) with K = (1/M) Ψ Ψᵀ [n × n], Ψ_kj = cos(⟨ω_j, A x_k⟩ + φ_j), at the embedded
    data of separation δ, for the M random features resnet-rkhs trains (at initialisation:
    ``random_fourier_units`` from ``torch.Generator().manual_seed(cfg.seed)``, ``replicas``
    sets, hidden dimension ``D``), as the squared smallest singular value of Ψ/√M (no Gram
    product: its rounding would square the condition number); zeros when n > M (K is
    singular).  Returns [replicas]."""
    H = _embedded(cfg, sz, delta)
    feats = random_fourier_units(sz["M"], D, nu=nu, generator=torch.Generator().manual_seed(cfg.seed),
                                 lengthscale=cfg.lengthscale, replicas=cfg.replicas)    # (R, M, P)
    psi = torch.cos(H @ feats[..., D:2 * D].transpose(1, 2) + feats[:, None, :, 2 * D])  # (R, n, M)
    if psi.shape[1] > psi.shape[2]:
        return np.zeros(cfg.replicas)                                          # n > M: K is singular
    return (torch.linalg.svdvals(psi / math.sqrt(sz["M"]))[:, -1] ** 2).numpy()


def delta_grid(deltas) -> np.ndarray:
    """The δ grid of the exponent analysis: ``ASYMPTOTIC_FLOOR`` · 10^{k / GRID_PER_DECADE},
    k = 0 … ⌈GRID_PER_DECADE · log10(max δ / ASYMPTOTIC_FLOOR)⌉, so up to (at least) the
    largest of ``deltas``.  Returns [G]."""
    k = math.ceil(GRID_PER_DECADE * math.log10(max(deltas) / ASYMPTOTIC_FLOOR) - 1e-9)
    return ASYMPTOTIC_FLOOR * 10.0 ** (np.arange(k + 1) / GRID_PER_DECADE)


def log_factor(cfg, delta):
    """log(2/z), z = √2 · δ√lift / ℓ: the Matérn-1 argument at a pair's hidden distance δ√lift;
    ½(1 − k_1(δ√lift)) = (z²/4)(log(2/z) − γ + ½) + … is the ν = 1 pair block's λ_min.
    ``delta`` a number or an array; returns the same shape."""
    z = math.sqrt(2) * np.asarray(delta) * math.sqrt(cfg.lift) / cfg.lengthscale
    return np.log(2 / z)


def local_slopes(grid, lam):
    """Local log-log slopes (log lam_{i+1} − log lam_i) / (log δ_{i+1} − log δ_i) of lam [G]
    between successive grid points δ [G], and where they sit (the geometric midpoints
    √(δ_i δ_{i+1})).  Returns (slopes [G−1], midpoints [G−1])."""
    grid, lam = np.asarray(grid, float), np.asarray(lam, float)
    return np.diff(np.log(lam)) / np.diff(np.log(grid)), np.sqrt(grid[1:] * grid[:-1])


def window_fit(grid, lam, lo, hi) -> dict:
    """Slope of log lam against log δ over the grid points in [lo, hi] (least squares,
    ``numpy.polyfit``), and the spread (max − min) of the local slopes inside it; ``converged``
    when that spread is below ``SLOPE_TOL``.  Returns {"window": [first δ, last δ], "points",
    "slope", "local_slope_min", "local_slope_max", "local_slope_spread", "converged"}."""
    grid, lam = np.asarray(grid, float), np.asarray(lam, float)
    sel = (grid >= lo * (1 - 1e-9)) & (grid <= hi * (1 + 1e-9))
    loc, mid = local_slopes(grid[sel], lam[sel])
    slope = float(np.polyfit(np.log(grid[sel]), np.log(lam[sel]), 1)[0])
    spread = float(loc.max() - loc.min()) if len(loc) else float("nan")
    return {"window": [float(grid[sel][0]), float(grid[sel][-1])], "points": int(sel.sum()), "slope": slope,
            "local_slope_min": float(loc.min()), "local_slope_max": float(loc.max()),
            "local_slope_spread": spread, "converged": bool(spread < SLOPE_TOL)}


def kernel_exponents(cfg, sz, nu, D=None) -> dict:
    """The exponent of λ_min(K_X) in δ for the exact kernel ½k_ν: ``asymptotic`` (a
    :func:`window_fit` on the smallest decade [ASYMPTOTIC_FLOOR, 10·ASYMPTOTIC_FLOOR] of
    :func:`delta_grid`; for ν = 1 of λ_min / :func:`log_factor`, since λ_min ~ δ² log(1/δ),
    the raw fit kept as ``asymptotic_uncorrected``) and ``pre_asymptotic`` (over the run's
    δ values), with the curves behind them (``grid``, ``lam_min_exact``, ``local_slope_at``,
    ``local_slope_exact``) and ``predicted`` = min(2ν, 2).  When the hidden dimension ``D``
    is given, also λ_min of the M trained features on the grid (``lam_min_features`` [R, G])
    and, when all are > 0, their local slopes and ``features_asymptotic``.  Returns that
    dict."""
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


def separation_fits(cfg, sz, nu, rows) -> dict:
    """The per-ν table of a resnet-rkhs run: ``rows`` [for δ in sz["deltas"]] are the
    metrics rows of the job (target, ν, δ), with per-seed columns lam_min_0_r<i>, pl_ratio_r<i>,
    pl_bound_r<i>, risk_r<i> (i < cfg.replicas).  Per seed and δ ([R, K] lists): λ_min(K_X0)
    at initialisation (the first row), the minimum over training of pl_ratio and pl_bound,
    the final risk; λ_min of the exact kernel at each δ (:func:`exact_lam_min`); the fitted
    slopes in log δ (:func:`fit_slope`, bootstrap over seeds) and ``predicted_lam_slope`` =
    min(2ν, 2).  Returns that dict."""
    R = cfg.replicas
    deltas = sz["deltas"]
    col = lambda name, rows: np.array([[r[f"{name}_r{i}"] for r in rows] for i in range(R)])  # noqa: E731
    lam0, plmin, pbmin, final = [], [], [], []
    for job_rows in rows:
        lam0.append(col("lam_min_0", job_rows)[:, 0])
        plmin.append(col("pl_ratio", job_rows).min(-1))
        pbmin.append(col("pl_bound", job_rows).min(-1))
        final.append(col("risk", job_rows)[:, -1])
    lam0, plmin, pbmin, final = (np.stack(a, 1) for a in (lam0, plmin, pbmin, final))   # (R, K)
    exact = [exact_lam_min(cfg, sz, nu, delta) for delta in deltas]
    return {
        "deltas": deltas, "lam_min_0": lam0.tolist(), "lam_min_0_exact_kernel": exact, "pl_ratio_min": plmin.tolist(),
        "pl_bound_min": pbmin.tolist(), "final_risk": final.tolist(),
        "lam_min_0_slope": fit_slope(deltas, lam0),
        "lam_min_0_exact_kernel_slope": fit_slope(deltas, np.array([exact]))["slope"],
        "pl_ratio_min_slope": fit_slope(deltas, plmin),
        "pl_bound_min_slope": fit_slope(deltas, pbmin),
        "predicted_lam_slope": min(2 * nu, 2.0)}


def lam_min_exponents(cfg, sz, per_nu, D) -> dict:
    """fit.json: per ν the three labelled exponents of λ_min(K_X) in δ: ``asymptotic`` (exact
    kernel, the smallest decade of the grid, log-corrected for ν = 1), ``pre_asymptotic``
    (exact kernel, the run's δ values), ``trained_features`` (the M features trained, at
    initialisation, the run's δ values: the ``lam_min_0_slope`` of ``per_nu[f"{ν:g}"]``, a
    :func:`separation_fits` table, with its bootstrap and t intervals), a ``summary`` of them
    with ``asymptotic_error`` = |asymptotic − min(2ν, 2)|, and the curves behind them
    (:func:`kernel_exponents` with hidden dimension ``D``); plus the ``rule`` in words and
    its constants.  Returns that dict."""
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


__all__ = ["ASYMPTOTIC_FLOOR", "FIT", "GRID_PER_DECADE", "SLOPE_TOL", "delta_grid", "exact_lam_min",
           "feature_lam_min", "kernel_exponents", "lam_min_exponents", "local_slopes", "log_factor",
           "separation_fits", "window_fit"]
