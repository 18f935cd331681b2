"""The bridge between the measure-valued ResNet and a plain ``torch.nn.Module`` ResNet.

:class:`ResidualBlock` and :class:`ResNetModule` are an ordinary ResNet of L blocks of width M
with residual scale 1/(L·M); :func:`to_module` builds one from an L × M particle measure (its
forward is the model's Euler forward), :func:`from_module` gives the (model, measure) back.
Import them from here (``meanfield.models.resnet_torch``); the model module does not import
this one (no cycle).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..measure import ParticleMeasure
from .resnet_unit import residual_activation

if TYPE_CHECKING:
    from .resnet import ResNet


class ResidualBlock(torch.nn.Module):
    """x ↦ x + scale · Σ_j u_j σ(⟨w_j, x⟩ + b_j) with M units (U [M, D], W [M, D], b [M])."""

    def __init__(self, D: int, M: int, activation="tanh", bias: bool = True, scale: float = 1.0,
                 dtype=torch.float32):
        super().__init__()
        self.act = residual_activation(activation)
        self.scale = float(scale)
        self.U = torch.nn.Parameter(torch.zeros(M, D, dtype=dtype))
        self.W = torch.nn.Parameter(torch.zeros(M, D, dtype=dtype))
        self.b = torch.nn.Parameter(torch.zeros(M, dtype=dtype)) if bias else None

    def forward(self, x):
        """x [..., D] → x + scale · σ(x Wᵀ + b) U, [..., D]."""
        z = x @ self.W.T
        if self.b is not None:
            z = z + self.b
        return x + self.scale * (self.act(z) @ self.U)


class ResNetModule(torch.nn.Module):
    """A plain ResNet: x_0 = A x_in, L residual blocks of width M with scale 1/(L·M),
    output B x_L; ``loss(x_in, y)`` is the model's loss (mean over the batch)."""

    def __init__(self, A, B, L: int, M: int, *, activation="tanh", bias: bool = True,
                 loss: str = "squared", dtype=torch.float32):
        super().__init__()
        self.register_buffer("A", torch.as_tensor(A, dtype=dtype))
        self.register_buffer("B", torch.as_tensor(B, dtype=dtype))
        self.activation_name = residual_activation(activation).to_dict()["name"]
        self.loss_name = loss
        self.bias = bias
        D = self.A.shape[0]
        self.blocks = torch.nn.ModuleList(
            ResidualBlock(D, M, activation, bias, 1.0 / (L * M), dtype) for _ in range(L))

    def forward(self, x_in):
        """x_in [n, d_in] → B x_L [n, d_out] (x_0 = A x_in, then the L blocks)."""
        x = x_in @ self.A.T
        for blk in self.blocks:
            x = blk(x)
        return x @ self.B.T

    def loss(self, x_in, y):
        """The batch-mean loss, as :meth:`ResNet.loss`: mean_k |out_k − y_k|² (squared, y
        [n, d_out]) or ``cross_entropy(out, y)`` (integer labels y [n]); a scalar tensor."""
        out = self.forward(x_in)
        if self.loss_name == "squared":
            return ((out - y) ** 2).sum(-1).mean()
        return torch.nn.functional.cross_entropy(out, y)


def to_module(model: ResNet, measure: ParticleMeasure, *, dtype=None) -> ResNetModule:
    """The plain ResNet of an L × M particle measure (uniform weights, M units in each of
    L layers): block l holds layer l's units in particle order, residual scale 1/(L·M).

    Its forward is the model's Euler forward; L·M × its parameter gradient is the
    conditional-OT gradient ∇_θ δL/δμ."""
    if not isinstance(measure, ParticleMeasure):
        raise ConfigError(f"to_module needs a ParticleMeasure, got {type(measure).__name__}")
    if measure.positions.dim() != 2:
        raise ConfigError("to_module converts one replica: positions must be [N, P]")
    theta = model.check_theta(measure.positions)[0]
    layers = model.layers(measure.layer, measure.N)
    grid = layers.grid()
    if grid is None:
        raise ConfigError(f"to_module needs the same number of units in every layer, got widths {layers.widths}")
    if measure.weights is not None:
        w = measure.weights.double()
        if (w - 1.0 / measure.N).abs().max() > 1e-12:
            raise ConfigError("to_module needs uniform weights 1/N (residual scale 1/(L·M))")
    L, M = grid
    dtype = dtype or theta.dtype
    mod = ResNetModule(model.A, model.B, L, M, activation=model.unit.activation, bias=model.unit.bias,
                       loss=model.loss_name, dtype=dtype).to(theta.device)
    with torch.no_grad():
        for l, blk in enumerate(mod.blocks):
            u, w, b = model.unit.split(layers.take(theta[None], l)[0])
            blk.U.copy_(u)
            blk.W.copy_(w)
            if b is not None:
                blk.b.copy_(b)
    return mod


def from_module(module: ResNetModule):
    """(model, measure) from a plain ResNet of L blocks of width M: particles θ = (u, w, b) of
    block l at layer s = l/L with weights 1/(L·M), A, B and the activation copied."""
    from .resnet import ResNet, grid_measure   # not at the top: models.resnet re-exports this module
    if not isinstance(module, ResNetModule):
        raise ConfigError(f"from_module needs a ResNetModule, got {type(module).__name__}")
    L = len(module.blocks)
    if L < 1:
        raise ConfigError("the module has no residual blocks")
    model = ResNet(module.A.detach().double(), module.B.detach().double(),
                   activation=module.activation_name, bias=module.bias, loss=module.loss_name)
    parts = []
    for blk in module.blocks:
        cols = [blk.U.detach(), blk.W.detach()] + ([blk.b.detach()[:, None]] if blk.b is not None else [])
        parts.append(torch.cat(cols, -1))
    widths = {p.shape[0] for p in parts}
    if len(widths) != 1:
        raise ConfigError(f"blocks of different widths {sorted(widths)}: not an L × M ResNet")
    return model, grid_measure(torch.stack(parts), param_names=model.param_names)


__all__ = ["ResNetModule", "ResidualBlock", "from_module", "to_module"]
