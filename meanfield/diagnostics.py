"""Diagnostics along trajectories: risk, velocity norm, PL ratio, kernel eigenvalues, transport distances.

Shapes: θ [B, N, D] or [N, D]; weights [N] / [B, N] / None (uniform).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from .errors import ConfigError
from .interact import evaluate
from .models.tasks import Task, as_batched, as_weights


class RiskEstimate(NamedTuple):
    """What :func:`risk` returns: a named pair (value, se) — ``value`` R(ρ_N) per replica [B],
    ``se`` its standard error [B], or None when the value is exact.  Unpacks as
    ``value, se = risk(...)``; ``risk(...)[0]`` is the value."""

    value: torch.Tensor
    se: Optional[torch.Tensor]


def risk(task: Task, theta, weights=None, *, backend="auto", n_mc: int | None = None,
         generator: torch.Generator | None = None) -> RiskEstimate:
    """The pair (value, se): R(ρ_N) per replica [B] and its standard error [B] (None when
    exact), as a :class:`RiskEstimate` (``.value``, ``.se``; ``[0]`` is the value).

    Exact for closed-form tasks and finite datasets; otherwise a Monte Carlo estimate
    (1/n) Σ_k ℓ(y_k, f(x_k)) (squared loss: (y_k − f(x_k))²) over ``n_mc`` fresh samples,
    with standard error sd/√n.
    """
    pot = evaluate(task, theta, weights, backend=backend, n_mc=n_mc, generator=generator)
    return RiskEstimate(pot.risk, pot.risk_se)


def margin(task, theta, weights=None) -> torch.Tensor:
    """The normalised margin min_k y_k f(x_k; ρ_N) / ∫|θ|^L dρ_N per replica [B] of a
    finite dataset with labels ±1 and an L-homogeneous unit (L = 2: ReLU with output weight,
    Chizat–Bach 2020); see :meth:`meanfield.FiniteDataset.margin`."""
    if not hasattr(task, "margin"):
        raise ConfigError(f"the margin is defined on a finite dataset, not on task {task.name!r}")
    return task.margin(theta, weights)


def velocity_sq_norm(velocity: torch.Tensor, weights=None) -> torch.Tensor:
    """‖v‖²_{L²(ρ_N)} = Σ_i m_i |v_i|² for v [B, N, D] → [B]."""
    v = as_batched(velocity)
    m = as_weights(weights, v)
    return ((v * v).sum(-1) * m).sum(-1)


def pl_ratio(velocity: torch.Tensor, risk_value, risk_inf: float = 0.0, weights=None) -> torch.Tensor:
    """Empirical Polyak–Łojasiewicz ratio ‖v‖²_{L²(ρ)} / (R(ρ) − R_inf), [B].

    With DESIGN's velocity v = −2ξ∇Ψ and δR/δρ = 2Ψ, along the noiseless flow
    dR/dt = ∫⟨∇(2Ψ), v⟩ dρ = −‖v‖²_{L²(ρ)}/ξ; a ratio bounded below by μ > 0 on [0, t]
    therefore gives R(ρ_t) − R_inf ≤ e^{−μt/ξ} (R(ρ_0) − R_inf) (Polyak 1963, Łojasiewicz;
    for mean-field networks Chizat 2022)."""
    gap = torch.as_tensor(risk_value, dtype=velocity.dtype) - risk_inf
    return velocity_sq_norm(velocity, weights) / gap



class KernelSpectrum(NamedTuple):
    """Eigenvalues of a tangent kernel on n data points, as the operator (1/n) K: ``lam_min``
    [B], ``top`` [B, k] (largest first)."""

    lam_min: torch.Tensor
    top: torch.Tensor


def kernel_spectrum(K: torch.Tensor, k: int = 3) -> KernelSpectrum:
    """The smallest and the ``k`` largest eigenvalues of (1/n) K for a Gram matrix K [n, n]
    or [B, n, n] (``models.ntk.tangent_kernel``), in float64.  (1/n) K is the operator of
    the network's motion on the data, ∂_t f = −2 (1/n) K r (docs/design.md §1): λ_min > 0
    makes every residual decay.  Results are batched: [B] and [B, k]."""
    K = torch.as_tensor(K).double()
    K = K if K.dim() == 3 else K.unsqueeze(0)
    ev = torch.linalg.eigvalsh(0.5 * (K + K.transpose(-1, -2)) / K.shape[-1])   # ascending
    k = max(1, min(int(k), ev.shape[-1]))
    return KernelSpectrum(ev[..., 0], ev.flip(-1)[..., :k])


def kernel_rayleigh(K: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The Rayleigh quotient q = ⟨r, K r⟩ / (n ‖r‖²) of (1/n) K along the residual r [n] or
    [B, n] (K [n, n] or [B, n, n]), in float64, per replica [B].

    For the squared loss on n points (R = ‖r‖²/n, r = f − y) the flow of docs/design.md §1
    gives dR/dt = −4 ξ q R, hence R(t) ≤ R(0) exp(−4 ∫_0^t ξ q) and the empirical PL ratio
    ‖v‖²/R of the particles is 4 q (α-free in the scaled model's normalisation).  q can stay
    bounded below where λ_min(K) = 0, e.g. with fewer parameters than data points
    (Robin–Scaman–Lelarge 2022)."""
    K = torch.as_tensor(K).double()
    r = torch.as_tensor(r).double()
    K = K if K.dim() == 3 else K.unsqueeze(0)
    r = r if r.dim() == 2 else r.unsqueeze(0)
    Kr = (K @ r.unsqueeze(-1)).squeeze(-1)
    return (r * Kr).sum(-1) / (K.shape[-1] * (r * r).sum(-1))


def kernel_change(K: torch.Tensor, K0: torch.Tensor) -> torch.Tensor:
    """‖K − K_0‖_F / ‖K_0‖_F per replica [B] (K, K0 [n, n'] or [B, n, n']), in float64: how far
    the tangent kernel has moved from its initial value (0 in the lazy limit)."""
    K, K0 = torch.as_tensor(K).double(), torch.as_tensor(K0).double()
    K, K0 = (x if x.dim() == 3 else x.unsqueeze(0) for x in (K, K0))
    return torch.linalg.matrix_norm(K - K0) / torch.linalg.matrix_norm(K0)


KERNEL_POINTS = 128      # training points on which a run's rows measure the tangent kernel


def kernel_row(task, theta, weights=None, K0=None, *, points: int = KERNEL_POINTS) -> dict:
    """Tangent-kernel columns of a metrics row of a run on a finite dataset, on its first
    ``points`` training points (K [B, n, n] of ``models.ntk.tangent_kernel``, n ≤ points):
    ``ntk_lam_min`` and ``ntk_lam_max`` of (1/n)K, ``ntk_rayleigh`` = the Rayleigh quotient
    of (1/n)K along r = ½∂_fℓ(y, f) (f − y for the squared loss) on those points, and, given
    the initial kernel ``K0``, ``ntk_change`` = ‖K − K0‖_F/‖K0‖_F; each a float64 array [B]
    (seed values).  Scaled tasks use f_α (the kernel itself does not depend on α)."""
    from .models.ntk import tangent_kernel
    from .models.task_base import loss_terms

    theta = as_batched(theta)
    x, y = task.full(theta.dtype, theta.device)
    x, y = x[:, :points], y[:, :points]
    with torch.no_grad():
        K = tangent_kernel(task.unit, theta, x[0], weights=weights)
        if hasattr(task, "scaled_outputs"):
            f = task.scaled_outputs(x, theta, weights)
        else:
            f = task.unit.network(x, theta, as_weights(weights, theta))
        r, _ = loss_terms(task.loss, f, y)
    spec = kernel_spectrum(K, k=1)
    row = {"ntk_lam_min": spec.lam_min.numpy(), "ntk_lam_max": spec.top[:, 0].numpy(),
           "ntk_rayleigh": kernel_rayleigh(K, r).numpy()}
    if K0 is not None:
        row["ntk_change"] = kernel_change(K, K0).numpy()
    return row


def initial_kernel(task, theta, weights=None, *, points: int = KERNEL_POINTS) -> torch.Tensor:
    """K_0 [B, n, n] on the first ``points`` training points (the reference of
    :func:`kernel_row`'s ``ntk_change``)."""
    from .models.ntk import tangent_kernel

    theta = as_batched(theta)
    x, _ = task.full(theta.dtype, theta.device)
    with torch.no_grad():
        return tangent_kernel(task.unit, theta, x[0, :points], weights=weights)


def resnet_kernel_pl(flow, state) -> dict:
    """PL ratio of a ResNet's conditional-OT flow and its kernel lower bound, per replica [B].

    ``flow`` a ``dynamics.ConditionalOTFlow`` on a finite dataset (X [n, d_in], Y [n, d_out]),
    ``state`` its ``ResNetState`` (θ [B, L·M, P]).  With hidden states X_l [n, D] of layer l,
    adjoints P_l, features Ψ(X_l) [n, M] (the units' activations σ(⟨w, x⟩ + b)) and the
    layer Gram matrix K_l = (1/M) Ψ(X_l) Ψ(X_l)ᵀ [n, n], returns

        risk        = L(μ) (no ½),      velocity_sq = ‖v‖²_{L²(μ)},  pl_ratio = ‖v‖² / L,
        lam_min     = min_l λ_min(K_l), lam_min_0 = λ_min(K_0) at the embedded data,
        pl_bound    = Σ_l h_l λ_min(K_l) ‖P_{l+1}‖²_F / (n² L) ≤ pl_ratio

    (h_l the mass of layer l, P the adjoints).  The output weights u carry the part
    Σ_l h_l tr(P_{l+1}ᵀ K_l P_{l+1}) / n² of ‖v‖² — all of it in an RKHS ResNet, where the
    features are frozen and only u moves — so λ_min(K_l) > 0 along training bounds the PL
    ratio below (Barboni–Peyré–Vialard, NeurIPS 2022).  Used by the ``resnet-rkhs`` experiment."""
    model = flow.model
    layers = flow.layers(state)
    m = state.masses
    X, Y = flow.X.to(state.theta.dtype), flow.Y.to(state.theta.dtype)
    out, loss, xs, ps = model.adjoint(state.theta, state.weights, layers, X, Y)
    v = flow.velocity(state)
    v2 = ((v * v).sum(-1) * m).sum(-1)                                        # (B,)
    n = X.shape[-2]
    lam, bound = [], torch.zeros_like(loss)
    for l in range(layers.L):
        th = layers.take(state.theta, l)                                     # (B, M, P)
        psi = model.unit.activation(model.unit.preactivation(xs[l], th))     # (B, n, M)
        K = psi @ psi.transpose(-1, -2) / th.shape[-2]                       # (B, n, n)
        ev = torch.linalg.eigvalsh(K.double())[..., 0]                       # (B,)
        lam.append(ev)
        h = layers.take(m, l).sum(-1)                                        # (B or 1,)
        bound = bound + h * ev * (ps[l + 1] ** 2).sum((-1, -2)) / n ** 2
    lam = torch.stack(lam, -1)                                               # (B, L)
    return {"risk": loss, "velocity_sq": v2, "pl_ratio": v2 / loss, "lam_min": lam.min(-1).values,
            "lam_min_0": lam[:, 0], "pl_bound": bound / loss}

def _np1(x):
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


def _prob(weights, n, name):
    """Weights [n] normalised to sum 1 (uniform when None); ConfigError when invalid."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = _np1(weights).ravel()
    if w.shape != (n,):
        raise ConfigError(f"{name} has {w.size} entries for {n} points")
    if not np.all(np.isfinite(w)) or (w < 0).any() or not w.sum() > 0:
        raise ConfigError(f"{name} must be finite, non-negative and not all zero")
    return w / w.sum()


def w1_1d(u, v, u_weights=None, v_weights=None) -> float:
    """W1 between two 1-D weighted samples u [n], v [m] (POT's ``wasserstein_1d``).
    Weights (e.g. counts) are normalised to probabilities."""
    import ot

    u, v = _np1(u).ravel(), _np1(v).ravel()
    return float(ot.wasserstein_1d(u, v, _prob(u_weights, len(u), "u_weights"),
                                   _prob(v_weights, len(v), "v_weights"), p=1))


def w2(x, y, x_weights=None, y_weights=None, *, method: str = "auto", n_projections: int = 200,
       seed: int = 0) -> float:
    """W2 between two particle measures x [n, D], y [m, D] (weights default uniform,
    normalised to probabilities).

    ``method="exact"``: POT's network simplex (``ot.emd2``) on squared Euclidean costs,
    O(n²) memory; ``"sliced"``: sliced W2 with ``n_projections`` random directions
    (a lower bound, cheap for large n); ``"auto"``: exact up to n·m = 2.5·10⁷.
    """
    import ot

    x, y = _np1(x), _np1(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ConfigError(f"w2 needs [n, D] and [m, D] arrays, got {x.shape} and {y.shape}")
    a = _prob(x_weights, len(x), "x_weights")
    b = _prob(y_weights, len(y), "y_weights")
    if method == "auto":
        method = "exact" if len(x) * len(y) <= 25_000_000 else "sliced"
    if method == "exact":
        M = ot.dist(x, y, metric="sqeuclidean")
        return float(np.sqrt(max(ot.emd2(a, b, M, numItermax=10_000_000), 0.0)))
    if method == "sliced":
        return float(ot.sliced_wasserstein_distance(x, y, a, b, n_projections=n_projections,
                                                    p=2, seed=seed))
    raise ConfigError(f"unknown W2 method {method!r}; choose 'auto', 'exact' or 'sliced'")


def knn_entropy(theta, *, k: int = 1, period=None):
    """Kozachenko–Leonenko k-nearest-neighbour estimate of the differential entropy
    H(ρ) = −∫ ρ log ρ from samples θ [N, d] (→ float) or [B, N, d] (→ array [B], one
    estimate per replica):

        Ĥ = ψ(N) − ψ(k) + log V_d + (d/N) Σ_i log ε_i,     V_d = π^{d/2} / Γ(1 + d/2),

    ε_i the distance from θ_i to its k-th nearest neighbour, ψ the digamma function
    (Kozachenko & Leonenko 1987; Chizat 2022 uses k = 1 on the torus).  With ``period``
    (a number or [d] periods) the samples are taken modulo the period and distances are those
    of the flat torus.  Nearest neighbours by ``scipy.spatial.cKDTree`` (``boxsize`` on the
    torus).  ConfigError for fewer than k + 1 samples or coincident samples (ε_i = 0).
    """
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    x = _np1(theta)
    k = int(k)
    if k < 1:
        raise ConfigError(f"knn_entropy needs k >= 1, got {k}")
    if x.ndim not in (2, 3) or x.shape[-2] <= k:
        raise ConfigError(f"knn_entropy needs samples of shape [N, d] or [B, N, d] with N > k={k}, "
                          f"got {list(x.shape)}")
    single = x.ndim == 2
    xs = x[None] if single else x
    N, d = xs.shape[-2:]
    L = None
    if period is not None:
        L = np.broadcast_to(np.asarray(period, np.float64), (d,)).copy()
        if not (np.all(np.isfinite(L)) and np.all(L > 0)):
            raise ConfigError(f"period must be finite and > 0, got {period!r}")
    log_vd = 0.5 * d * np.log(np.pi) - gammaln(1 + 0.5 * d)
    out = np.empty(len(xs))
    for b, pts in enumerate(xs):
        if L is not None:
            pts = np.mod(pts, L)
            pts[pts >= L] = 0.0                   # mod can round up to the period itself
            tree = cKDTree(pts, boxsize=L)
        else:
            tree = cKDTree(pts)
        eps = tree.query(pts, k=k + 1)[0][:, k]
        if not (eps > 0).all():
            raise ConfigError("knn_entropy: coincident samples (a zero nearest-neighbour distance)")
        out[b] = digamma(N) - digamma(k) + log_vd + d * np.log(eps).mean()
    return float(out[0]) if single else out


def loglog_rate(x, samples, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Rate of a quantity in x (e.g. an error against N): the least-squares slope of
    log(mean of each sample) against log x, and its 95 % percentile bootstrap interval
    (``scipy.stats.bootstrap``; each x's sample — e.g. its seeds — resampled independently).

    x [K] positive; ``samples``: K arrays of positive values (one per x, any lengths ≥ 2).
    Returns {"slope", "intercept", "ci95": [lo, hi], "half_width"}.  Raises ConfigError for
    non-positive or non-finite values, which have no logarithm."""
    import inspect

    from scipy.stats import bootstrap, linregress

    logx = np.log(np.asarray(x, dtype=np.float64))
    samples = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if len(samples) != len(logx) or len(logx) < 3:
        raise ConfigError(f"loglog_rate needs one sample per x and at least 3 x values, "
                          f"got {len(samples)} samples for {len(logx)} x")
    if any(s.size < 2 or (s <= 0).any() or not np.isfinite(s).all() for s in samples):
        raise ConfigError("loglog_rate: every sample needs >= 2 finite positive values")
    xc = logx - logx.mean()

    def stat(*s, axis=-1):
        ly = np.log(np.stack([v.mean(axis=axis) for v in s], -1))          # (..., K)
        return ((ly - ly.mean(-1, keepdims=True)) @ xc) / (xc @ xc)

    fit = linregress(logx, np.log([s.mean() for s in samples]))
    rng = np.random.default_rng(seed)
    kw = {"rng": rng} if "rng" in inspect.signature(bootstrap).parameters else {"random_state": rng}
    res = bootstrap(samples, stat, n_resamples=n_boot, method="percentile", vectorized=True, **kw)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "ci95": [lo, hi],
            "half_width": (hi - lo) / 2}


def rate_of(x, samples, *, statistic: str = "mean", n_boot: int = 2000, seed: int = 0) -> dict:
    """Rate in x of a statistic of samples: the least-squares slope of log S(sample_k) against
    log x_k, with S the sample mean (``statistic="mean"``: a bias, whose single samples may
    have either sign) or the sample standard deviation (``"sd"``: a fluctuation), and a 95 %
    percentile bootstrap interval, each x's sample resampled independently (numpy, ``n_boot``
    resamples; a resample whose statistic is ≤ 0 at some x has no logarithm and is left out —
    ``valid`` says which fraction was kept).

    x [K] positive; ``samples``: K arrays (≥ 2 values each).  Returns {"slope", "intercept",
    "ci95", "half_width", "valid", "statistic"}; ConfigError when a statistic of the data
    itself is ≤ 0 or non-finite."""
    if statistic not in ("mean", "sd"):
        raise ConfigError(f"statistic must be 'mean' or 'sd', got {statistic!r}")
    logx = np.log(np.asarray(x, dtype=np.float64))
    samples = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if len(samples) != len(logx) or len(logx) < 3 or any(s.size < 2 for s in samples):
        raise ConfigError("rate_of needs at least 3 x values with >= 2 samples each")

    def stat(v, axis=-1):
        return v.mean(axis) if statistic == "mean" else v.std(axis, ddof=1)

    values = np.array([stat(s) for s in samples])
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ConfigError(f"rate_of: the {statistic} must be finite and > 0 at every x, got {values}")
    xc = logx - logx.mean()
    slope = float((np.log(values) - np.log(values).mean()) @ xc / (xc @ xc))
    intercept = float(np.log(values).mean() - slope * logx.mean())
    rng = np.random.default_rng(seed)
    boot = np.stack([stat(s[rng.integers(0, s.size, (n_boot, s.size))]) for s in samples], -1)
    ok = (boot > 0).all(-1)
    ly = np.log(np.where(boot > 0, boot, 1.0))[ok]
    slopes = (ly - ly.mean(-1, keepdims=True)) @ xc / (xc @ xc)
    lo, hi = (np.percentile(slopes, [2.5, 97.5]) if len(slopes) else (np.nan, np.nan))
    return {"slope": slope, "intercept": intercept, "ci95": [float(lo), float(hi)],
            "half_width": float(hi - lo) / 2, "valid": float(ok.mean()), "statistic": statistic}


def ratio_of_means(a, b, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(a) / mean(b) and its 95 % percentile bootstrap interval (a and b resampled
    independently): e.g. the W1 of trained particles over the W1 of i.i.d. draws.
    Returns {"ratio", "ci95"}."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size < 1 or b.size < 1 or not b.mean() > 0:
        raise ConfigError("ratio_of_means needs samples with a positive denominator mean")
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, a.size, (n_boot, a.size))].mean(-1)
    rb = b[rng.integers(0, b.size, (n_boot, b.size))].mean(-1)
    r = ra / np.where(rb > 0, rb, np.nan)
    lo, hi = np.nanpercentile(r, [2.5, 97.5])
    return {"ratio": float(a.mean() / b.mean()), "ci95": [float(lo), float(hi)]}


def ratio_rate(x, a_samples, b_samples, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """How a ratio of means moves with x: r_k = mean(a_k) / mean(b_k) at each x_k, the
    least-squares slope of log r_k against log x_k and its 95 % percentile bootstrap interval
    (a_k and b_k resampled independently at every x).  E.g. W1(trained particles, PDE) over
    W1(N i.i.d. draws, PDE) against N: a slope 0 says the particles stay a fixed multiple of
    i.i.d. sampling, as propagation of chaos predicts.

    x [K] positive; a_samples, b_samples: K arrays each (≥ 1 positive values).  Returns
    {"ratio": [K], "ci95": [K, 2] per x, "slope", "slope_ci95"}."""
    logx = np.log(np.asarray(x, dtype=np.float64))
    a = [np.asarray(v, np.float64).ravel() for v in a_samples]
    b = [np.asarray(v, np.float64).ravel() for v in b_samples]
    if not (len(a) == len(b) == len(logx) >= 3):
        raise ConfigError("ratio_rate needs one a- and one b-sample per x and at least 3 x values")
    if any(v.size < 1 or (v <= 0).any() or not np.isfinite(v).all() for v in a + b):
        raise ConfigError("ratio_rate: every sample needs finite positive values")
    rng = np.random.default_rng(seed)
    boot = np.stack([ak[rng.integers(0, ak.size, (n_boot, ak.size))].mean(-1)
                     / bk[rng.integers(0, bk.size, (n_boot, bk.size))].mean(-1)
                     for ak, bk in zip(a, b)], -1)                               # (n_boot, K)
    ratio = np.array([ak.mean() / bk.mean() for ak, bk in zip(a, b)])
    xc = logx - logx.mean()
    ly = np.log(boot)
    slopes = (ly - ly.mean(-1, keepdims=True)) @ xc / (xc @ xc)
    slope = float((np.log(ratio) - np.log(ratio).mean()) @ xc / (xc @ xc))
    return {"ratio": ratio.tolist(), "ci95": np.percentile(boot, [2.5, 97.5], axis=0).T.tolist(),
            "slope": slope, "slope_ci95": np.percentile(slopes, [2.5, 97.5]).tolist()}
