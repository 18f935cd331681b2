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
pair's 2 × 2 block has smallest eigenvalue ½(1 − k_ν(δ√lift))); the PL *bound* follows it,
while the PL ratio itself (a Rayleigh quotient along the residual) need not when the
target is Lipschitz (``neg``) — the distinction of Robin–Scaman–Lelarge (NeurIPS 2022)
recalled in DESIGN.md.  results.json holds, per target and ν, λ_min(K_X) at
initialisation (random features, and ``lam_min_0_exact_kernel`` for the M = ∞ kernel
½k_ν: finite M turns the ν = ½ curve to δ² once δ is of order 1/M, where hardly any of the
M Cauchy frequencies exceeds 1/δ), the minimum over training of pl_ratio and of pl_bound, the final risk, and
fitted slopes in log δ (bootstrap over seeds).
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
from ..interact import RESNET_BACKENDS
from .config import RunConfig
from .plan import Plan
from ..plotting import save_figure
from .resnet_common import (RESUME_MUTABLE, fit_slope, job_phase, parse_floats, plt, read_results,
                            snapshots_arrays, write_outputs)

NAME = "resnet-rkhs"

SCALES = {
    "full": {"M": 256, "L": 4, "n_pairs": 8, "deltas": "0.02,0.05,0.1,0.2,0.4", "nus": "0.5,1.5,inf"},
    "small": {"M": 32, "L": 2, "n_pairs": 3, "deltas": "0.05,0.5", "nus": "0.5,inf"},
}


@dataclass(frozen=True)
class Config(RunConfig):
    """Keys of resnet-rkhs (``N`` unused: particles are L·M).  Size keys left at 0 / "" take
    the ``scale`` preset (full: M = 256, L = 4, n_pairs = 8, deltas 0.02,0.05,0.1,0.2,0.4,
    nus 0.5,1.5,inf; small: 32, 2, 3, "0.05,0.5", "0.5,inf")."""

    d: int = 2
    steps: int = 400
    dt: float = 0.1
    replicas: int = 2
    dtype: str = "float64"
    log_every: int = 20
    save_every: int = 200
    checkpoint_every: int = 100
    scale: str = "full"
    lift: int = 2
    M: int = 0
    L: int = 0
    n_pairs: int = 0
    deltas: str = ""
    nus: str = ""
    targets: str = "neg,split"
    split: float = 0.5
    lengthscale: float = 1.0
    task_seed: int = 0
    threads: int = 1

    _choices = {"scale": tuple(SCALES), "backend": RESNET_BACKENDS}
    resume_mutable = RESUME_MUTABLE

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): targets among "neg", "split"; lift ≥ 1;
        M, L, n_pairs, task_seed, threads ≥ 0; split, lengthscale finite and > 0; deltas
        numbers > 0 and nus half-integers > 0 or inf (after the preset, :meth:`sizes`)."""
        super().validate()
        if not self.target_list or any(t not in ("neg", "split") for t in self.target_list):
            raise ConfigError(f"targets must list 'neg' and/or 'split', got {self.targets!r}")
        self.check_bounds(at_least_one=("lift",),
                          nonnegative_ints=("M", "L", "n_pairs", "task_seed", "threads"),
                          positive=("split", "lengthscale"))
        s = self.sizes()
        for nu in s["nus"]:
            if not (nu == math.inf or abs(2 * nu - round(2 * nu)) < 1e-12):
                raise ConfigError(f"nus must be half-integers (0.5, 1, 1.5, …) or inf, got {nu!r}")

    @property
    def target_list(self) -> list[str]:
        """The target names in ``targets`` (comma-separated, stripped, empty entries dropped)."""
        return [t.strip() for t in self.targets.split(",") if t.strip()]

    def sizes(self) -> dict:
        """{"M", "L", "n_pairs", "deltas", "nus"}: the non-zero / non-empty keys over the
        ``scale`` preset; deltas and nus parsed to float lists (``parse_floats``; nus may
        hold inf)."""
        p = dict(SCALES[self.scale])
        for k in ("M", "L", "n_pairs", "deltas", "nus"):
            if getattr(self, k):
                p[k] = getattr(self, k)
        p["deltas"] = parse_floats("deltas", p["deltas"])
        p["nus"] = parse_floats("nus", p["nus"], allow_inf=True)
        return p


def separated_pairs(n_pairs: int, d: int, delta: float, *, generator: torch.Generator, split: float):
    """X [2·n_pairs, d] (pairs c_k ± (δ/2) e_k) and targets (neg: −X; split: −X ± split·e_k)."""
    c = torch.randn(n_pairs, d, generator=generator, dtype=torch.float64)
    e = torch.randn(n_pairs, d, generator=generator, dtype=torch.float64)
    e = e / e.norm(dim=-1, keepdim=True)
    X = torch.cat([c + 0.5 * delta * e, c - 0.5 * delta * e])
    off = torch.cat([split * e, -split * e])
    return X, {"neg": -X, "split": -X + off}


def exact_lam_min(cfg, sz, nu, delta):
    """λ_min of the infinite-width kernel matrix ½ k_ν(|A x_k − A x_k'|) at the embedded data
    (closed-form Matérn for ν ∈ {0.5, 1.5, 2.5, inf}; NaN otherwise)."""
    from ..models.resnet import matern_kernel

    if nu not in (0.5, 1.5, 2.5, math.inf):
        return float("nan")
    X, _ = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                           split=cfg.split)
    A, _ = lift_matrices(cfg.d, cfg.lift)
    H = X @ A.T
    K = 0.5 * matern_kernel(torch.cdist(H, H), nu, cfg.lengthscale)
    return float(torch.linalg.eigvalsh(K)[0])


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
        res = {job: ctx.result(key(*job)) for job in jobs}
        first = res[jobs[0]]
        ti, nu, delta = jobs[0]
        X, Ys = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                                split=cfg.split)
        arrays = snapshots_arrays(first["snaps"], first["layer"], model.param_names,
                                  {**model.arrays(), "data_X": X.numpy(),
                                   "data_Y": Ys[cfg.target_list[ti]].numpy()})
        return write_outputs(ctx, arrays, _analyse(cfg, sz, res))

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
    out = {"experiment": NAME, "sizes": sz, "targets": {}}
    for ti, target in enumerate(cfg.target_list):
        per_nu = {}
        for nu in sz["nus"]:
            deltas = sz["deltas"]
            col = lambda name, rows: np.array([[r[f"{name}_r{i}"] for r in rows] for i in range(R)])  # noqa: E731
            lam0, plmin, pbmin, final = [], [], [], []
            for delta in deltas:
                rows = res[(ti, nu, delta)]["rows"]
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
                "lam_min_0_exact_kernel_slope": (fit_slope(deltas, np.array([exact]))["slope"]
                                                 if np.all(np.isfinite(exact)) else float("nan")), "pl_ratio_min_slope": fit_slope(deltas, plmin),
                "pl_bound_min_slope": fit_slope(deltas, pbmin),
                "predicted_lam_slope": min(2 * nu, 2.0)}
        out["targets"][target] = per_nu
    return out


def plot(run_dir, coords=None) -> list[Path]:
    """figures/separation.png (λ_min(K_X0), min PL ratio and min PL bound against δ per ν)
    and figures/training.png (risk, ‖v‖², PL ratio and λ_min along training)."""
    run_dir = Path(run_dir)
    res = read_results(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    p = plt()
    targets = list(res["targets"])
    fig, axes = p.subplots(1, len(targets), figsize=(5 * len(targets), 3.8), dpi=110, squeeze=False)
    for i, target in enumerate(targets):
        ax = axes[0, i]
        for k, (nu, r) in enumerate(res["targets"][target].items()):
            x = np.array(r["deltas"])
            ax.loglog(x, r["lam_min_0_exact_kernel"], "x", color=f"C{k}", ms=6)
            for name, style in (("lam_min_0", "o-"), ("pl_ratio_min", "s--"), ("pl_bound_min", "^:")):
                y = np.array(r[name]).mean(0)
                lab = f"ν={nu}: {name}" + (f" (slope {r[name + '_slope']['slope']:.2f})" if name != "pl_bound_min" else "")
                ax.loglog(x, y, style, color=f"C{k}", label=lab, ms=4)
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
