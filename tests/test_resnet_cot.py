"""The conditional-OT flow (dynamics.cot) and the link with a plain torch ResNet
(models.resnet.to_module / from_module)."""
import math

import numpy as np
import pytest
import torch

from meanfield.dynamics import ConditionalOTFlow, ResNetState, conditional_ot_flow, resnet_sgd
from meanfield.errors import ConfigError
from meanfield.models.resnet import ResNet, grid_measure, lift_matrices
from meanfield.models.resnet_torch import from_module, to_module

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def setup(gen, L=3, M=4, n=9, d=2, loss="squared", seed=0, B=None):
    g = gen(seed)
    A, Bm = lift_matrices(d, 2, d_out=d if loss == "squared" else 3)
    model = ResNet(A, Bm, activation="tanh", loss=loss)
    shape = (L, M, model.P) if B is None else (B, L, M, model.P)
    meas = grid_measure(torch.randn(*shape, generator=g, dtype=F64))
    X = torch.randn(n, d, generator=g, dtype=F64)
    Y = torch.sin(2 * X).flip(-1) if loss == "squared" else torch.randint(0, 3, (n,), generator=g)
    return model, meas, X, Y


# ---- the link with torch.nn ---------------------------------------------------------------
@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_velocity_is_LM_times_the_module_gradient(gen, loss):
    L, M = 3, 4
    model, meas, X, Y = setup(gen, L, M, loss=loss)
    flow = conditional_ot_flow(model, X, Y, dt=0.1)
    state = flow.init(meas, generator=gen(1))
    v = flow.velocity(state)[0]                                  # (N, P)
    mod = to_module(model, meas)
    mod.zero_grad()
    mod.loss(X, Y).backward()
    grad = torch.cat([torch.cat([b.U.grad, b.W.grad, b.b.grad[:, None]], -1) for b in mod.blocks])
    # the acceptance bound is 1e-6; measured 3.3e-16 absolute, 4.7e-16 relative (float64)
    np.testing.assert_allclose(v, -L * M * grad, rtol=0, atol=1e-6 * float(grad.abs().max() * L * M))
    assert float((v + L * M * grad).abs().max()) < 1e-12 * float(v.abs().max())
    # the module computes the model's outputs and loss
    pot = flow.potential(state)
    np.testing.assert_allclose(mod(X).detach(), pot.out[0], rtol=1e-13, atol=1e-14)
    assert abs(float(mod.loss(X, Y).detach()) - float(pot.loss[0])) < 1e-13


def test_one_flow_step_is_one_sgd_step_of_the_module(gen):
    L, M, dt = 4, 3, 0.05
    model, meas, X, Y = setup(gen, L, M)
    flow = conditional_ot_flow(model, X, Y, dt=dt)
    state, _ = flow.step(flow.init(meas, generator=gen(1)))
    mod = to_module(model, meas)
    opt = torch.optim.SGD(mod.parameters(), lr=L * M * dt)
    opt.zero_grad()
    mod.loss(X, Y).backward()
    opt.step()
    _, after = from_module(mod)
    moved = float((after.positions - meas.positions).abs().max())
    assert moved > 1e-3                                           # the step did something
    # float64 round-off of the two computations; measured 1.1e-16
    np.testing.assert_allclose(state.theta[0], after.positions, rtol=0, atol=1e-12)
    assert state.t == dt and state.step == 1


def test_from_module_inverts_to_module(gen):
    model, meas, X, Y = setup(gen, 2, 5)
    mod = to_module(model, meas)
    model2, meas2 = from_module(mod)
    np.testing.assert_array_equal(meas2.positions, meas.positions)
    np.testing.assert_array_equal(meas2.layer, meas.layer)
    np.testing.assert_array_equal(model2.A, model.A)
    np.testing.assert_array_equal(model2.B, model.B)
    assert model2.param_names == model.param_names and meas2.param_names == tuple(model.param_names)
    # a fresh torch ResNet converts too, and the model reproduces its outputs
    fresh = type(mod)(model.A, model.B, 3, 2, dtype=F64)
    for p in fresh.parameters():
        torch.nn.init.normal_(p, generator=gen(4))
    m3, meas3 = from_module(fresh)
    out = m3.forward(meas3.positions, None, m3.layers(meas3.layer, meas3.N), X)[0]
    np.testing.assert_allclose(out, fresh(X).detach(), rtol=1e-13, atol=1e-14)


def test_to_module_needs_an_equal_width_grid_with_uniform_weights(gen):
    model, meas, X, Y = setup(gen, 2, 3)
    uneven = type(meas)(meas.positions, layer=torch.tensor([0, 0, 0, 0, 0.5, 0.5], dtype=F64))
    with pytest.raises(ConfigError, match=r"same number of units in every layer, got widths \[4, 2\]"):
        to_module(model, uneven)
    w = torch.full((6,), 1 / 6, dtype=F64)
    w[0], w[1] = 0.5 / 6, 1.5 / 6
    with pytest.raises(ConfigError, match="uniform weights"):
        to_module(model, type(meas)(meas.positions, weights=w, layer=meas.layer))


# ---- the flow --------------------------------------------------------------------------------
def test_gd_loss_decreases_at_the_rate_of_the_squared_velocity(gen):
    """dL/dt = Σ_j m_j ⟨∇_θ δL/δμ, v_j⟩ = −‖v‖²_{L²(μ)} (ξ = 1): a forward difference with a
    small step matches it to O(dt)."""
    model, meas, X, Y = setup(gen, 4, 5)
    dt = 1e-5
    flow = conditional_ot_flow(model, X, Y, dt=dt)
    state = flow.init(meas, generator=gen(1))
    losses = [float(flow.loss(state))]
    for _ in range(3):
        v = flow.velocity(state)
        v2 = float((v[0] ** 2).sum(-1).mean())                   # uniform m_j = 1/N
        state, info = flow.step(state)
        losses.append(float(flow.loss(state)))
        rate = (losses[-1] - losses[-2]) / dt
        # O(dt) relative error; measured 5.2e-6
        assert rate < 0 and abs(rate + v2) < 1e-3 * v2
    gd = conditional_ot_flow(model, X, Y, dt=0.05)
    s = gd.init(meas, generator=gen(1))
    seq = [float(gd.loss(s))]
    for _ in range(40):
        s, _ = gd.step(s)
        seq.append(float(gd.loss(s)))
    assert all(b < a for a, b in zip(seq, seq[1:])) and seq[-1] < 0.7 * seq[0]


def test_noisy_flow_without_loss_is_ornstein_uhlenbeck(gen):
    """With read-out B = 0 the loss is constant, so θ ← (1 − 2sλ)θ + sqrt(4s/β) ζ: from θ = 0
    the variance after K steps is (1 − (1−2sλ)^{2K}) / (βλ(1 − sλ)) exactly."""
    A, _ = lift_matrices(2, 2)
    model = ResNet(A, torch.zeros(2, 4, dtype=F64))
    X = torch.randn(5, 2, generator=gen(0), dtype=F64)
    beta, lam, dt, K = 4.0, 0.5, 0.1, 30
    flow = ConditionalOTFlow(model, X, -X, dt=dt, beta=beta, lam=lam)
    meas = grid_measure(torch.zeros(3, 4, 8, 400, model.P, dtype=F64).reshape(3, 32, 400, model.P))
    state = flow.init(meas, generator=gen(2))
    state = flow.run(state, K)
    var = float(state.theta.var())
    q = 1 - 2 * dt * lam
    exact = (1 - q ** (2 * K)) / (beta * lam * (1 - dt * lam))
    se = exact * math.sqrt(2 / state.theta.numel())            # s.e. of a Gaussian sample variance
    assert abs(var - exact) < 5 * se, (var, exact, se)
    assert abs(float(state.theta.mean())) < 5 * math.sqrt(exact / state.theta.numel())


def test_frozen_coordinates_do_not_move(gen):
    model, meas, X, Y = setup(gen)
    flow = ConditionalOTFlow(model, X, Y, dt=0.1, train="u", beta=10.0)
    s0 = flow.init(meas, generator=gen(1))
    s1 = flow.run(s0, 3)
    D = model.D
    np.testing.assert_array_equal(s1.theta[..., D:], s0.theta[..., D:])
    assert float((s1.theta[..., :D] - s0.theta[..., :D]).abs().min()) > 0


def test_minibatch_gradient_is_unbiased_and_full_batch_is_gd(gen):
    model, meas, X, Y = setup(gen, n=6)
    full = conditional_ot_flow(model, X, Y, dt=0.1)
    s = full.init(meas, generator=gen(1))
    g_full = full.potential(s).grad
    sgd = resnet_sgd(model, X, Y, dt=0.1, batch_size=6)
    s_all = sgd.init(meas, generator=gen(2))
    # the whole dataset in a shuffled order: the same sums up to round-off (measured 2e-16)
    np.testing.assert_allclose(sgd.potential(s_all).grad, g_full, rtol=0, atol=1e-12)
    sgd3 = resnet_sgd(model, X, Y, dt=0.1, batch_size=3)
    st = sgd3.init(meas.positions.expand(400, -1, -1), meas.layer, generator=gen(3))
    g = sgd3.potential(st).grad                                 # 400 replicas, 400 batches
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert float(((mean - g_full[0]).abs() / (se + 1e-12)).max()) < 5.0
    assert float(g.std(0).max()) > 1e-3                         # batches really differ


def test_state_dict_resume_is_bit_for_bit(gen):
    model, meas, X, Y = setup(gen, B=2)
    flow = resnet_sgd(model, X, Y, dt=0.05, batch_size=4, beta=50.0, lam=0.01)
    s = flow.init(meas, generator=gen(7))
    s = flow.run(s, 4)
    saved = s.state_dict()
    straight = flow.run(s, 5)
    again = ResNetState.from_state_dict(saved)
    assert torch.equal(again.layer, meas.layer)
    resumed = flow.run(again, 5)
    assert torch.equal(straight.theta, resumed.theta) and straight.t == resumed.t
    m = resumed.measure(model.param_names)
    assert m.layer is not None and m.positions.shape == (2, 12, model.P)


def test_flow_rejects_bad_layers_and_settings(gen):
    model, meas, X, Y = setup(gen)
    flow = conditional_ot_flow(model, X, Y, dt=0.1)
    bad = meas.layer.clone()
    bad[3] = 1.5
    with pytest.raises(ConfigError, match=r"s\[3\] = 1.5 is outside \[0, 1\]"):
        flow.init(meas.positions, bad, seed=0)
    deep = ResNet(model.A, model.B, depth=4)                   # 3 layers' coordinates on a depth-4 grid
    lay = torch.tensor([0.0, 0.25, 0.75] * 4, dtype=F64)
    with pytest.raises(ConfigError, match="layer 2 of the depth-4 grid"):
        conditional_ot_flow(deep, X, Y, dt=0.1).init(meas.positions, lay, seed=0)
    with pytest.raises(ConfigError, match="exceeds the 9 data points"):
        resnet_sgd(model, X, Y, dt=0.1, batch_size=10)
    with pytest.raises(ConfigError, match="train must be"):
        ConditionalOTFlow(model, X, Y, dt=0.1, train="w")
    with pytest.raises(ConfigError, match="pass a generator or a seed"):
        flow.init(meas)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "cos", "erf"])
@pytest.mark.parametrize("bias", [True, False])
def test_saved_forward_gradient_equals_the_recomputing_one(act, bias, gen):
    # evaluate keeps σ(z), σ'(z) from the forward pass when they fit (six GEMMs a layer, not eight);
    # SAVE_ELEMS = 0 forces the path that recomputes them: same loss and gradient to rounding
    g = gen(0)
    A, Bm = lift_matrices(3, 2)
    model = ResNet(A, Bm, activation=act, bias=bias)
    meas = grid_measure(torch.randn(2, 3, 5, model.P, generator=g, dtype=F64))   # 2 replicas
    X = torch.randn(7, 3, generator=g, dtype=F64)
    layers = model.layers(meas.layer, meas.positions.shape[1])
    from meanfield.interact.resnet import get_resnet_sums

    sums = get_resnet_sums("torch")
    assert model._can_save(sums, meas.positions, layers, 7)
    saved = model.evaluate(meas.positions, None, layers, X, torch.sin(X), sums=sums)
    model.SAVE_ELEMS = 0
    assert not model._can_save(sums, meas.positions, layers, 7)
    again = model.evaluate(meas.positions, None, layers, X, torch.sin(X), sums=sums)
    scale = float(again.grad.abs().max())
    assert float((saved.grad - again.grad).abs().max()) < 1e-13 * scale      # measured ≤ 2e-15
    assert torch.allclose(saved.loss, again.loss, rtol=1e-14, atol=0)
