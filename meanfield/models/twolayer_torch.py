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
layer may have a bias or not.

**The output bias is a fixed offset.**  A mean-field network f = ∫φ dρ has no constant term,
so an output bias c of ``nn.Linear(N, 1)`` is read as a *fixed offset*: the network is
c + f(x; ρ_N), c is not a particle and does not move under the flow.
``from_module(module, offset=True)`` returns (unit, measure, c); without ``offset=True`` a
nonzero output bias is refused (a zero one is fine).  ``to_module(unit, measure, offset=c)``
puts it back (an ``nn.Linear(N, 1)`` bias in the sequential layout, an ``offset`` buffer in
:class:`TwoLayerModule`).  For the squared loss, training c + f on labels y is training f on
y − c, which is how the ``teacher-student`` and ``dataset`` experiments start from such a
network (``--set init=FILE``, :func:`load_module`); a constant unit instead would move with
the flow and change the measure's size N.

**Layouts.**  ``to_module(..., layout="meanfield")`` (the default) builds a
:class:`TwoLayerModule` whose parameters are the particles; ``layout="sequential"`` builds
the plain ``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))`` of the same function, with
output weights c_j = m_j a_j (a_j ≡ 1 without output weight) and the offset as the output
bias (:func:`sequential_of` builds it from arrays) — the layout :func:`from_module` reads.

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

import math

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
    bias), like ``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))``; with ``offset`` c
    (a buffer, not a parameter: the flow does not move it) the forward is c + f(x).  Build
    one with :func:`to_module`; the module docstring has the training link."""

    def __init__(self, unit: Unit, N: int, *, weights=None, loss: str = "squared",
                 dtype=torch.float32, offset=None):
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
        if offset is not None:
            self.register_buffer("offset", torch.tensor(float(offset), dtype=dtype))
        else:
            self.offset = None

    @property
    def N(self) -> int:
        """The number of units N."""
        return self.W.shape[0]

    def forward(self, x):
        """x [..., d] → f(x; ρ_N) [..., 1] = σ(x Wᵀ + b) (m ⊙ a) (+ the offset c)."""
        h = self.act(x @ self.W.T + self.b if self.b is not None else x @ self.W.T)   # (..., N)
        c = self.m * self.a if self.a is not None else self.m                          # (N,)
        f = (h @ c).unsqueeze(-1)
        return f if self.offset is None else f + self.offset

    def loss(self, x, y):
        """The batch-mean loss (1/n) Σ_k ℓ(y_k, f(x_k)), no ½: squared (y_k − f)² or logistic
        log(1 + e^{−y_k f}) (``loss_name``); x [n, d], y [n]; a scalar tensor."""
        f = self.forward(x)[..., 0]
        return loss_terms(self.loss_name, f, y.to(f))[1].mean()

    def extra_repr(self):
        off = "" if self.offset is None else f", offset={float(self.offset):.6g}"
        return f"N={self.N}, unit={self.unit.to_dict()}, loss={self.loss_name!r}{off}"


LAYOUTS = ("meanfield", "sequential")


def to_module(unit: Unit, measure, *, loss: str = "squared", dtype=None, layout: str = "meanfield",
              offset=None) -> torch.nn.Module:
    """The torch module of a two-layer measure (the two-layer ``mf.to_module``; ResNets:
    ``meanfield.models.resnet_torch.to_module``).

    ``measure``: a ParticleMeasure with positions [N, D] (uniform or given weights) or a
    tensor θ [N, D] (uniform), in ``unit``'s layout [a, w_0 … w_{d−1}, b].  Its forward takes
    x [..., d] to [..., 1]:

        f(x; ρ_N) = Σ_i m_i φ(x; θ_i)   (+ c with ``offset`` c: a fixed offset).

    ``layout="meanfield"``: a :class:`TwoLayerModule` whose parameters are the particles;
    ``module.loss`` is the risk (no ½) with ``loss`` ("squared" | "logistic"), and one flow
    step with dt is one SGD step with lr = N·dt (module docstring).
    ``layout="sequential"``: the plain ``nn.Sequential(nn.Linear(d, N, bias=unit.bias), act,
    nn.Linear(N, 1, bias=offset is not None))`` of the same function, output weights
    c_j = m_j a_j (:func:`sequential_of`); :func:`from_module` reads it back as the uniform
    measure on (N m_j a_j, w_j, b_j) (the same function).
    Parameters in ``dtype`` (default the positions').  ``ConfigError`` for replicated
    positions [B, N, D], a layout that does not match the unit, an unknown ``layout`` or a
    non-finite offset."""
    if not isinstance(unit, Unit):
        raise ConfigError(f"to_module needs a meanfield Unit first, got {type(unit).__name__} "
                          "(ResNets: meanfield.models.resnet_torch.to_module)")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if offset is not None and not (isinstance(offset, (int, float)) and math.isfinite(offset)):
        raise ConfigError(f"offset must be a finite number, got {offset!r}")
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
    a, w, b = unit.split(theta.detach())
    if layout == "sequential":
        N = theta.shape[0]
        m = torch.full((N,), 1.0 / N, dtype=theta.dtype, device=theta.device) if weights is None \
            else weights.to(theta)
        c = m * a if a is not None else m
        return sequential_of(unit.activation, w, b, c, offset=offset, dtype=dtype)
    mod = TwoLayerModule(unit, theta.shape[0], weights=weights, loss=loss, dtype=dtype,
                         offset=offset).to(theta.device)
    with torch.no_grad():
        mod.W.copy_(w)
        if b is not None:
            mod.b.copy_(b)
        if a is not None:
            mod.a.copy_(a)
    return mod


def sequential_of(activation, W, b, c, *, offset=None, dtype=None) -> torch.nn.Sequential:
    """``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))`` with hidden weights W [N, d],
    hidden biases b [N] (None: ``bias=False``), output weights c [N] and output bias
    ``offset`` (None: ``bias=False``): x [..., d] ↦ Σ_j c_j σ(⟨w_j, x⟩ + b_j) + offset.
    ``act`` is :func:`torch_activation` of ``activation``; parameters copied in ``dtype``
    (default W's) on W's device."""
    W = torch.as_tensor(W).detach()
    dtype = dtype or W.dtype
    N, d = W.shape
    hidden = torch.nn.Linear(d, N, bias=b is not None, dtype=dtype, device=W.device)
    out = torch.nn.Linear(N, 1, bias=offset is not None, dtype=dtype, device=W.device)
    with torch.no_grad():
        hidden.weight.copy_(W)
        if b is not None:
            hidden.bias.copy_(torch.as_tensor(b).detach())
        out.weight.copy_(torch.as_tensor(c).detach().reshape(1, N))
        if offset is not None:
            out.bias.fill_(float(offset))
    return torch.nn.Sequential(hidden, torch_activation(activation), out)


def from_module(module: torch.nn.Module, *, offset: bool = False):
    """(unit, measure) of a two-layer network, or (unit, measure, c) with ``offset=True``
    (the two-layer ``mf.from_module``; ResNets: ``meanfield.models.resnet_torch.from_module``).

    * a :class:`TwoLayerModule`: its unit, and its parameters as positions
      [a, w, b] [N, D] with its weights (None when uniform) — exactly the measure it was
      made from;
    * ``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))`` (standard parametrisation,
      f(x) = Σ_j c_j σ(⟨w_j, x⟩ + b_j)): the unit a σ(⟨w, x⟩ + b) (bias iff the hidden layer
      has one; σ read from ``act``, see :func:`read_activation`) and the uniform measure on
      θ_j = (N c_j, w_j, b_j) — the same function, f = (1/N) Σ_j (N c_j) σ(⟨w_j, x⟩ + b_j).

    The output bias (a :class:`TwoLayerModule`'s ``offset``) is a fixed offset c (module
    docstring): ``offset=True`` returns it as a float (0.0 when there is none); without it a
    nonzero one is a ``ConfigError``.  Positions are detached copies in the module's dtype
    and device."""
    if isinstance(module, TwoLayerModule):
        cols = ([module.a.detach()[:, None]] if module.a is not None else []) + [module.W.detach()]
        if module.b is not None:
            cols.append(module.b.detach()[:, None])
        theta = torch.cat(cols, -1).clone()
        weights = None if module.uniform else module.m.detach().clone()
        c = 0.0 if module.offset is None else float(module.offset)
        _check_offset(c, offset, "the module has an offset")
        meas = ParticleMeasure(theta, weights=weights, param_names=module.unit.param_names)
        return (module.unit, meas, c) if offset else (module.unit, meas)
    if isinstance(module, torch.nn.Sequential):
        unit, meas, c = _from_sequential(module)
        _check_offset(c, offset, "the output layer has a bias")
        return (unit, meas, c) if offset else (unit, meas)
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
    unit = Unit(d, read_activation(act), output_weight=True, bias=hidden.bias is not None)
    W = hidden.weight.detach()
    cols = [out.weight.detach()[0][:, None] * N, W]
    if hidden.bias is not None:
        cols.append(hidden.bias.detach()[:, None])
    theta = torch.cat(cols, -1).clone()
    c = 0.0 if out.bias is None else float(out.bias.detach()[0])
    return unit, ParticleMeasure(theta, param_names=unit.param_names), c


def _check_offset(c: float, wanted: bool, what: str) -> None:
    if c != 0.0 and not wanted:
        raise ConfigError(f"{what} ({c:.4g}); a mean-field network f = (1/N) Σ φ has no constant "
                          "term: read it as a fixed offset with from_module(module, offset=True), "
                          "or build it with nn.Linear(N, 1, bias=False)")


# ---- torch files: a user's saved network, and what `meanfield export` writes ------------------
EXPORT_FORMAT = "meanfield.export/1"
_SEQUENTIAL = "nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))"


def export_payload(seq: torch.nn.Sequential, activation, **info) -> dict:
    """What ``meanfield export`` saves with ``torch.save``: a plain dict that
    ``torch.load(path, weights_only=True)`` reads without meanfield —
    {"format", "layout", "activation": σ's dict (``{"name": "relu"}``), "torch_activation":
    the ``torch.nn`` class name ("ReLU", "Tanh", "Sigmoid", "Identity") or None (erf,
    piecewise: see the README for the two-line module of erf), "state_dict": the Sequential's
    tensors ("0.weight" [N, d], "0.bias" [N], "2.weight" [1, N], "2.bias" [1]), **info}.
    :func:`load_module` reads it back."""
    act = get_activation(activation)
    mod = torch_activation(act)
    name = None if isinstance(mod, ActivationModule) else type(mod).__name__
    return {"format": EXPORT_FORMAT, "layout": _SEQUENTIAL, "activation": act.to_dict(),
            "torch_activation": name,
            "state_dict": {k: v.detach().clone() for k, v in seq.state_dict().items()}, **info}


def load_module(path, *, activation=None):
    """(unit, measure, c, sha256) of the two-layer network saved in the torch file ``path``
    (c the output bias read as a fixed offset, module docstring; sha256 the file's bytes).

    The file may hold (``torch.save``): an ``nn.Sequential(nn.Linear(d, N), act,
    nn.Linear(N, 1))`` or a :class:`TwoLayerModule` (read with ``weights_only=True``: only
    torch's layers and meanfield's unit classes are unpickled); that Sequential's state dict
    ("0.weight" [N, d], optional "0.bias" [N], "2.weight" [1, N], optional "2.bias" [1]),
    whose activation is ``activation`` (a state dict does not say it); or what
    ``meanfield export`` writes (:func:`export_payload`).  ``ConfigError`` in one line for a
    missing or unreadable file and for any other content."""
    import hashlib
    import io as _io
    from pathlib import Path

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"init file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"init file {path} is unreadable ({e.strerror or type(e).__name__})") from None
    sha = hashlib.sha256(raw).hexdigest()
    safe = [torch.nn.Sequential, torch.nn.Linear, TwoLayerModule, ActivationModule, Activation,
            Unit, *_TORCH_ACTIVATIONS]
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(_io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:          # pickle.UnpicklingError, RuntimeError (not a zip) …
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"init file {path} is not a torch file of {_SEQUENTIAL}, its state dict "
                          f"or a `meanfield export` ({type(e).__name__}: {first})") from None
    if isinstance(obj, dict) and obj.get("format") == EXPORT_FORMAT:
        act = dict(obj.get("activation") or {})
        activation = get_activation(act.pop("name", "relu"), **act)
        obj = obj.get("state_dict")
    if isinstance(obj, dict):
        obj = _sequential_from_state_dict(obj, activation, path)
    if not isinstance(obj, torch.nn.Module):
        raise ConfigError(f"init file {path} holds a {type(obj).__name__}, not {_SEQUENTIAL} or its "
                          "state dict")
    try:
        unit, meas, c = from_module(obj, offset=True)
    except ConfigError as e:
        raise ConfigError(f"init file {path}: {e}") from None
    return unit, meas, c, sha


def _sequential_from_state_dict(sd: dict, activation, path) -> torch.nn.Sequential:
    keys = set(sd)
    if not ({"0.weight", "2.weight"} <= keys <= {"0.weight", "0.bias", "2.weight", "2.bias"}) \
            or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"init file {path}: a state dict of {_SEQUENTIAL} has the tensors 0.weight, "
                          f"0.bias (optional), 2.weight, 2.bias (optional); got {sorted(map(str, keys))[:6]}")
    if activation is None:
        raise ConfigError(f"init file {path} holds a state dict, which does not say its activation")
    W = sd["0.weight"]
    if W.dim() != 2 or sd["2.weight"].shape != (1, W.shape[0]):
        raise ConfigError(f"init file {path}: 0.weight must be [N, d] and 2.weight [1, N], got "
                          f"{list(W.shape)} and {list(sd['2.weight'].shape)}")
    b, out_b = sd.get("0.bias"), sd.get("2.bias")
    if (b is not None and b.shape != (W.shape[0],)) or (out_b is not None and out_b.numel() != 1):
        raise ConfigError(f"init file {path}: 0.bias must be [N] and 2.bias [1]")
    return sequential_of(activation, W, b, sd["2.weight"][0],
                         offset=None if out_b is None else float(out_b.reshape(-1)[0]))


__all__ = ["ActivationModule", "EXPORT_FORMAT", "LAYOUTS", "TwoLayerModule", "export_payload",
           "from_module", "load_module", "read_activation", "sequential_of", "to_module",
           "torch_activation"]
