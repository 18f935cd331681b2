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

GD on the MMN axis (``dynamics.matrix_gd.MatrixGD`` on ``models.linear_ode.objective``):
θ ← θ − dt ∇f(θ), t = k·dt; ∇f by autograd through ``torch.linalg.matrix_exp`` (float64).
metrics.csv per replica r: risk_r (f), expnorm_r (‖e^θ‖_F), maxre_r (max Re eig θ), skew_r
(‖θ − θᵀ‖_F / 2), grad_r (‖∇f‖_F); risk is replica 0's f.  particles.npz: theta
[K, R, 1, d²] (one particle per replica, layer [1] = [0]), param_names θ_ij.  results.json:
final values and fitted rates of replica 0 (slope of f − d and of a = −max Re eig against
log t over the second half of the run, ``analysis.fits.late_log_slope``; predicted −1 and 1).
Figure: ``figures.resnets.obstruction_figures``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.fits import late_log_slope
from ..dynamics import ParticleState
from ..dynamics.matrix_gd import MatrixGD
from ..figures import resnets
from ..models.linear_ode import objective
from .config import RESNET_RESUME_MUTABLE, RunConfig
from .plan import Plan
from .resnet_common import job_phase, write_outputs

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
    _help = {"d": "matrix size: θ is d × d",
             "replicas": "1 + the number of perturbed starts",
             "scale": "preset: full (the README's run) or small (200 steps)",
             "init_scale": "size of the perturbed starts' random θ",
             "threads": "torch intra-op threads during the run (0: torch's default)"}

    def validate(self):
        """RunConfig's checks (threads ≥ 0 among them), then d ≥ 1 and init_scale finite and
        ≥ 0 (``ConfigError``)."""
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
        a = -np.array([r["maxre_r0"] for r in rows])
        gap = np.array([r["risk_r0"] for r in rows]) - d
        results = {"experiment": NAME, "d": d, "final": {k: v for k, v in rows[-1].items()},
                   "slope_risk_minus_d_vs_log_t": late_log_slope(t, gap),
                   "slope_minus_maxre_vs_log_t": late_log_slope(t, a, log_y=False),
                   "predicted": {"risk_minus_d": -1.0, "minus_maxre_per_log_t": 1.0}}
        snaps = ctx.done["gd"].snaps
        arrays = {"t": np.array([x.t for x in snaps]), "theta": torch.stack([x.value for x in snaps]).numpy(),
                  "layer": np.zeros(1), "param_names": np.array([f"theta{i}{j}" for i in range(d) for j in range(d)])}
        return write_outputs(ctx, arrays, results)

    return Plan(phases=phases, results=results, threads=cfg.threads)


FIGURES = resnets.obstruction_figures
