"""The grid PDE linearised at its Gibbs state: asymptotic decay rates from the spectrum.

Near the self-consistent Gibbs law P* = e^{−βΦ*}/Z, Φ* = Ψ_λ(·; P*), of a
:class:`~meanfield.pde.GridDD` (docs/design.md §1: ∂_t ρ = 2ξ∇·(ρ∇Ψ_λ) + 2ξβ⁻¹Δρ) the grid
density relaxes as P(t) − P* ≈ Σ_j c_j e^{−μ_j t} v_j, where 0 < μ_1 ≤ μ_2 ≤ … are the
non-zero eigenvalues of minus the grid's semi-discrete generator linearised at P*.  This
module assembles that linear operator and finds its smallest eigenvalues; μ_1 is the
asymptotic rate of every quantity linear in P − P* (the Gibbs residual ‖G(P) − P‖₁, the L²
distance), and 2μ_1 that of the free-energy gap F_β(P) − F_β(P*), which is quadratic in it.

The linearisation.  GridDD's Scharfetter–Gummel flux across a face between cells p → q is
J = (D/h)[B(−α) P_p − B(α) P_q], α = −β(Φ_q − Φ_p), D = 2ξ/β, B(x) = x/(eˣ − 1).  Since
B(−α) = e^{α} B(α), J = (D/h) B(α) e^{−βΦ_q} (u_p − u_q) with u = P e^{βΦ}, and u is constant
at P*.  So to first order in δP (and δΦ = K δP, Φ affine in P through the pair kernel)

    δJ = (D/h) B(α*) P*_q (w_p − w_q),     w = δP / P* + β K δP,

and the linearised grid PDE is dδP/dt = −A δP with

    A = L H,    H = diag(1/P*) + β K,    L = Σ_faces c_f (e_p − e_q)(e_p − e_q)ᵀ,
    c_f = (D/h²) B(α*_f) P*_q  (> 0),     K_{cc'} = U(θ_c, θ_c') hx hy,

L a weighted graph Laplacian (symmetric, positive semi-definite, kernel: the constants) and
H symmetric positive definite (U ⪰ 0).  A is similar to H^{1/2} L H^{1/2}: its spectrum is
real and non-negative, with one zero eigenvalue, the mass mode v_0 = H⁻¹·1 (the flux
conserves mass); its other eigenvectors have zero mass.  Dropping βK gives the Fokker–Planck
operator in the frozen potential Φ*, which is not the mean-field flow's linearisation (the
tests show that its rate differs).

Assembly on the flat torus (``GridDD`` on ``Grid2D.torus``) with a translation-invariant
kernel U(θ, θ') = u(θ − θ') (the torus MMD): L is a sparse matrix (5 entries per row), K a
block-circulant matrix whose column is read off the solver itself, u_c = Φ(δ_{c₀})_c −
Φ(0)_c with unit mass on one cell, so K is exactly the kernel the solver uses; its 2-D DFT
has only as many non-zero entries r as the kernel has Fourier modes ((2K+1)² = 121 for the
torus MMD), and K = Q diag(λ) Qᵀ with r real Fourier columns Q.  The eigenvalues nearest a
shift σ < 0 come from ``scipy.sparse.linalg.eigs`` in shift-invert mode, (A − σI)⁻¹ applied
by a sparse LU of L diag(1/P*) − σI and the Woodbury identity for the rank-r kernel term:
0 (the mass mode, reported as ``mass_mode`` and dropped) then μ_1, μ_2, ….  A kernel that is
not translation invariant, or a box, is refused (ConfigError).

Time.  The rates are in the solver's time t.  GridDD's backward Euler step damps a mode by
about 1/(1 + μ dt) per step, so a run with step dt measures log(1 + μ dt)/dt ≈ μ − μ²dt/2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import ConfigError, DivergenceError, check_positive_int
from .radial import bernoulli

__all__ = ["LinearisedGridFlow", "linearise_at_gibbs", "spectral_rates", "spectral_sequence"]


@dataclass
class LinearisedGridFlow:
    """dδP/dt = −A δP, A = L (diag(1/P*) + β Q diag(lam) Qᵀ), on the n = nx·ny cells
    (vectors flattened with x first, as ``P.ravel()``).

    P : the Gibbs state P* [nx, ny]; beta : β; L : the face Laplacian (scipy sparse CSR
    [n, n]); Q [n, r], lam [r] : the kernel term K = Q diag(lam) Qᵀ (hx hy included);
    gibbs_residual : ‖G(P*) − P*‖₁ of the state linearised at."""

    P: np.ndarray
    beta: float
    L: sp.csr_matrix
    Q: np.ndarray
    lam: np.ndarray
    gibbs_residual: float

    @property
    def n(self) -> int:
        """The number of cells."""
        return self.P.size

    def kernel(self, x) -> np.ndarray:
        """K x [n] for x [n]."""
        return self.Q @ (self.lam * (self.Q.T @ x))

    def generator(self, x, nonlocal_term: bool = True) -> np.ndarray:
        """−A x [n] for x [n]: the linearised grid PDE's right-hand side at P* + x.  With
        ``nonlocal_term=False`` the βK term is left out (the frozen-potential operator)."""
        w = x / self.P.ravel()
        if nonlocal_term:
            w = w + self.beta * self.kernel(x)
        return -(self.L @ w)

    def eigenvalues(self, k: int = 3, *, nonlocal_term: bool = True, sigma: float | None = None):
        """The k smallest non-zero eigenvalues μ_1 ≤ … ≤ μ_k of A (decay rates of δP) and
        the eigenvalue of the mass mode (≈ 0, round-off), by shift-invert ``eigs`` around
        ``sigma`` < 0 (default −¼ of the smallest non-zero eigenvalue of the diagonal
        part's scale, see the module docstring).  Returns (mu [k], mass_mode, max |Im μ|)."""
        k = check_positive_int("k", k)
        n = self.n
        if k + 2 >= n:
            raise ConfigError(f"k must be < n - 2 = {n - 2} on this grid, got {k}")
        Pinv = sp.diags(1.0 / self.P.ravel())
        if sigma is None:
            # the order of magnitude of μ_1: the Laplacian's smallest non-zero mode, weighted by P*
            sigma = -0.25 * _fiedler_scale(self.L, self.P)
        if not sigma < 0:
            raise ConfigError(f"sigma must be < 0 (left of the spectrum), got {sigma}")
        A0 = (self.L @ Pinv - sigma * sp.identity(n)).tocsc()
        lu = spla.splu(A0)
        if nonlocal_term and self.Q.shape[1]:
            U = self.beta * (self.L @ (self.Q * self.lam))                   # [n, r]
            Z = lu.solve(np.ascontiguousarray(U))                            # A0⁻¹ U
            C = np.eye(self.Q.shape[1]) + self.Q.T @ Z                        # capacitance

            def solve(b):
                y = lu.solve(b)
                return y - Z @ np.linalg.solve(C, self.Q.T @ y)
        else:
            solve = lu.solve
        op = spla.LinearOperator((n, n), matvec=lambda x: -self.generator(np.asarray(x).ravel(), nonlocal_term),
                                 dtype=np.float64)
        inv = spla.LinearOperator((n, n), matvec=lambda b: solve(np.asarray(b, dtype=np.float64).ravel()),
                                  dtype=np.float64)
        v0 = np.ones(n)
        try:
            vals = spla.eigs(op, k=k + 1, sigma=sigma, OPinv=inv, which="LM", v0=v0,
                             return_eigenvectors=False, tol=1e-12, maxiter=10_000)
        except spla.ArpackNoConvergence as e:
            raise DivergenceError(f"eigs did not converge for the {k + 1} eigenvalues nearest "
                                  f"sigma={sigma:g}: {e}") from None
        vals = vals[np.argsort(vals.real)]
        return np.sort(vals.real[1:]), float(vals.real[0]), float(np.abs(vals.imag).max())


def _fiedler_scale(L, P) -> float:
    """A scale of the smallest non-zero eigenvalue of L diag(1/P): mean face weight / mean
    P, times (2π/n)² for n cells per direction — the smallest mode of a uniform periodic
    Laplacian."""
    n_side = math.sqrt(P.size)
    return float(L.diagonal().mean() / 4 / P.mean() * (2 * math.pi / n_side) ** 2)


def linearise_at_gibbs(dd, P, beta: float, t: float = 0.0) -> LinearisedGridFlow:
    """The grid PDE of ``dd`` (a :class:`~meanfield.pde.GridDD` on a torus, task with a
    translation-invariant pair kernel) linearised at its Gibbs state ``P`` [nx, ny] for
    inverse temperature ``beta`` and ξ = dd.xi(t) (module docstring).  ``P`` should be a
    fixed point (``dd.gibbs_fixed_point``); its residual is recorded, not checked."""
    g = dd.grid
    if not g.periodic:
        raise ConfigError("the linearised grid flow is assembled on a torus grid only "
                          "(its kernel term is block-circulant there)")
    if not (math.isfinite(beta) and beta > 0):
        raise ConfigError(f"the linearisation needs 0 < beta < inf, got {beta}")
    P = np.asarray(P, dtype=np.float64)
    if P.shape != g.cells or not np.isfinite(P).all() or not (P > 0).all():
        raise ConfigError(f"P must be a positive array of shape {g.cells}")
    full = np.ones(g.cells, bool)
    phi = dd.potential(P, full)[0]
    nx, ny = g.cells
    hx, hy = g.h
    D = 2.0 * dd.xi(t) / beta
    idx = np.arange(nx * ny).reshape(nx, ny)
    rows, cols, vals = [], [], []
    for axis, h in ((0, hx), (1, hy)):
        q = np.roll(idx, -1, axis)
        alpha = -beta * (np.roll(phi, -1, axis) - phi)
        c = ((D / (h * h)) * bernoulli(alpha) * np.roll(P, -1, axis)).ravel()
        p, q = idx.ravel(), q.ravel()
        rows += [p, q, p, q]
        cols += [p, q, q, p]
        vals += [c, c, -c, -c]
    L = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(nx * ny, nx * ny))
    Q, lam = _circulant_kernel(dd, g, full)
    residual = float(np.abs(dd.gibbs_map(P, beta) - P).sum() * g.area)
    return LinearisedGridFlow(P=P, beta=float(beta), L=L, Q=Q, lam=lam, gibbs_residual=residual)


def _circulant_kernel(dd, g, full):
    """K = Q diag(lam) Qᵀ on the torus grid, K_{cc'} = U(θ_c, θ_c') hx hy, from the solver's
    own potential: u = Φ(unit mass on cell 0) − Φ(0); checked against the column of a second
    cell (ConfigError unless the kernel is translation invariant).  Q [n, r] real Fourier
    columns (cos, and sin where not self-conjugate) of the non-zero DFT modes of u."""
    nx, ny = g.cells
    zero = np.zeros(g.cells)
    phi0 = dd.potential(zero, full)[0]

    def column(i, j):
        e = zero.copy()
        e[i, j] = 1.0 / g.area
        return (dd.potential(e, full)[0] - phi0) * g.area             # K[:, (i, j)]

    u = column(0, 0)
    i1, j1 = nx // 3 + 1, ny // 2
    shifted = np.roll(np.roll(u, i1, 0), j1, 1)
    if np.abs(column(i1, j1) - shifted).max() > 1e-9 * max(np.abs(u).max(), 1e-300):
        raise ConfigError("the task's pair kernel is not translation invariant on this torus grid: "
                          "the linearised flow needs U(θ, θ') = u(θ − θ')")
    uh = np.fft.fft2(u).real / (nx * ny)        # K = Σ_k uh_k e_k e_kᴴ, e_k(c) = e^{2πi k·c/n}
    keep = np.abs(uh) > 1e-12 * np.abs(uh).max()
    I, J = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    cols, lam, seen = [], [], set()
    for p, q in zip(*np.nonzero(keep)):
        if (p, q) in seen:
            continue
        pc, qc = (-p) % nx, (-q) % ny
        seen |= {(p, q), (pc, qc)}
        ang = 2 * np.pi * (p * I / nx + q * J / ny)
        if (pc, qc) == (p, q):                   # self-conjugate: e_k real
            cols.append(np.cos(ang).ravel())
            lam.append(uh[p, q])
        else:                                    # e_k e_kᴴ + conj = 2(cos cosᵀ + sin sinᵀ)
            cols += [np.cos(ang).ravel(), np.sin(ang).ravel()]
            lam += [2 * uh[p, q], 2 * uh[p, q]]
    Q = np.stack(cols, -1) if cols else np.zeros((nx * ny, 0))
    return Q, np.array(lam)


def spectral_rates(dd, beta: float, P0=None, *, k: int = 3, tol: float = 1e-11, t: float = 0.0) -> dict:
    """The asymptotic rates of ``dd``'s grid PDE at inverse temperature ``beta``: its Gibbs
    fixed point (``dd.gibbs_fixed_point`` from ``P0``, default uniform), the linearised flow
    there (:func:`linearise_at_gibbs`) and its k smallest non-zero eigenvalues.  Returns
    {"cells", "h", "mu" [k] (rates of P − P*, ascending), "rate_density" μ_1, "rate_free_energy"
    2μ_1 (F − F_∞ is quadratic in P − P*), "gap_ratio" μ_2/μ_1, "mass_mode" (the zero
    eigenvalue as computed), "max_imag", "gibbs_residual", "mu_frozen_potential" (μ_1 without
    the βK term, a different operator), "P" the Gibbs state}."""
    P, res, _ = dd.gibbs_fixed_point(beta, P0, tol=tol)
    lin = linearise_at_gibbs(dd, P, beta, t)
    mu, zero, imag = lin.eigenvalues(k)
    frozen = lin.eigenvalues(1, nonlocal_term=False)[0][0]
    return {"cells": list(dd.grid.cells), "h": list(map(float, dd.grid.h)),
            "mu": [float(m) for m in mu], "rate_density": float(mu[0]),
            "rate_free_energy": float(2 * mu[0]),
            "gap_ratio": float(mu[1] / mu[0]) if k > 1 else None, "mass_mode": zero,
            "max_imag": imag, "gibbs_residual": lin.gibbs_residual,
            "mu_frozen_potential": float(frozen), "P": P}


def spectral_sequence(task, cells, beta: float, *, xi: float = 1.0, period: float = 2 * math.pi,
                      k: int = 3, backend="auto") -> dict:
    """:func:`spectral_rates` of ``task``'s grid PDE on the tori with ``cells``² cells (an
    increasing list), each from its own Gibbs fixed point (float64 potentials): the refinement
    sequence of the asymptotic rates.  Returns arrays {"cells" [G], "h" [G], "mu" [G, k],
    "mass_mode" [G], "max_imag" [G], "gibbs_residual" [G], "mu_frozen_potential" [G]}."""
    import torch

    from .grid2d import GridDD
    from .grid2d_mesh import Grid2D

    cells = [check_positive_int("cells", c) for c in cells]
    if not cells or sorted(set(cells)) != cells:
        raise ConfigError(f"cells must be a non-empty increasing list of distinct sizes, got {cells}")
    out = {key: [] for key in ("h", "mu", "mass_mode", "max_imag", "gibbs_residual", "mu_frozen_potential")}
    for c in cells:
        dd = GridDD(task, Grid2D.torus(c, period), xi=xi, beta=beta, backend=backend, dtype=torch.float64)
        r = spectral_rates(dd, beta, k=k)
        out["h"].append(r["h"][0])
        for key in ("mu", "mass_mode", "max_imag", "gibbs_residual", "mu_frozen_potential"):
            out[key].append(r[key])
    return {"cells": np.array(cells), **{key: np.array(v, dtype=np.float64) for key, v in out.items()}}
