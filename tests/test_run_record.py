"""``flow.run(state, steps, record_every=k)``: the public many-step API.

It advances exactly as ``steps`` calls of ``step`` (bit for bit where it runs the step loop;
to float rounding where it takes the compiled online-SGD loop, which draws the same random
numbers in the same order), records step, t and the risk at the right rows, never draws from
the state's generator for a record, and rejects bad arguments with one precise error.
"""
from __future__ import annotations

import math

import pytest
import torch

import meanfield as mf
from meanfield.dynamics import RunRecord, conditional_ot_flow, resnet_sgd
from meanfield.errors import ConfigError
from meanfield.interact import native
from meanfield.models.resnet import ResNet, grid_measure, lift_matrices

F32, F64 = torch.float32, torch.float64


def _task(gen, d=6, bias=False, dtype=F64):
    g = gen(0)
    unit = mf.Unit(d=d, activation="relu", output_weight=True, bias=bias)
    task = mf.TeacherStudent.random(unit, m0=3, generator=g)
    theta0 = (torch.randn(40, unit.D, generator=g, dtype=F64) / math.sqrt(d)).to(dtype)
    return task, theta0


def _step_loop(flow, state, steps):
    for _ in range(steps):
        state, _ = flow.step(state)
    return state


def _same_generator(a, b):
    return torch.equal(a.generator.get_state(), b.generator.get_state())


@pytest.mark.parametrize("make", [
    lambda t: mf.gradient_flow(t, dt=0.1),
    lambda t: mf.langevin(t, dt=0.05, beta=50.0, lam=0.01),
    lambda t: mf.minibatch_sgd(t, eps=0.05, batch_size=8),
    lambda t: mf.online_sgd(t, eps=0.05, beta=200.0),
], ids=["gd", "langevin", "minibatch-step-loop", "online-step-loop"])
def test_run_is_the_step_loop_bit_for_bit(make, gen):
    task, theta0 = _task(gen)
    flow = make(task)
    kw = {"fast": False} if flow.drift == "sgd" else {}           # SGD: the step loop inside run
    ref = _step_loop(flow, flow.init(theta0, seed=3), 23)
    out = flow.run(flow.init(theta0, seed=3), 23, **kw)
    rec_state, rec = flow.run(flow.init(theta0, seed=3), 23, record_every=5, **kw)
    for s in (out, rec_state):
        assert torch.equal(s.theta, ref.theta)
        assert s.theta.shape == theta0.shape                    # the caller's [N, D] layout
        assert (s.step, s.t) == (ref.step, ref.t) == (23, ref.t)
        assert _same_generator(s, ref)
    assert ref.t == pytest.approx(23 * flow.dt, abs=1e-12)
    # every row is the exact risk of the step loop's state at that step
    assert rec.step.tolist() == [0, 5, 10, 15, 20, 23]
    s = flow.init(theta0, seed=3)
    for row, k in enumerate(rec.step.tolist()):
        s = _step_loop(flow, s, k - s.step)
        want, se = mf.diagnostics.risk(task, s.theta)
        assert se is None and rec.risk_se is None
        assert torch.allclose(rec.risk[row], want, rtol=1e-12, atol=0)
        assert rec.t[row] == s.t


@pytest.mark.skipif(not native.enabled(), reason="no C++ compiler")
@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("dtype,tol", [(F32, 2e-5), (F64, 1e-12)])
def test_sgd_run_takes_the_compiled_loop(dtype, tol, batch_size, gen):
    task, theta0 = _task(gen, dtype=dtype)
    flow = mf.minibatch_sgd(task, eps=0.02, batch_size=batch_size)
    ref = _step_loop(flow, flow.init(theta0, seed=5), 57)
    fast = flow.run(flow.init(theta0, seed=5), 57)
    rec_state, rec = flow.run(flow.init(theta0, seed=5), 57, record_every=10)
    # the compiled loop: the step loop's trajectory to float rounding, the same random stream
    rel = float((fast.theta - ref.theta).abs().max() / ref.theta.abs().max())
    assert 0 < rel < tol or rel == 0
    assert _same_generator(fast, ref) and _same_generator(rec_state, ref)
    assert (fast.step, fast.t) == (ref.step, ref.t)
    # recording splits the compiled loop into chunks: bit-identical to the unrecorded run
    assert torch.equal(rec_state.theta, fast.theta)
    assert rec.step.tolist() == [0, 10, 20, 30, 40, 50, 57]
    s = flow.init(theta0, seed=5)
    s = flow.run(s, 30)
    assert torch.equal(rec.risk[3], mf.diagnostics.risk(task, s.theta).value)


def test_record_rows_edge_cases(gen):
    task, theta0 = _task(gen)
    flow = mf.gradient_flow(task, dt=0.1)
    cases = {(0, 3): [0], (5, 5): [0, 5], (5, 1): [0, 1, 2, 3, 4, 5], (4, 10): [0, 4],
             (9, 3): [0, 3, 6, 9], (10, 3): [0, 3, 6, 9, 10]}
    for (steps, every), rows in cases.items():
        state, rec = flow.run(flow.init(theta0), steps, record_every=every)
        assert isinstance(rec, RunRecord) and len(rec) == len(rows)
        assert rec.step.tolist() == rows and state.step == steps
        assert rec.t.tolist() == pytest.approx([0.1 * k for k in rows], abs=1e-12)
        assert rec.risk.shape == (len(rows), 1)
        assert rec.as_dict()["step"] == rows
    # a run continued from step 7 records from 7
    s7 = flow.run(flow.init(theta0), 7)
    _, rec = flow.run(s7, 5, record_every=2)
    assert rec.step.tolist() == [7, 9, 11, 12]


def test_bad_arguments_raise_one_precise_error(gen):
    task, theta0 = _task(gen)
    flow = mf.online_sgd(task, eps=0.1)
    s = flow.init(theta0, seed=0)
    for bad, msg in [(0, "record_every must be >= 1, got 0"), (-2, "record_every must be >= 1, got -2"),
                     (1.5, "record_every must be an integer, got 1.5"),
                     (True, "record_every must be an integer, got True")]:
        with pytest.raises(ConfigError, match="^" + msg.replace(".", r"\.") + "$"):
            flow.run(s, 10, record_every=bad)
    with pytest.raises(ConfigError, match="^steps must be >= 0, got -1$"):
        flow.run(s, -1)
    with pytest.raises(ConfigError, match="^n_mc must be >= 1, got 0$"):
        flow.run(s, 1, record_every=1, n_mc=0)
    assert s.step == 0 and torch.equal(s.generator.get_state(), flow.init(theta0, seed=0).generator.get_state())


def test_monte_carlo_risk_never_draws_from_the_state(gen):
    task, theta0 = _task(gen, bias=True)                  # ReLU with bias: no closed form
    assert not task.has_population
    flow = mf.online_sgd(task, eps=0.05)
    plain = flow.run(flow.init(theta0, seed=2), 12)
    rec_state, rec = flow.run(flow.init(theta0, seed=2), 12, record_every=4, n_mc=500)
    assert torch.equal(rec_state.theta, plain.theta) and _same_generator(rec_state, plain)
    assert rec.risk_se is not None and bool((rec.risk_se > 0).all())
    # the same n_mc samples (seed 0) at every row: a row is reproducible from its state alone
    s8 = flow.run(flow.init(theta0, seed=2), 8)
    want = mf.diagnostics.risk(task, s8.theta, n_mc=500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rec.risk[2], want.value)


def test_replicas_record_one_risk_each(gen):
    task, theta0 = _task(gen)
    flow = mf.gradient_flow(task, dt=0.1)
    th = torch.stack([theta0, 0.5 * theta0])
    state, rec = flow.run(flow.init(th), 4, record_every=2)
    assert state.theta.shape == th.shape and rec.risk.shape == (3, 2)
    assert rec.risk[0, 0] != rec.risk[0, 1]


def _resnet(gen, L=3, M=4, n=9, d=2):
    g = gen(0)
    A, Bm = lift_matrices(d, 2, d_out=d)
    model = ResNet(A, Bm, activation="tanh")
    meas = grid_measure(torch.randn(L, M, model.P, generator=g, dtype=F64))
    X = torch.randn(n, d, generator=g, dtype=F64)
    return model, meas, X, torch.sin(2 * X)


@pytest.mark.parametrize("sgd", [False, True])
def test_resnet_run_records_the_training_loss(sgd, gen):
    model, meas, X, Y = _resnet(gen)
    flow = resnet_sgd(model, X, Y, dt=0.05, batch_size=4, beta=1e4) if sgd \
        else conditional_ot_flow(model, X, Y, dt=0.05)
    ref = _step_loop(flow, flow.init(meas, seed=1), 7)
    state, rec = flow.run(flow.init(meas, seed=1), 7, record_every=3)
    assert torch.equal(state.theta, ref.theta) and _same_generator(state, ref)
    assert torch.equal(flow.run(flow.init(meas, seed=1), 7).theta, ref.theta)
    assert rec.step.tolist() == [0, 3, 6, 7] and rec.risk_se is None
    s = flow.init(meas, seed=1)
    for row, k in enumerate(rec.step.tolist()):
        s = _step_loop(flow, s, k - s.step)
        assert torch.allclose(rec.risk[row], flow.loss(s), rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="^record_every must be >= 1, got 0$"):
        flow.run(s, 2, record_every=0)
