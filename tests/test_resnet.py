"""The measure-valued ResNet (models.resnet) and its unit-by-data sums (interact.resnet):
adjoint and first variation against autograd and finite differences, the schemes' orders,
backends against each other, and clear errors for bad shapes."""
import numpy as np
import pytest
import torch
from scipy.stats import linregress

from meanfield.errors import ConfigError
from meanfield.interact.keops import keops_available
from meanfield.interact.resnet import TorchResNetSums, get_resnet_sums
from meanfield.measure import ParticleMeasure
from meanfield.models.resnet import (SCHEMES, Layers, ResNet, ResidualUnit, grid_measure,
                                     lift_matrices)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: a second thread only adds synchronisation cost on the shared 2 cores
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def shuffled_setup(gen, loss="squared", B=2, L=3, M=4, n=7, d=2, copies=2):
    """A ResNet with particles in a shuffled order, non-uniform weights and B replicas."""
    g = gen(11)
    A, Bm = lift_matrices(d, copies, d_out=d if loss == "squared" else 3)
    model = ResNet(A, Bm, activation="tanh", loss=loss)
    N = L * M
    perm = torch.randperm(N, generator=g)
    layer = (torch.arange(L, dtype=F64) / L).repeat_interleave(M)[perm]
    theta = torch.randn(B, N, model.P, generator=g, dtype=F64)
    w = torch.rand(N, generator=g, dtype=F64) + 0.5
    w = w / w.sum()
    X = torch.randn(n, d, generator=g, dtype=F64)
    Y = -X if loss == "squared" else torch.randint(0, 3, (n,), generator=g)
    return model, theta, w, model.layers(layer, N), X, Y


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_explicit_gradient_and_first_variation_match_autograd(gen, rel_err, loss):
    model, theta, w, layers, X, Y = shuffled_setup(gen, loss)
    assert not layers.contiguous                     # the gather/scatter path is exercised
    pot = model.evaluate(theta, w, layers, X, Y, value=True)
    # autograd of the discretised loss: ∇_θ δL/δμ(s_j, θ_j) = (1/m_j) ∂L/∂θ_j, δL/δμ = ∂L/∂m_j
    th = theta.clone().requires_grad_(True)
    m = w.expand(theta.shape[0], -1).clone().requires_grad_(True)
    lossv = model.loss(model.forward(th, m, layers, X), model.check_data(X, Y)[1])
    g_th, g_m = torch.autograd.grad(lossv.sum(), (th, m))
    # float64 round-off of a few hundred flops: measured ≤ 2.4e-16 relative
    assert rel_err(pot.grad, g_th / w[:, None]) < 1e-12
    assert rel_err(pot.value, g_m) < 1e-12
    assert rel_err(pot.loss, lossv.detach()) < 1e-14


def test_adjoint_is_n_times_the_gradient_of_the_states(gen, rel_err):
    model, theta, w, layers, X, Y = shuffled_setup(gen)
    out, loss, xs, ps = model.adjoint(theta, w, layers, X, Y)
    assert len(xs) == len(ps) == layers.L + 1
    # p_L = Bᵀ ∇ℓ = 2 Bᵀ (B x_L − y)
    np.testing.assert_allclose(ps[-1], 2 * (out - Y) @ model.B, rtol=1e-13)
    # p_l,k = n ∂L/∂x_{l,k}: rebuild the Euler forward with the states as leaves
    m = w[None]
    for l in range(layers.L):
        x = xs[l].clone().requires_grad_(True)
        y = x
        for k in range(l, layers.L):
            y = y + model.unit.field(y, layers.take(theta, k), layers.take(m, k))
        lv = model.loss(model.readout(y), Y[None]).sum()
        (gx,) = torch.autograd.grad(lv, x)
        assert rel_err(ps[l], X.shape[0] * gx) < 1e-12


def test_first_variation_at_probes_is_the_derivative_of_adding_mass(gen):
    model, theta, w, layers, X, Y = shuffled_setup(gen, B=1)
    g = gen(5)
    Q = 3
    probe = torch.randn(1, Q, model.P, generator=g, dtype=F64)
    probe_s = torch.tensor([0.0, 0.5, 0.9], dtype=F64)        # layers 0, 1 (s=1/3 ≤ 0.5), 2
    vals, grads = model.first_variation(theta, w, layers, X, Y, probe, probe_s, grad=True)
    eps = 1e-5
    for q, l in enumerate([0, 1, 2]):
        fd = []
        for sign in (1, -1):
            th = torch.cat([theta, probe[:, q:q + 1]], 1)
            ww = torch.cat([w, torch.tensor([sign * eps], dtype=F64)])
            lay = torch.cat([torch.as_tensor(layers.s[layers.index]), layers.s[l:l + 1]])
            lay_struct = Layers.from_coordinates(lay, th.shape[1])
            fd.append(model.loss(model.forward(th, ww, lay_struct, X), Y[None]))
        deriv = float((fd[0] - fd[1]) / (2 * eps))
        # central difference: O(eps²) truncation and 1e-16/eps round-off; measured ≤ 5.2e-11
        assert abs(deriv - float(vals[0, q])) < 1e-8 * max(1.0, abs(deriv))
    # the θ-gradient at the probes is the gradient of the value
    pr = probe.clone().requires_grad_(True)
    v = model.first_variation(theta, w, layers, X, Y, pr, probe_s)
    (gp,) = torch.autograd.grad(v.sum(), pr)
    np.testing.assert_allclose(grads, gp, rtol=1e-12, atol=1e-14)


def test_schemes_converge_at_their_order(gen):
    """Units shared by all layers: the limit dx/ds = (1/M) Σ_j φ(x; θ_j) is the same ODE for
    every L, so the output error against a fine RK4 solution decays like L^(−order)."""
    g = gen(1)
    A, B = lift_matrices(2, 2)
    M = 6
    base = torch.randn(M, 9, generator=g, dtype=F64)
    base[:, :4] *= 2.0
    X = torch.randn(5, 2, generator=g, dtype=F64)

    def out(scheme, L, sub=1):
        model = ResNet(A, B, scheme=scheme, substeps=sub)
        meas = grid_measure(base.expand(L, M, 9))
        return model.forward(meas.positions, None, model.layers(meas.layer, meas.N), X)

    ref = out("rk4", 64, 8)
    Ls = [4, 8, 16, 32]
    # measured slopes −1.02, −2.06, −4.03
    for scheme, order in zip(SCHEMES, (1, 2, 4)):
        err = [float((out(scheme, L) - ref).abs().max()) for L in Ls]
        slope = linregress(np.log(Ls), np.log(err)).slope
        assert abs(slope + order) < 0.15, (scheme, err, slope)


def test_rk4_gradient_is_the_autograd_first_variation(gen, rel_err):
    model, theta, w, layers, X, Y = shuffled_setup(gen, B=1)
    rk = ResNet(model.A, model.B, scheme="rk4", substeps=2)
    pot = rk.evaluate(theta, w, layers, X, Y, value=True)
    eu = model.evaluate(theta, w, layers, X, Y, value=True)
    # the RK4 first variation differs from Euler's by the discretisation (measured 8.1e-2 relative)
    assert 1e-4 < rel_err(pot.grad, eu.grad) < 0.3
    # and is the derivative in the masses: a central difference in m_0
    eps = 1e-6
    vals = []
    for sgn in (1, -1):
        ww = w.clone()
        ww[0] += sgn * eps
        vals.append(float(rk.loss(rk.forward(theta, ww, layers, X), Y[None])))
    # measured deviation 4.4e-10 (round-off 1e-16/eps dominates)
    assert abs((vals[0] - vals[1]) / (2 * eps) - float(pot.value[0, 0])) < 1e-7


def test_torch_tiles_agree_with_dense(gen, rel_err):
    g = gen(3)
    unit = ResidualUnit(5, "tanh")
    x = torch.randn(2, 37, 5, generator=g, dtype=F64)
    th = torch.randn(2, 11, unit.P, generator=g, dtype=F64)
    c = torch.rand(1, 11, generator=g, dtype=F64)
    p = torch.randn(2, 37, 5, generator=g, dtype=F64)
    a = torch.rand(1, 37, generator=g, dtype=F64)
    tiled = TorchResNetSums(tile_elems=40)          # 3 rows per tile
    assert rel_err(tiled.field(unit, x, th, c), unit.field(x, th, c)) < 1e-14
    assert rel_err(tiled.field_vjp(unit, x, th, c, p), unit.field_vjp(x, th, c, p)) < 1e-14
    assert rel_err(tiled.param_grad(unit, x, th, p, a), unit.param_grad(x, th, p, a)) < 1e-13
    assert rel_err(tiled.value(unit, x, th, p, a), unit.value(x, th, p, a)) < 1e-13


@pytest.mark.keops
def test_keops_sums_agree_with_torch(gen, rel_err, tol):
    """float64: the whole adjoint pass (field, field_vjp, param_grad, value: four formulas);
    float32: the forward field only (each new formula costs ~9 s of compilation here)."""
    assert keops_available(), "pykeops or g++ is missing: the keops tests cannot run"
    model, theta, w, layers, X, Y = shuffled_setup(gen)
    ref = model.evaluate(theta, w, layers, X, Y, value=True)
    ks = get_resnet_sums("keops")
    pot = model.evaluate(theta, w, layers, X, Y, sums=ks, value=True)
    # conftest tolerance 1e-10 (float64); measured 3.4e-16
    for a, b in ((pot.grad, ref.grad), (pot.value, ref.value), (pot.loss, ref.loss)):
        assert rel_err(a, b) < tol(F64)
    f32 = torch.float32
    x = model.embed(X[None].to(f32))
    c = torch.full((1, 4), 0.25, dtype=f32)
    th = layers.take(theta, 0).to(f32)
    # conftest tolerance 1e-4 (float32); measured 1e-7
    assert rel_err(ks.field(model.unit, x, th, c), model.unit.field(x.double(), th.double(), c.double())) < tol(f32)


# ---- bad shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1.25, -0.1, float("nan")])
def test_layer_outside_unit_interval_is_rejected(bad):
    A, B = lift_matrices(2, 2)
    model = ResNet(A, B)
    layer = torch.tensor([0.0, 0.5, bad, 0.5], dtype=F64)
    with pytest.raises(ConfigError, match=r"layer coordinate s\[2\] = .* is outside \[0, 1\]"):
        model.layers(layer, 4)


def test_empty_layer_and_missing_or_misshaped_layers_are_rejected():
    A, B = lift_matrices(2, 2)
    model = ResNet(A, B, depth=4)
    layer = torch.tensor([0.0, 0.25, 0.8, 0.99], dtype=F64)        # cells 0, 1, 3, 3: cell 2 empty
    with pytest.raises(ConfigError, match=r"layer 2 of the depth-4 grid \(s in \[0.5, 0.75\)\) holds no particles"):
        model.layers(layer, 4)
    assert model.layers(torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64), 4).widths == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="needs a layer coordinate"):
        model.layers(None, 4)
    with pytest.raises(ConfigError, match=r"layer must have shape \[4\]"):
        model.layers(torch.zeros(3, dtype=F64), 4)


def test_mismatched_embedding_readout_and_data_are_rejected(gen):
    with pytest.raises(ConfigError, match=r"B.shape\[1\] == A.shape\[0\]"):
        ResNet(torch.eye(4, 2), torch.eye(2, 3))
    with pytest.raises(ConfigError, match="A must be a 2-D matrix"):
        ResNet(torch.ones(4), torch.eye(2, 4))
    A, B = lift_matrices(2, 2)
    model = ResNet(A, B)
    with pytest.raises(ConfigError, match=r"need P=9"):
        model.check_theta(torch.zeros(3, 7))
    with pytest.raises(ConfigError, match=r"inputs must have shape \[n, 2\]"):
        model.check_data(torch.zeros(5, 3))
    with pytest.raises(ConfigError, match=r"targets must have shape \[5, 2\]"):
        model.check_data(torch.zeros(5, 2), torch.zeros(5, 3))
    ce = ResNet(A, torch.eye(3, 4), loss="cross_entropy")
    with pytest.raises(ConfigError, match=r"labels must lie in 0..2"):
        ce.check_data(torch.zeros(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="unknown scheme"):
        ResNet(A, B, scheme="rk2")
    with pytest.raises(ConfigError, match="unknown residual activation"):
        ResNet(A, B, activation="swish")


def test_grid_measure_layout():
    th = torch.arange(2 * 3 * 9, dtype=F64).reshape(2, 3, 9)
    meas = grid_measure(th)
    assert isinstance(meas, ParticleMeasure)
    np.testing.assert_array_equal(meas.layer, [0, 0, 0, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(meas.positions[3], th[1, 0])
    A, B = lift_matrices(2, 2)
    lay = ResNet(A, B, depth=2).layers(meas.layer, 6)
    assert lay.contiguous and lay.grid() == (2, 3)
