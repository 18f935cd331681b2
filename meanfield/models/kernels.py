"""Closed-form population kernels for Gaussian inputs x ~ N(0, I_d).

For units without bias, φ(x; θ) = a σ(⟨w, x⟩), the pair potential factorises

    U(θ, θ') = E[φ(x; θ) φ(x; θ')] = a a' κ(w, w'),       E[φ(x; θ)] = a μ(w),

and κ depends on w, w' only through p = ⟨w, w'⟩, |w|, |w'|.  Its gradient is always a
combination of w' and w:

    ∇_w κ(w, w') = α(p, |w|, |w'|) w' + β(p, |w|, |w'|) w.

A kernel is therefore written once as scalar formulas (κ, α, β) and (μ, γ) with
∇_w μ = γ w, in terms of an ``ops`` namespace (``sqrt``, ``acos``, ``asin``, ``clamp``)
that numpy arrays, torch tensors and KeOps LazyTensors all provide (see
``meanfield.interact.ops``).  The interaction backends lift the pair formula to sums over
particles; they never know which kernel they sum.

Kernels
-------
``relu``  (arc-cosine kernel of degree 1; Cho & Saul 2009), with c = p/(|w||w'|), φ = arccos c:
    κ = |w||w'| (sin φ + (π − φ) cos φ) / (2π),    μ = |w| / √(2π)
    α = (π − φ)/(2π),   β = |w'| sin φ / (2π |w|),  γ = 1 / (√(2π) |w|)
``erf``   σ(z) = erf(z/√2) (arcsine kernel; Williams 1997), A = 1 + |w|², B = 1 + |w'|²,
          s = p / √(AB):
    κ = (2/π) arcsin s,    μ = 0
    α = (2/π) / √(AB (1 − s²)),   β = −α p / A
"""
from __future__ import annotations

import math

from ..errors import ConfigError
from .units import Unit

_TINY = 1e-30
_TWO_PI = 2.0 * math.pi
_SQRT_2PI = math.sqrt(2.0 * math.pi)


class GaussianKernel:
    """Base class: scalar formulas of a closed-form Gaussian kernel (see module docstring)."""

    name: str = ""

    def coeffs(self, ops, p, nx, ny):
        """(κ, α, β) from p = ⟨w, w'⟩ and the norms nx = |w|, ny = |w'| (any broadcastable arrays)."""
        raise NotImplementedError

    def value(self, ops, p, nx, ny):
        """κ(w, w') only (cheaper than ``coeffs`` where the backend can skip α, β)."""
        return self.coeffs(ops, p, nx, ny)[0]

    def mean(self, ops, nx):
        """(μ, γ): E[σ(⟨w, x⟩)] and the factor γ in ∇_w μ = γ w, from nx = |w|."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLUKernel(GaussianKernel):
    """σ = ReLU: the arc-cosine kernel of degree 1 (Cho & Saul 2009), κ = |w||w'| (sin φ +
    (π − φ) cos φ)/(2π) with cos φ = ⟨w, w'⟩/(|w||w'|), μ = |w|/√(2π) (module docstring)."""

    name = "relu"

    def coeffs(self, ops, p, nx, ny):
        nn = nx * ny
        c = ops.clamp(p / (nn + _TINY), -1, 1)
        phi = ops.acos(c)
        s = ops.sqrt(1 - c * c)
        pi_phi = math.pi - phi
        kappa = (nn * s + pi_phi * p) * (1 / _TWO_PI)
        alpha = pi_phi * (1 / _TWO_PI)
        beta = ny * s / (nx + _TINY) * (1 / _TWO_PI)
        return kappa, alpha, beta

    def value(self, ops, p, nx, ny):
        nn = nx * ny
        c = ops.clamp(p / (nn + _TINY), -1, 1)
        return (nn * ops.sqrt(1 - c * c) + (math.pi - ops.acos(c)) * p) * (1 / _TWO_PI)

    def mean(self, ops, nx):
        return nx * (1 / _SQRT_2PI), 1 / ((nx + _TINY) * _SQRT_2PI)


class ErfKernel(GaussianKernel):
    """σ = erf(·/√2): the arcsine kernel (Williams 1997), κ = (2/π) arcsin(⟨w, w'⟩ /
    √((1 + |w|²)(1 + |w'|²))), μ = 0 (σ is odd; module docstring)."""

    name = "erf"

    def coeffs(self, ops, p, nx, ny):
        A = 1 + nx * nx
        q = 1 / ops.sqrt(A * (1 + ny * ny))
        s = ops.clamp(p * q, -1, 1)
        kappa = ops.asin(s) * (2 / math.pi)
        alpha = q / ops.sqrt(1 - s * s) * (2 / math.pi)
        beta = -alpha * p / A
        return kappa, alpha, beta

    def value(self, ops, p, nx, ny):
        s = ops.clamp(p / ops.sqrt((1 + nx * nx) * (1 + ny * ny)), -1, 1)
        return ops.asin(s) * (2 / math.pi)

    def mean(self, ops, nx):
        return 0 * nx, 0 * nx


_KERNELS = {"relu": ReLUKernel(), "erf": ErfKernel()}
CLOSED_FORM_ACTIVATIONS = tuple(sorted(_KERNELS))


def gaussian_kernel(unit: Unit) -> GaussianKernel:
    """The closed-form kernel of ``unit`` for x ~ N(0, I_d), or ConfigError if there is none."""
    if unit.bias:
        raise ConfigError("closed-form Gaussian potentials need units without bias (bias=False)")
    name = unit.activation.name
    if name not in _KERNELS:
        raise ConfigError(
            f"no closed-form Gaussian kernel for activation {name!r}; "
            f"closed forms exist for {list(CLOSED_FORM_ACTIVATIONS)} (use a sample-based task)")
    return _KERNELS[name]


def has_gaussian_kernel(unit: Unit) -> bool:
    """Whether :func:`gaussian_kernel` has a closed form for ``unit``: no bias and σ in
    ``CLOSED_FORM_ACTIVATIONS`` (relu, erf)."""
    return (not unit.bias) and unit.activation.name in _KERNELS
