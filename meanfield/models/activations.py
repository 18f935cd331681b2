"""Activation functions σ and their derivatives σ' (torch), by name.

Every activation used by a unit φ(x; θ) = a σ(⟨w, x⟩ + b) lives here with its derivative
written out, so sample-based gradients never need autograd.

Conventions
-----------
``erf``      σ(z) = erf(z/√2) = 2Φ(z) − 1 (the scaling under which the Gaussian arcsine
             kernel reads E[σ(w·x) σ(w'·x)] = (2/π) arcsin(w·w'/√((1+|w|²)(1+|w'|²))));
``relu``     σ(z) = max(z, 0);
``tanh``, ``sigmoid`` as usual; ``linear`` σ(z) = z;
``piecewise`` MMN's piecewise-linear σ: s1 for z ≤ t1, s2 for z ≥ t2, linear in between
             (Mei–Montanari–Nguyen 2018, isotropic Gaussians example);
``pwl``      any continuous piecewise-linear σ, constant outside its knots: params z0 < z1 < …
             (knots) and v0, v1, … (values σ(z_j)); e.g. non-monotone activations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT2_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class Activation:
    """A scalar activation σ with its derivative; ``params`` are its constants."""

    name: str
    params: tuple[tuple[str, float], ...] = field(default=())

    def __post_init__(self):
        if self.name not in _FUNCS:
            raise ConfigError(
                f"unknown activation {self.name!r}; choose one of {sorted(_FUNCS)}")
        p = dict(self.params)
        if self.name == "piecewise":
            missing = {"t1", "t2", "s1", "s2"} - set(p)
            if missing:
                raise ConfigError(f"piecewise activation needs {sorted(missing)}")
            if not p["t2"] > p["t1"]:
                raise ConfigError(f"piecewise activation needs t2 > t1, got t1={p['t1']}, t2={p['t2']}")
        elif self.name == "pwl":
            pwl_knots(p)                                   # validates
        elif p:
            raise ConfigError(f"activation {self.name!r} takes no parameters, got {sorted(p)}")

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """σ(z), elementwise."""
        return _FUNCS[self.name][0](z, dict(self.params))

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        """σ'(z), elementwise (the a.e. derivative for piecewise-linear σ)."""
        return _FUNCS[self.name][1](z, dict(self.params))

    def to_dict(self) -> dict:
        """{"name": name, **params}, JSON-serialisable; ``get_activation(d.pop("name"), **d)``
        rebuilds an equal Activation."""
        return {"name": self.name, **dict(self.params)}


def get_activation(name: str | Activation, **params) -> Activation:
    """Activation by name, e.g. ``get_activation("piecewise", t1=0.5, t2=1.5, s1=-2.5, s2=7.5)``."""
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"activation must be a name, got {name!r}")
    return Activation(name, tuple(sorted((k, float(v)) for k, v in params.items())))


def pwl_knots(p: dict) -> tuple[list[float], list[float]]:
    """(knots z_j, values v_j) of a ``pwl`` activation from its params {z0, v0, z1, v1, …}."""
    m = len([k for k in p if k.startswith("z")])
    keys = [f"z{j}" for j in range(m)] + [f"v{j}" for j in range(m)]
    if m < 2 or sorted(keys) != sorted(p):
        raise ConfigError(f"pwl activation needs z0..z(m-1) and v0..v(m-1) with m >= 2, got {sorted(p)}")
    z, v = [p[f"z{j}"] for j in range(m)], [p[f"v{j}"] for j in range(m)]
    if any(b <= a for a, b in zip(z, z[1:])):
        raise ConfigError(f"pwl knots must increase, got {z}")
    return z, v


def pwl_ramps(p: dict) -> tuple[float, list[tuple[float, float]]]:
    """σ = c + Σ_j α_j (z − τ_j)_+ for a ``pwl`` activation: (c, [(α_j, τ_j)])."""
    z, v = pwl_knots(p)
    slopes = [0.0] + [(v[j + 1] - v[j]) / (z[j + 1] - z[j]) for j in range(len(z) - 1)] + [0.0]
    return v[0], [(slopes[j + 1] - slopes[j], z[j]) for j in range(len(z))]


def _pwl(z, p):
    c, ramps = pwl_ramps(p)
    out = torch.full_like(z, c)
    for a, t in ramps:
        out = out + a * torch.relu(z - t)
    return out


def _pwl_d(z, p):
    _, ramps = pwl_ramps(p)
    out = torch.zeros_like(z)
    for a, t in ramps:
        out = out + a * (z > t).to(z.dtype)
    return out


def _pw(z, p):
    t1, t2, s1, s2 = p["t1"], p["t2"], p["s1"], p["s2"]
    return s1 + (s2 - s1) * ((z - t1) / (t2 - t1)).clamp(0.0, 1.0)


def _pw_d(z, p):
    t1, t2, s1, s2 = p["t1"], p["t2"], p["s1"], p["s2"]
    inside = (z > t1) & (z < t2)
    return inside.to(z.dtype) * ((s2 - s1) / (t2 - t1))


_FUNCS = {
    "relu": (lambda z, p: torch.relu(z), lambda z, p: (z > 0).to(z.dtype)),
    "erf": (lambda z, p: torch.erf(z * _SQRT1_2),
            lambda z, p: _SQRT2_PI * torch.exp(-0.5 * z * z)),
    "tanh": (lambda z, p: torch.tanh(z), lambda z, p: 1.0 - torch.tanh(z) ** 2),
    "sigmoid": (lambda z, p: torch.sigmoid(z),
                lambda z, p: torch.sigmoid(z) * (1.0 - torch.sigmoid(z))),
    "linear": (lambda z, p: z, lambda z, p: torch.ones_like(z)),
    "piecewise": (_pw, _pw_d),
    "pwl": (_pwl, _pwl_d),
}

ACTIVATIONS = tuple(sorted(_FUNCS))
