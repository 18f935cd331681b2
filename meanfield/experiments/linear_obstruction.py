"""linear-obstruction: GD on the linear neural ODE x' = θx learning −Id never converges from θ = 0.

The linear ResNet in the depth limit with a single parameter carried by every layer
(μ = ds ⊗ δ_θ) has flow map e^θ; learning x ↦ −x on isotropic data is minimising

    f(θ) = ‖e^θ + I‖²_F,   θ ∈ R^{d×d}   (no ½, as every risk here).

From θ = 0 the gradient is symmetric, so GD stays among symmetric matrices, θ_k = −a_k I
with a_{k+1} = a_k + 2dt e^{−a_k}(1 + e^{−a_k}): every eigenvalue z of θ has Re z → −∞
(a_k ≈ log(2 t_k)), e^θ → 0, f → d and ∇f → 0, while inf f = 0 for even d (θ = π J, a
rotation by π; for odd d the infimum over real θ is 1 and not attained).  GD thus never
converges to a minimiser: the iterates escape to infinity (the obstruction of the seeds).
Replicas r ≥ 1 start from θ_0 = ``init_scale`` · G_r with G_r Gaussian, which breaks the
symmetry; for d = 2 they are reported as measured.

GD on the MMN axis: θ ← θ − dt ∇f(θ), t = k·dt; ∇f by autograd through
``torch.linalg.matrix_exp`` (float64).  metrics.csv per replica r: risk_r (f), expnorm_r
(‖e^θ‖_F), maxre_r (max Re eig θ), skew_r (‖θ − θᵀ‖_F / 2), grad_r (‖∇f‖_F); risk is
replica 0's f.  particles.npz: theta [K, R, 1, d²] (one particle per replica, layer [1] =
[0]), param_names θ_ij.  results.json: final values and fitted rates of replica 0
(slope of f − d and of a = −max Re eig against log t over the second half of the run;
predicted −1 and 1).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import io
from ..dynamics import ParticleState
from ..errors import DivergenceError
from .config import RunConfig
from .plan import Plan
from ..plotting import save_figure
from .config import RESNET_RESUME_MUTABLE
from .resnet_common import job_phase, plt, read_results, write_outputs

NAME = "linear-obstruction"
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "log_every=20", "save_every=100", "checkpoint_every=100")


@dataclass(frozen=True)
class Config(RunConfig):
    """Keys: d (matrix size), steps, dt, replicas (1 + number of perturbed starts), seed,
    init_scale (perturbation size).  scale = small: 200 steps."""

    d: int = 2
    steps: int = 4000
    dt: float = 0.05
    replicas: int = 3
    dtype: str = "float64"
    log_every: int = 20
    save_every: int = 1000
    checkpoint_every: int = 1000
    scale: str = "full"
    init_scale: float = 0.5
    threads: int = 1

    _choices = {"scale": ("full", "small")}
    _presets = {"scale": {"small": {"steps": 200}}}
    resume_mutable = RESNET_RESUME_MUTABLE

    def validate(self):
        """RunConfig's checks, then d ≥ 1 and init_scale finite and ≥ 0 (``ConfigError``)."""
        super().validate()
        self.check_bounds(at_least_one=("d",), nonnegative=("init_scale",))

    def memory_bytes(self) -> int:
        """replicas matrices of d × d: 16 copies (state, gradient, the exponential and its
        derivative's workspace) plus the snapshots, in float64."""
        snaps = self.steps // max(1, self.save_every) + 2
        return int((16 + 2 * snaps) * self.replicas * self.d * self.d * 8)

    def size_text(self) -> str:
        """"d=…, replicas=…, dtype=…"."""
        return f"d={self.d}, {super().size_text()}"


def objective(theta: torch.Tensor) -> torch.Tensor:
    """f(θ) = ‖e^θ + I‖²_F for θ [..., d, d] → [...]."""
    d = theta.shape[-1]
    E = torch.linalg.matrix_exp(theta) + torch.eye(d, dtype=theta.dtype, device=theta.device)
    return (E * E).sum((-1, -2))


class MatrixGD:
    """θ ← θ − dt ∇f(θ) on θ [B, 1, d²] (one particle per replica), with ParticleState states."""

    def __init__(self, d: int, dt: float):
        self.d, self.dt = d, dt

    def grad(self, state):
        """∇f(θ) = 2 (D exp_θ)*[e^θ + I] (the adjoint of exp's Fréchet derivative), by
        autograd through ``matrix_exp``; shaped like ``state.theta`` [B, 1, d²]."""
        with torch.enable_grad():
            th = state.theta.detach().reshape(-1, self.d, self.d).clone().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(th).sum(), th)
        return g.reshape(state.theta.shape)

    def step(self, state):
        """One step θ ← θ − dt ∇f(θ), t ← t + dt: returns (new state, None), like the
        ``step`` of the particle dynamics; ``DivergenceError`` on a non-finite θ."""
        theta = state.theta - self.dt * self.grad(state)
        if not torch.isfinite(theta).all():
            raise DivergenceError(f"step {state.step}: non-finite θ; the step size is likely too large")
        return replace(state, theta=theta, step=state.step + 1, t=float(f"{state.t + self.dt:.15g}")), None


def _measure(flow, state):
    d = flow.d
    th = state.theta.reshape(-1, d, d)
    f = objective(th)
    E = torch.linalg.matrix_exp(th)
    ev = torch.linalg.eigvals(th).real
    g = flow.grad(state).reshape(-1, d, d)
    row = {"risk": float(f[0])}
    for r in range(th.shape[0]):
        row.update({f"risk_r{r}": float(f[r]), f"expnorm_r{r}": float(E[r].norm()),
                    f"maxre_r{r}": float(ev[r].max()), f"skew_r{r}": float((th[r] - th[r].T).norm() / 2),
                    f"grad_r{r}": float(g[r].norm())})
    return row


def plan(cfg: Config) -> Plan:
    """One job: GD from θ = 0 (replica 0) and from perturbed starts; snapshots of every
    replica; results: final values and the fitted rates of replica 0."""
    d, R = cfg.d, cfg.replicas

    def build():
        g = torch.Generator().manual_seed(cfg.seed)
        th = cfg.init_scale * torch.randn(R, 1, d * d, generator=g, dtype=torch.float64)
        th[0] = 0.0
        return MatrixGD(d, cfg.dt), ParticleState(th.to(getattr(torch, cfg.dtype)), None, 0, 0.0, g)

    def phases(shared):
        return [job_phase("gd", {}, build, log_every=cfg.log_every, measure=_measure,
                          save_every=cfg.save_every, snap_all=True)]

    def results(ctx):
        rows = ctx.rows
        t = np.array([r["t"] for r in rows])
        half = t >= t[-1] / 2
        a = -np.array([r["maxre_r0"] for r in rows])
        gap = np.array([r["risk_r0"] for r in rows]) - d
        from scipy.stats import linregress

        results = {"experiment": NAME, "d": d, "final": {k: v for k, v in rows[-1].items()},
                   "slope_risk_minus_d_vs_log_t": float(linregress(np.log(t[half]), np.log(gap[half])).slope),
                   "slope_minus_maxre_vs_log_t": float(linregress(np.log(t[half]), a[half]).slope),
                   "predicted": {"risk_minus_d": -1.0, "minus_maxre_per_log_t": 1.0}}
        snaps = ctx.done["gd"].snaps
        arrays = {"t": np.array([x.t for x in snaps]), "theta": torch.stack([x.value for x in snaps]).numpy(),
                  "layer": np.zeros(1), "param_names": np.array([f"theta{i}{j}" for i in range(d) for j in range(d)])}
        return write_outputs(ctx, arrays, results)

    return Plan(phases=phases, results=results, threads=cfg.threads)


def plot(run_dir, coords=None) -> list[Path]:
    """figures/obstruction.png: f, ‖e^θ‖, max Re eig θ and ‖∇f‖ against t for every start."""
    run_dir = Path(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    res = read_results(run_dir)
    p = plt()
    fig, axes = p.subplots(1, 4, figsize=(15, 3.4), dpi=100)
    R = len([k for k in m if k.startswith("risk_r")])
    for r in range(R):
        lab = "θ₀ = 0" if r == 0 else f"θ₀ random ({r})"
        for ax, name in zip(axes, ("risk", "expnorm", "maxre", "grad")):
            ax.plot(m["t"][1:], m[f"{name}_r{r}"][1:], label=lab)          # t > 0 on log axes
    axes[0].axhline(res["d"], color="k", ls=":", lw=0.8, label="f = d")
    for ax, title, log in zip(axes, ("f(θ) = ‖e^θ + I‖²", "‖e^θ‖_F", "max Re eig(θ)", "‖∇f‖"),
                              (True, True, False, True)):
        ax.set_title(title)
        ax.set_xlabel("t")
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    path = run_dir / io.FIGURES / "obstruction.png"
    save_figure(fig, path)
    return [path]


FIGURES = plot
