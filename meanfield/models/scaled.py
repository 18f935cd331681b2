"""One network at any output scale α: from mean-field (α = 1) to lazy training (α → ∞).

Chizat–Oyallon–Bach (NeurIPS 2019, "On lazy training in differentiable programming") train
a model h at scale α on R(α h)/α²; as α grows the parameters barely move and the model
follows its linearisation around the initialisation.  For a two-layer network in
mean-field normalisation (docs/design.md §1) the scaled model and its risk are

    f_α(x; ρ) = α (f(x; ρ) − f(x; ρ_0))   (centred)      or   α f(x; ρ)   (not centred),
    R_α(ρ) = R(f_α) / α² = E[ℓ(y, f_α(x; ρ))] / α²,

and the task's Ψ becomes Ψ_α = ½ δR_α/δρ = (1/α) E[½∂_fℓ(y, f_α) φ(x; ·)]: the particles
move at speed O(1/α) (θ̇_i = −2∇Ψ_α(θ_i)), while the function moves at speed O(1) whatever
α, ∂_t f_α(x) = −2 E_{x'}[K(x, x') ½∂_fℓ(y, f_α)(x')] with the tangent kernel K of
``models.ntk``.  With centring off, α = 1 is exactly the unscaled task (the same numbers:
every factor is a multiplication or division by 1.0).  A symmetric initialisation
(:func:`symmetric`: units in pairs with opposite output weights) has f(·; ρ_0) = 0, so
centring is then unnecessary.

Conventions mapped onto this one:

| source | model | loss | this module |
|---|---|---|---|
| Chizat–Oyallon–Bach 2019 | α h(w) | R(α h)/α² | α, centred or with h(w_0) = 0 |
| Geiger–Spigler–Jacot–Wyart 2020 (article) | α (f − f_0), f = h^{-1/2} Σ_j c_j σ | R/α² | α_ours = α_G √h (their f carries 1/√h, ours 1/h) |
| Geiger et al. (code ``feature_lazy``) | α (f − f_0), f = h^{-1} Σ_j c_j σ | R/α | α_ours = α_code, time scaled by α |
| NTK parametrisation (Jacot et al. 2018) | N^{-1/2} Σ_j a_j σ | R | α = √N |

Here the reported ``risk`` is R(f_α) (the risk of the scaled network itself, not R_α), so
curves at different α compare directly.

Closed-form teacher–student potentials stay exact: for the squared loss R(f_α)/α² is the
risk of f against the labels y/α + f(x; ρ_0), i.e. a teacher–student task whose teacher is
the teacher with weights m*/α (offset c/α, noise σ/α) plus, when centred, the reference
particles with their weights; each replica's reference is its own teacher.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError, check_finite_float
from .gaussian_tasks import TeacherStudent
from .task_base import Potential, Task, as_batched, as_weights, loss_terms


class ScaledTask(Task):
    """``task`` at output scale α (module docstring): f_α = α (f − f(·; ρ_ref)) with a
    reference (θ_ref [N, D] or [B, N, D], its weights [N] / [B, N] or uniform), else α f.

    Shapes as every task: θ [B, N, D], weights [B or 1, N], x [B, n, d], y [B, n].
    ``ConfigError`` for α not finite and > 0, or a reference whose last dimension is not the
    unit's D."""

    standard_model = False

    def __init__(self, task: Task, alpha: float, reference=None, reference_weights=None):
        if not isinstance(task, Task):
            raise ConfigError(f"ScaledTask needs a meanfield Task, got {type(task).__name__}")
        self.inner = task
        self.alpha = check_finite_float("alpha", alpha, positive=True)
        self.unit = task.unit
        self.loss = task.loss
        self.name = task.name
        self.closed_form = getattr(task, "closed_form", False)
        self.finite_data = getattr(task, "finite_data", False)
        self.reference = None
        self.reference_weights = None
        if reference is not None:
            ref = as_batched(torch.as_tensor(reference)).detach().clone()
            task.check_theta(ref)
            self.reference = ref
            self.reference_weights = as_weights(reference_weights, ref)

    @property
    def centred(self) -> bool:
        """Whether f(·; ρ_ref) is subtracted."""
        return self.reference is not None

    # ---- the model: the inner task's features -------------------------------------------
    def features(self, x, theta):
        """The inner task's features φ [B, n, N]."""
        return self.inner.features(x, theta)

    def feature_grad(self, x, theta, coef):
        """The inner task's Σ_k coef_k ∇_θφ(x_k; θ_i) [B, N, D]."""
        return self.inner.feature_grad(x, theta, coef)

    def _reference_output(self, x, theta):
        """f(x; ρ_ref) [B or 1, n] in θ's dtype and device (0 when not centred)."""
        ref = self.reference.to(dtype=theta.dtype, device=theta.device)
        m = self.reference_weights.to(dtype=theta.dtype, device=theta.device)
        return (self.inner.features(x, ref) @ m.unsqueeze(-1)).squeeze(-1)

    def scaled_outputs(self, x, theta, weights=None):
        """f_α(x_k; ρ) [B, n] for x [B, n, d], θ [B, N, D]."""
        theta = as_batched(theta)
        m = as_weights(weights, theta)
        f = (self.features(x, theta) @ m.unsqueeze(-1)).squeeze(-1)
        if self.centred:
            f = f - self._reference_output(x, theta)
        return self.alpha * f

    # ---- potentials ---------------------------------------------------------------------
    def sample(self, n, **kw):
        """The inner task's samples (x, y)."""
        return self.inner.sample(n, **kw)

    def sample_potential(self, theta, weights, x, y) -> Potential:
        """Batch estimates with r_k = ½∂_fℓ(y_k, f_α(x_k)):
            Ψ̂_α(θ_i) = (1/(nα)) Σ_k r_k φ(x_k; θ_i),  ∇Ψ̂_α likewise with ∇_θφ,
            R̂ = (1/n) Σ_k ℓ(y_k, f_α(x_k))   (the risk of the scaled network), with its s.e."""
        theta = as_batched(theta)
        m = as_weights(weights, theta)
        n = x.shape[-2]
        phi = self.features(x, theta)                                # (B, n, N)
        f = (phi @ m.unsqueeze(-1)).squeeze(-1)                      # (B, n)
        if self.centred:
            f = f - self._reference_output(x, theta)
        r, ell = loss_terms(self.loss, self.alpha * f, y)            # (B, n)
        psi = (r.unsqueeze(-2) @ phi).squeeze(-2) / n / self.alpha  # (B, N)
        grad = self.feature_grad(x, theta, r / (n * self.alpha))     # (B, N, D)
        risk = ell.mean(-1)
        se = ell.std(-1) / math.sqrt(n) if n > 1 else torch.full_like(risk, float("nan"))
        return Potential(psi=psi, grad=grad, risk=risk, risk_se=se)

    @property
    def has_population(self) -> bool:
        return self.inner.has_population and (self.finite_data or isinstance(self.inner, TeacherStudent))

    def population_reason(self):
        if self.has_population:
            return None
        return (self.inner.population_reason() or
                f"a scaled {type(self.inner).__name__} has no exact population potential")

    def population_potential(self, theta, weights, pair_sum=None) -> Potential:
        """Exact Ψ_α, ∇Ψ_α and R(f_α): on a finite dataset's full batch, or for a
        closed-form teacher–student task through the shifted teacher (module docstring)."""
        if self.finite_data:
            x, y = self.full(theta.dtype, theta.device)
            pot = self.sample_potential(theta, weights, x, y)
            pot.risk_se = None
            return pot
        if not isinstance(self.inner, TeacherStudent) or not self.inner.has_population:
            raise ConfigError(f"task {self.name!r} has no exact population potential: "
                              f"{self.population_reason()}")
        theta = as_batched(theta)
        m = as_weights(weights, theta)
        B = theta.shape[0]
        refs = self.reference.shape[0] if self.centred else 1
        if refs not in (1, B):
            raise ConfigError(f"the reference has {refs} replicas, the particles {B}")
        pots = []
        for b in range(B if refs > 1 else 1):
            shifted = self._shifted_teacher(b if refs > 1 else 0)   # cached: R_# once per replica
            sl = slice(b, b + 1) if refs > 1 else slice(None)
            mb = m[sl] if m.shape[0] > 1 else m
            pots.append(shifted.population_potential(theta[sl], mb, pair_sum))
        psi = torch.cat([p.psi for p in pots])
        grad = torch.cat([p.grad for p in pots])
        risk = torch.cat([p.risk for p in pots]) * self.alpha ** 2
        return Potential(psi=psi, grad=grad, risk=risk)

    def _shifted_teacher(self, b: int) -> TeacherStudent:
        """The teacher–student task of labels y/α + f(x; ρ_ref,b) (module docstring)."""
        cache = self.__dict__.setdefault("_shifted", {})
        if b not in cache:
            cache[b] = self._make_shifted_teacher(b)
        return cache[b]

    def _make_shifted_teacher(self, b: int) -> TeacherStudent:
        t = self.inner
        tt, tw = t.teacher(torch.float64)
        if self.centred:
            ref = self.reference[b].to(torch.float64)
            rw = self.reference_weights[b if self.reference_weights.shape[0] > 1 else 0].to(torch.float64)
            tt, tw = torch.cat([tt, ref]), torch.cat([tw / self.alpha, rw])
        else:
            tw = tw / self.alpha
        return TeacherStudent(t.unit, tt, tw, offset=t.offset / self.alpha,
                              noise_std=t.noise_std / self.alpha)

    def full(self, dtype=torch.float32, device=None):
        """The inner finite dataset's (X [1, n, d], Y [1, n])."""
        return self.inner.full(dtype, device)

    # ---- evaluation on a finite dataset, without gradients ------------------------------
    def outputs(self, theta, weights=None) -> torch.Tensor:
        """f_α(X_k; ρ) on every data point of the inner finite dataset, [B, n]."""
        theta = as_batched(theta)
        x, _ = self.full(theta.dtype, theta.device)
        with torch.no_grad():
            return self.scaled_outputs(x, theta, weights)

    def risk(self, theta, weights=None) -> torch.Tensor:
        """R(f_α) per replica [B] on the inner finite dataset (its loss, no ½)."""
        f = self.outputs(theta, weights)
        _, y = self.full(f.dtype, f.device)
        return loss_terms(self.loss, f, y)[1].mean(-1)

    def accuracy(self, theta, weights=None) -> torch.Tensor:
        """The fraction of points with sign f_α(X_k) = Y_k, per replica [B]."""
        f = self.outputs(theta, weights)
        _, y = self.full(f.dtype, f.device)
        return (torch.sign(f) == y).to(torch.float64).mean(-1)

    def margin(self, theta, weights=None) -> torch.Tensor:
        """α × the inner dataset's normalised margin (f_α = α f when not centred);
        ``ConfigError`` for a centred model, whose output is not homogeneous in θ."""
        if self.centred:
            raise ConfigError("the normalised margin of a centred model α(f − f_0) is not defined "
                              "(it is not homogeneous in θ)")
        return self.alpha * self.inner.margin(theta, weights)

    @property
    def risk_sharp(self):
        """R_# of the inner task: the risk of the zero network."""
        return self.inner.risk_sharp

    def to_dict(self) -> dict:
        """The inner task's description with "alpha" and "centred"."""
        return {**self.inner.to_dict(), "alpha": self.alpha, "centred": self.centred}

    def arrays(self) -> dict:
        """The inner task's arrays."""
        return self.inner.arrays()


def scaled(task: Task, alpha: float = 1.0, *, reference=None, reference_weights=None) -> Task:
    """``task`` at output scale α (:class:`ScaledTask`), or ``task`` itself when α = 1
    without a reference (the same object: today's flow, bit for bit)."""
    alpha = check_finite_float("alpha", alpha, positive=True)
    if alpha == 1.0 and reference is None:
        return task
    return ScaledTask(task, alpha, reference, reference_weights)


def symmetric(theta: torch.Tensor, unit) -> torch.Tensor:
    """θ [..., N, D] → [..., 2N, D]: every unit followed by its copy with the opposite output
    weight (a → −a), so f(x; ρ_0) = 0 exactly for uniform weights (Chizat–Oyallon–Bach's
    symmetric initialisation).  ``ConfigError`` for a unit without output weight."""
    if not unit.output_weight:
        raise ConfigError("a symmetric initialisation needs units with an output weight a")
    unit.check_theta(theta)
    mirror = theta.clone()
    mirror[..., 0] = -mirror[..., 0]
    return torch.stack([theta, mirror], dim=-2).flatten(-3, -2)
