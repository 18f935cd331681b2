"""The bridge between a two-layer mean-field network and a plain ``torch.nn.Module``.

``meanfield.to_module`` / ``meanfield.from_module`` are these two-layer functions (the ResNet
bridge of the same names lives in ``meanfield.models.resnet_torch``).

**The module of a measure.**  :func:`to_module` turns a unit and a measure
ρ_N = Σ_i m_i δ_{θ_i} (positions [N, D], uniform or given weights) into a
:class:`TwoLayerModule` whose parameters are the particles themselves — hidden weights
``W`` [N, d], biases ``b`` [N] (when the unit has them), output weights ``a`` [N] (when the
unit has them) — and whose forward is

    f(x; ρ_N) = Σ_i m_i a_i σ(⟨w_i, x⟩ + b_i)     (m_i = 1/N: the mean-field 1/N scaling).

:func:`from_module` gives (unit, measure) back; both directions copy numbers, so round trips
are exact.

**Reading a plain network.**  :func:`from_module` also reads an ordinary
``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))`` (standard parametrisation)
f(x) = Σ_j c_j σ(⟨w_j, x⟩ + b_j): it is the measure with uniform weights 1/N on the units
θ_j = (a_j, w_j, b_j) with **a_j = N·c_j** — the same function, (1/N) Σ_j (N c_j) σ(…).  The
activation ``act`` is ``nn.ReLU``, ``nn.Tanh``, ``nn.Sigmoid``, ``nn.Identity`` (linear) or
:class:`ActivationModule` (any activation of ``models.activations``, e.g. erf); the hidden
layer may have a bias or not; the output layer must have no bias or a zero one (a mean-field
network has no constant term).

**Training link (the factor N).**  On a finite dataset (``FiniteDataset``) with loss ℓ
(squared or logistic, no ½), the module's loss is R(θ_1, …, θ_N) = (1/n) Σ_k ℓ(y_k, f(x_k))
(:meth:`TwoLayerModule.loss`).  With uniform weights, ∂f/∂θ_i = (1/N) ∇_θφ(x; θ_i), so

    ∂R/∂θ_i = (1/n) Σ_k ∂_fℓ(y_k, f(x_k)) (1/N) ∇_θφ(x_k; θ_i) = (2/N) ∇_θΨ(θ_i; ρ_N),

because Ψ = ½ δR/δρ = (1/n) Σ_k ½∂_fℓ φ(x_k; ·) (docs/design.md §1: risk without ½, Ψ half
its first variation).  One step of ``gradient_flow(task, dt=dt)`` moves
θ_i ← θ_i − 2dt ∇Ψ(θ_i) = θ_i − N·dt ∂R/∂θ_i: **one full-batch ``torch.optim.SGD`` step
with lr = N·dt** on ``module.loss``.  L2 strength λ adds −2dt λθ_i = −lr (2λ/N) θ_i, i.e.
``weight_decay = 2λ/N``.  A loss written with ½ (½ MSE) halves the gradient: lr = 2N·dt.
With non-uniform weights the step is per particle, lr_i = dt/m_i.

**Standard parametrisation.**  Plain SGD with learning rate η on the Sequential's (c, W, b)
moves a_j = N c_j by −η N² ∂R/∂a_j and w_j, b_j by −η ∂R/∂w_j: in mean-field terms the output
weights take steps dt_a = η N and the hidden weights steps dt_w = η/N — the two layers run on
time scales N² apart, the lazy/NTK side of the picture; the mean-field flow moves both with
the same dt.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..measure import ParticleMeasure
from .activations import Activation, get_activation
from .tasks import LOSSES, loss_terms
from .units import Unit

# torch activation modules read as the library's activations
_TORCH_ACTIVATIONS = {torch.nn.ReLU: "relu", torch.nn.Tanh: "tanh", torch.nn.Sigmoid: "sigmoid",
                      torch.nn.Identity: "linear"}


class ActivationModule(torch.nn.Module):
    """σ of ``models.activations`` as a ``torch.nn.Module`` (z ↦ σ(z) elementwise), for
    activations torch has no module for (``erf`` = erf(z/√2), ``piecewise``, ``pwl``)."""

    def __init__(self, activation="relu"):
        super().__init__()
        self.activation = get_activation(activation)

    def forward(self, z):
        """σ(z), elementwise."""
        return self.activation(z)

    def extra_repr(self):
        return repr(self.activation.to_dict())


def torch_activation(activation) -> torch.nn.Module:
    """The ``torch.nn`` module of a library activation: ``nn.ReLU``, ``nn.Tanh``,
    ``nn.Sigmoid``, ``nn.Identity`` (linear), else :class:`ActivationModule`."""
    act = get_activation(activation)
    for cls, name in _TORCH_ACTIVATIONS.items():
        if act.name == name and not act.params:
            return cls()
    return ActivationModule(act)


def read_activation(module: torch.nn.Module) -> Activation:
    """The library activation of a torch activation module (inverse of
    :func:`torch_activation`); ``ConfigError`` naming the supported ones otherwise."""
    if isinstance(module, ActivationModule):
        return module.activation
    for cls, name in _TORCH_ACTIVATIONS.items():
        if type(module) is cls:
            return get_activation(name)
    supported = ", ".join(f"nn.{c.__name__}" for c in _TORCH_ACTIVATIONS)
    raise ConfigError(f"activation {type(module).__name__} is not one of the library's: use "
                      f"{supported} or meanfield.models.twolayer_torch.ActivationModule(name)")


class TwoLayerModule(torch.nn.Module):
    """A two-layer network in mean-field parametrisation: parameters ``W`` [N, d], ``b`` [N]
    (when ``unit.bias``), ``a`` [N] (when ``unit.output_weight``), buffer ``m`` [N] (the
    weights, default 1/N); forward x [..., d] → f(x) [..., 1] with
    f(x) = Σ_i m_i a_i σ(⟨w_i, x⟩ + b_i) (a_i ≡ 1 without output weight, b_i ≡ 0 without
    bias), like ``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))``.  Build one with
    :func:`to_module`; the module docstring has the training link."""

    def __init__(self, unit: Unit, N: int, *, weights=None, loss: str = "squared",
                 dtype=torch.float32):
        super().__init__()
        if not isinstance(unit, Unit):
            raise ConfigError(f"TwoLayerModule needs a meanfield Unit, got {type(unit).__name__}")
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
        self.unit = unit
        self.loss_name = loss
        self.act = torch_activation(unit.activation)
        self.W = torch.nn.Parameter(torch.zeros(N, unit.d, dtype=dtype))
        self.b = torch.nn.Parameter(torch.zeros(N, dtype=dtype)) if unit.bias else None
        self.a = torch.nn.Parameter(torch.zeros(N, dtype=dtype)) if unit.output_weight else None
        self.uniform = weights is None
        m = torch.full((N,), 1.0 / N, dtype=dtype) if weights is None else \
            torch.as_tensor(weights, dtype=dtype).clone()
        self.register_buffer("m", m)

    @property
    def N(self) -> int:
        """The number of units N."""
        return self.W.shape[0]

    def forward(self, x):
        """x [..., d] → f(x; ρ_N) [..., 1] = σ(x Wᵀ + b) (m ⊙ a)."""
        h = self.act(x @ self.W.T + self.b if self.b is not None else x @ self.W.T)   # (..., N)
        c = self.m * self.a if self.a is not None else self.m                          # (N,)
        return (h @ c).unsqueeze(-1)

    def loss(self, x, y):
        """The batch-mean loss (1/n) Σ_k ℓ(y_k, f(x_k)), no ½: squared (y_k − f)² or logistic
        log(1 + e^{−y_k f}) (``loss_name``); x [n, d], y [n]; a scalar tensor."""
        f = self.forward(x)[..., 0]
        return loss_terms(self.loss_name, f, y.to(f))[1].mean()

    def extra_repr(self):
        return f"N={self.N}, unit={self.unit.to_dict()}, loss={self.loss_name!r}"


def to_module(unit: Unit, measure, *, loss: str = "squared", dtype=None) -> TwoLayerModule:
    """The :class:`TwoLayerModule` of a two-layer measure (the two-layer ``mf.to_module``;
    ResNets: ``meanfield.models.resnet_torch.to_module``).

    ``measure``: a ParticleMeasure with positions [N, D] (uniform or given weights) or a
    tensor θ [N, D] (uniform), in ``unit``'s layout [a, w_0 … w_{d−1}, b].  Its forward is
    f(x; ρ_N) = Σ_i m_i φ(x; θ_i) and ``module.loss`` the risk (no ½) with ``loss``
    ("squared" | "logistic"); one flow step with dt is one SGD step with lr = N·dt (module
    docstring).  Parameters in ``dtype`` (default the positions').  ``ConfigError`` for
    replicated positions [B, N, D] or a layout that does not match the unit."""
    if not isinstance(unit, Unit):
        raise ConfigError(f"to_module needs a meanfield Unit first, got {type(unit).__name__} "
                          "(ResNets: meanfield.models.resnet_torch.to_module)")
    weights = None
    if isinstance(measure, ParticleMeasure):
        weights, theta = measure.weights, measure.positions
    elif isinstance(measure, torch.Tensor):
        theta = measure
    else:
        raise ConfigError(f"to_module needs a ParticleMeasure or a tensor [N, D], got {type(measure).__name__}")
    if theta.dim() != 2:
        raise ConfigError(f"to_module converts one network: positions must be [N, D], got {list(theta.shape)} "
                          "(take one replica with measure.replica(r))")
    unit.check_theta(theta)
    dtype = dtype or theta.dtype
    mod = TwoLayerModule(unit, theta.shape[0], weights=weights, loss=loss, dtype=dtype).to(theta.device)
    a, w, b = unit.split(theta.detach())
    with torch.no_grad():
        mod.W.copy_(w)
        if b is not None:
            mod.b.copy_(b)
        if a is not None:
            mod.a.copy_(a)
    return mod


def from_module(module: torch.nn.Module):
    """(unit, measure) of a two-layer network (the two-layer ``mf.from_module``; ResNets:
    ``meanfield.models.resnet_torch.from_module``).

    * a :class:`TwoLayerModule`: its unit, and its parameters as positions
      [a, w, b] [N, D] with its weights (None when uniform) — exactly the measure it was
      made from;
    * ``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))`` (standard parametrisation,
      f(x) = Σ_j c_j σ(⟨w_j, x⟩ + b_j)): the unit a σ(⟨w, x⟩ + b) (bias iff the hidden layer
      has one; σ read from ``act``, see :func:`read_activation`) and the uniform measure on
      θ_j = (N c_j, w_j, b_j) — the same function, f = (1/N) Σ_j (N c_j) σ(⟨w_j, x⟩ + b_j).
      The output layer must have no bias or a zero one.

    Positions are detached copies in the module's dtype and device."""
    if isinstance(module, TwoLayerModule):
        cols = ([module.a.detach()[:, None]] if module.a is not None else []) + [module.W.detach()]
        if module.b is not None:
            cols.append(module.b.detach()[:, None])
        theta = torch.cat(cols, -1).clone()
        weights = None if module.uniform else module.m.detach().clone()
        return module.unit, ParticleMeasure(theta, weights=weights,
                                            param_names=module.unit.param_names)
    if isinstance(module, torch.nn.Sequential):
        return _from_sequential(module)
    from .resnet_torch import ResNetModule

    hint = " (for ResNets use meanfield.models.resnet_torch.from_module)" if isinstance(module, ResNetModule) else ""
    raise ConfigError(f"from_module reads a TwoLayerModule or nn.Sequential(nn.Linear(d, N), act, "
                      f"nn.Linear(N, 1)), got {type(module).__name__}{hint}")


def _from_sequential(seq: torch.nn.Sequential):
    layers = list(seq)
    shape = "nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))"
    if len(layers) != 3 or not isinstance(layers[0], torch.nn.Linear) \
            or not isinstance(layers[2], torch.nn.Linear):
        raise ConfigError(f"from_module reads {shape}; got nn.Sequential of "
                          f"{[type(m).__name__ for m in layers]}")
    hidden, act, out = layers
    N, d = hidden.weight.shape
    if out.weight.shape != (1, N):
        raise ConfigError(f"the output layer must be nn.Linear({N}, 1), got weight of shape "
                          f"{list(out.weight.shape)}")
    if out.bias is not None and bool((out.bias != 0).any()):
        raise ConfigError(f"the output layer has a bias ({float(out.bias.detach()[0]):.4g}); a mean-field "
                          "network f = (1/N) Σ φ has no constant term: build it with "
                          "nn.Linear(N, 1, bias=False) or set the bias to zero")
    unit = Unit(d, read_activation(act), output_weight=True, bias=hidden.bias is not None)
    W = hidden.weight.detach()
    cols = [out.weight.detach()[0][:, None] * N, W]
    if hidden.bias is not None:
        cols.append(hidden.bias.detach()[:, None])
    theta = torch.cat(cols, -1).clone()
    return unit, ParticleMeasure(theta, param_names=unit.param_names)


__all__ = ["ActivationModule", "TwoLayerModule", "from_module", "read_activation", "to_module",
           "torch_activation"]
