"""The cells of the 2-D grid solver (``meanfield.pde.grid2d``) and what is measured on them.

Grid.  :class:`Grid2D` is a box [x₀, x₁] × [y₀, y₁] of the plane or the flat torus
[0, L)² (periodic), cut into nx × ny cells of size hx × hy; an array on the grid,
P [nx, ny], holds cell averages of a density (index i along x first).  The grid gives its
geometry (cell centres and faces, the mass Σ P hx hy, folding positions onto the torus),
builds densities on itself (mass-exact Gaussians, wrapped on the torus; the uniform law),
turns a density into a weighted point set (:meth:`Grid2D.points`, whose W2 error
:meth:`Grid2D.quantisation` bounds) and draws i.i.d. samples from it
(:meth:`Grid2D.sample`, a reference for the distances below).

Operators on the cells, used by the solver: the dilation of a boolean cell mask (its active
cells) and tridiagonal systems solved line by line by the Thomas algorithm, vectorised over
lines, with Sherman–Morrison for the cyclic systems of the torus (its dimension-split
implicit step).

Distances and entropy estimates between particles and a grid density: W2 (POT's
``ot.emd2``, cells as a weighted measure, periodic ground cost on the torus) and a
Kozachenko–Leonenko entropy estimate for particles (periodic on the torus).

``meanfield.pde.grid2d`` re-exports :class:`Grid2D`, :func:`ground_cost`, :func:`w2_grid`
and :func:`knn_neg_entropy`; ``meanfield.pde`` all but :func:`ground_cost`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from ..errors import ConfigError, check_finite_float, check_positive_int


# ------------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid2D:
    """nx × ny cells on [lo₀, hi₀] × [lo₁, hi₁]; ``periodic`` makes it a flat torus.

    Build with :meth:`box` or :meth:`torus`.  Arrays on the grid are [nx, ny] (x first)."""

    lo: tuple
    hi: tuple
    cells: tuple
    periodic: bool = False

    def __post_init__(self):
        lo = tuple(check_finite_float("lo", v) for v in self.lo)
        hi = tuple(check_finite_float("hi", v) for v in self.hi)
        if len(lo) != 2 or len(hi) != 2 or len(self.cells) != 2:
            raise ConfigError(f"a 2-D grid needs two bounds and two cell counts, got lo={self.lo}, "
                              f"hi={self.hi}, cells={self.cells}")
        cells = tuple(check_positive_int("cells", c) for c in self.cells)
        for a, b in zip(lo, hi):
            if not b > a:
                raise ConfigError(f"the grid's upper bound {b} must exceed its lower bound {a}")
        if min(cells) < 3:
            raise ConfigError(f"cells must be >= 3 per direction, got {cells}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "cells", cells)

    @classmethod
    def box(cls, lo, hi, cells) -> "Grid2D":
        """The box [lo₀, hi₀] × [lo₁, hi₁] (numbers give a square) with ``cells`` cells per
        direction (an int or a pair); outflow boundary."""
        lo = (lo, lo) if np.isscalar(lo) else tuple(lo)
        hi = (hi, hi) if np.isscalar(hi) else tuple(hi)
        cells = (cells, cells) if np.isscalar(cells) else tuple(cells)
        return cls(lo, hi, cells, periodic=False)

    @classmethod
    def torus(cls, cells, period: float = 2 * math.pi) -> "Grid2D":
        """The flat torus [0, L)², L = ``period``, with ``cells`` cells per direction."""
        L = check_finite_float("period", period, positive=True)
        cells = (cells, cells) if np.isscalar(cells) else tuple(cells)
        return cls((0.0, 0.0), (L, L), cells, periodic=True)

    # ---- geometry --------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """(nx, ny): the shape of an array on the grid (= ``cells``)."""
        return self.cells

    @property
    def h(self) -> tuple:
        """(hx, hy)."""
        return tuple((b - a) / n for a, b, n in zip(self.lo, self.hi, self.cells))

    @property
    def area(self) -> float:
        """hx · hy."""
        hx, hy = self.h
        return hx * hy

    @property
    def period(self) -> np.ndarray:
        """(Lx, Ly) — the box's side lengths, the torus's periods."""
        return np.array([b - a for a, b in zip(self.lo, self.hi)])

    def axes(self) -> tuple:
        """Cell-centre coordinates along x [nx] and y [ny]."""
        return tuple(a + (np.arange(n) + 0.5) * h for a, n, h in zip(self.lo, self.cells, self.h))

    def faces(self) -> tuple:
        """Face coordinates along x [nx + 1] and y [ny + 1]."""
        return tuple(a + np.arange(n + 1) * h for a, n, h in zip(self.lo, self.cells, self.h))

    @property
    def centers(self) -> np.ndarray:
        """Cell centres [nx, ny, 2]."""
        xc, yc = self.axes()
        X, Y = np.meshgrid(xc, yc, indexing="ij")
        return np.stack([X, Y], -1)

    def mass(self, P) -> float:
        """Σ_c P_c hx hy."""
        return float(np.sum(P) * self.area)

    def wrap(self, theta):
        """Positions [..., 2] folded into [lo, hi) (torus only; the box returns them unchanged)."""
        if not self.periodic:
            return theta
        lo = np.asarray(self.lo)
        return lo + np.mod(np.asarray(theta, dtype=np.float64) - lo, self.period)

    # ---- densities on the grid ---------------------------------------------------------
    def gaussian(self, mean, std) -> np.ndarray:
        """Cell averages [nx, ny] of N(mean, diag(std²)) (numbers give an isotropic law),
        mass-exact per cell (products of normal CDF differences); on the torus the wrapped
        Gaussian (images within ±4 periods).  Normalised to mass 1 on the grid."""
        mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (2,))
        std = np.broadcast_to(np.asarray(std, dtype=np.float64), (2,))
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ConfigError(f"gaussian needs a finite mean and std > 0, got mean={mean}, std={std}")
        parts = []
        for c, f in enumerate(self.faces()):
            images = range(-4, 5) if self.periodic else (0,)
            m = sum(np.diff(norm.cdf(f + k * self.period[c], loc=mean[c], scale=std[c])) for k in images)
            parts.append(m)
        M = np.outer(parts[0], parts[1])
        if not M.sum() > 0:
            raise ConfigError("the initial law puts no mass on the grid")
        return M / (M.sum() * self.area)

    def uniform(self) -> np.ndarray:
        """The uniform density [nx, ny] of mass 1."""
        return np.full(self.cells, 1.0 / (self.area * np.prod(self.cells)))

    def points(self, P, *, sub: int = 1, tol: float = 1e-12):
        """The grid density as a weighted point set: every cell with mass > ``tol`` × total
        split into sub × sub equal sub-cells, each a point at its centre carrying an equal
        share.  Returns (points [K, 2], weights [K], summing to 1).  The W2 distance between
        the piecewise-constant density and these points is at most
        √((hx² + hy²)/12)/sub (:meth:`quantisation`)."""
        sub = check_positive_int("sub", sub)
        m = np.asarray(P, dtype=np.float64) * self.area
        keep = m > tol * m.sum()
        c = self.centers[keep]                                         # (K0, 2)
        w = m[keep]
        hx, hy = self.h
        o = (np.arange(sub) + 0.5) / sub - 0.5
        off = np.stack(np.meshgrid(o * hx, o * hy, indexing="ij"), -1).reshape(-1, 2)   # (sub², 2)
        pts = (c[:, None, :] + off[None]).reshape(-1, 2)               # (K0·sub², 2)
        ws = np.repeat(w / sub ** 2, sub ** 2)
        return pts, ws / ws.sum()

    def quantisation(self, sub: int = 1) -> float:
        """Upper bound √((hx² + hy²)/12)/sub on W2(piecewise-constant ρ, :meth:`points`)."""
        hx, hy = self.h
        return math.sqrt((hx * hx + hy * hy) / 12) / sub

    def sample(self, P, n: int, *, generator: torch.Generator) -> np.ndarray:
        """n i.i.d. draws [n, 2] from the piecewise-constant density P (a cell by its mass,
        then uniform inside it), from ``generator``."""
        n = check_positive_int("n", n)
        m = torch.as_tensor(np.asarray(P, dtype=np.float64).ravel() * self.area)
        if not (torch.isfinite(m).all() and (m >= 0).all() and m.sum() > 0):
            raise ConfigError("sample needs a finite, non-negative density with positive mass")
        idx = torch.multinomial(m / m.sum(), n, replacement=True, generator=generator).numpy()
        u = torch.rand((n, 2), generator=generator, dtype=torch.float64).numpy()
        i, j = np.unravel_index(idx, self.cells)
        hx, hy = self.h
        return np.stack([self.lo[0] + (i + u[:, 0]) * hx, self.lo[1] + (j + u[:, 1]) * hy], -1)


# ------------------------------------------------------------------------------------------
# operators on the cells: mask dilation and tridiagonal line solves
# ------------------------------------------------------------------------------------------
def _dilate(mask, r: int, periodic: bool):
    """Boolean mask [nx, ny] grown by r cells in every direction (square neighbourhood)."""
    if r <= 0 or mask.all():
        return mask
    if periodic:
        out = mask.copy()
        for dx in range(-r, r + 1):
            rolled = np.roll(mask, dx, axis=0)
            for dy in range(-r, r + 1):
                out |= np.roll(rolled, dy, axis=1)
        return out
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=r)


def _thomas(sub, diag, sup, rhs):
    """Solve tridiagonal systems line by line (Thomas algorithm, vectorised over lines):
    sub [m, n−1] (S[k+1, k]), diag [m, n], sup [m, n−1] (S[k, k+1]), rhs [m, n] or
    [m, n, r] → x of rhs's shape.  Stable without pivoting for diagonally dominant S."""
    m, n = diag.shape
    extra = rhs.shape[2:]
    cp = np.empty((m, n))
    dp = np.empty(rhs.shape)
    w = diag[:, 0]
    cp[:, 0] = (sup[:, 0] / w) if n > 1 else 0.0
    dp[:, 0] = rhs[:, 0] / w.reshape((m,) + (1,) * len(extra))
    for k in range(1, n):
        w = diag[:, k] - sub[:, k - 1] * cp[:, k - 1]
        if k < n - 1:
            cp[:, k] = sup[:, k] / w
        a = sub[:, k - 1].reshape((m,) + (1,) * len(extra))
        dp[:, k] = (rhs[:, k] - a * dp[:, k - 1]) / w.reshape((m,) + (1,) * len(extra))
    x = np.empty(rhs.shape)
    x[:, -1] = dp[:, -1]
    for k in range(n - 2, -1, -1):
        x[:, k] = dp[:, k] - cp[:, k].reshape((m,) + (1,) * len(extra)) * x[:, k + 1]
    return x


def _cyclic_thomas(sub, diag, sup, corners, rhs):
    """Cyclic tridiagonal systems (corners S[0, n−1] = top, S[n−1, 0] = bottom, [m] each) by
    Sherman–Morrison on top of :func:`_thomas` (Numerical Recipes' ``cyclic``)."""
    top, bottom = corners
    gamma = -diag[:, 0]
    d2 = diag.copy()
    d2[:, 0] -= gamma
    d2[:, -1] -= bottom * top / gamma
    u = np.zeros_like(rhs)
    u[:, 0], u[:, -1] = gamma, bottom
    yz = _thomas(sub, d2, sup, np.stack([rhs, u], -1))            # (m, n, 2)
    y, z = yz[..., 0], yz[..., 1]
    vy = y[:, 0] + top / gamma * y[:, -1]
    vz = z[:, 0] + top / gamma * z[:, -1]
    return y - (vy / (1.0 + vz))[:, None] * z


# ------------------------------------------------------------------------------------------
# distances and entropy estimates between particles and a grid density
# ------------------------------------------------------------------------------------------
def ground_cost(x, y, period=None) -> np.ndarray:
    """Squared distances [n, m] between x [n, 2] and y [m, 2]: Euclidean, or on the flat
    torus with periods ``period`` [2], Σ_c min(|Δ_c| mod L_c, L_c − |Δ_c| mod L_c)²."""
    d = np.abs(np.asarray(x, np.float64)[:, None, :] - np.asarray(y, np.float64)[None, :, :])
    if period is not None:
        L = np.asarray(period, np.float64)
        d = np.mod(d, L)
        d = np.minimum(d, L - d)
    return (d * d).sum(-1)


def w2_grid(grid: Grid2D, P, theta, weights=None, *, sub: int = 2, tol: float = 1e-9) -> float:
    """W2 between the grid density P [nx, ny] and the particles θ [N, 2] (weights default
    uniform): exact OT (POT's network simplex ``ot.emd2``) between the weighted cell points
    of :meth:`Grid2D.points` and the particles, squared Euclidean ground cost on the box,
    the periodic one on the torus.  The cell representation adds at most
    ``grid.quantisation(sub)`` to the distance; cells below ``tol`` of the mass are dropped
    (they held 4e-8 of it in pde2d-teacher's small mode, while halving the problem)."""
    import ot

    theta = np.asarray(theta.detach().cpu().double().numpy() if isinstance(theta, torch.Tensor)
                       else theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != 2:
        raise ConfigError(f"w2_grid needs particles of shape [N, 2], got {list(theta.shape)}")
    pts, wp = grid.points(P, sub=sub, tol=tol)
    a = np.full(len(theta), 1.0 / len(theta)) if weights is None else np.asarray(weights, np.float64)
    a = a / a.sum()
    M = ground_cost(theta, pts, grid.period if grid.periodic else None)
    return float(math.sqrt(max(ot.emd2(a, wp, M, numItermax=20_000_000), 0.0)))


def knn_neg_entropy(theta, *, k: int = 1, period=None):
    """Kozachenko–Leonenko estimate of ∫ρ log ρ (minus the differential entropy, the sign
    that enters F_β) from samples θ [N, d] (→ float) or [B, N, d] (→ array [B]):
    −``meanfield.diagnostics.knn_entropy`` (ψ(N) − ψ(k) + log V_d + (d/N) Σ log ε_i, the
    distance ε_i to the k-th nearest neighbour; periodic on the torus with ``period``) —
    Chizat 2022's ``kNN_entropy_est`` with k = 1."""
    from ..diagnostics import knn_entropy

    return -knn_entropy(theta, k=k, period=period)
