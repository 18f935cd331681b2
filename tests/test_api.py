"""The Python API as a new user meets it: layouts kept, generators only where randomness is,
noisy runs logging their free energy, errors and help that say what to do — one test each."""
import math

import numpy as np
import pytest
import torch

import meanfield as mf
from meanfield import diagnostics, io, runner
from meanfield.errors import ConfigError

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def ts_task(d=4, act="relu", bias=False):
    return mf.TeacherStudent.random(mf.Unit(d, act, output_weight=True, bias=bias), 3, generator=gen(0))


def test_a_state_keeps_the_callers_layout():
    """θ [N, D] in, θ [N, D] out (it used to come back [1, N, D]); [B, N, D] stays batched."""
    task = ts_task()
    theta = torch.randn(30, task.D, generator=gen(1), dtype=F64)
    for dyn in (mf.gradient_flow(task, dt=0.1), mf.langevin(task, dt=0.1, beta=100.0),
                mf.online_sgd(task, eps=0.05), mf.minibatch_sgd(task, eps=0.05, batch_size=4)):
        state = dyn.init(theta, seed=0)
        assert state.theta.shape == (30, task.D)
        state, info = dyn.step(state)
        assert state.theta.shape == (30, task.D) and info.potential.grad.shape == (1, 30, task.D)
        state = dyn.run(state, 3)                          # the compiled SGD path included
        assert state.theta.shape == (30, task.D)
        assert dyn.velocity(state).shape == (30, task.D)
        assert state.measure().positions.shape == (30, task.D)
        batched = dyn.run(dyn.init(theta[None].expand(2, -1, -1), seed=0), 2)
        assert batched.theta.shape == (2, 30, task.D)
    rho = mf.ParticleMeasure(theta)
    flow = mf.gradient_flow(task, dt=0.1)
    a = flow.run(flow.init(rho), 5).theta
    b = flow.run(flow.init(theta[None]), 5).theta
    assert a.shape == (30, task.D) and torch.equal(a, b[0])   # the same numbers either way


def test_deterministic_dynamics_need_no_generator():
    task = ts_task()
    theta = torch.randn(20, task.D, generator=gen(1), dtype=F64)
    flow = mf.gradient_flow(task, dt=0.1)
    assert flow.deterministic
    state = flow.run(flow.init(theta), 5)                 # no generator, no seed
    assert torch.equal(state.theta, flow.run(flow.init(theta, seed=7), 5).theta)
    for noisy in (mf.langevin(task, dt=0.1, beta=10.0), mf.online_sgd(task, eps=0.1),
                  mf.gradient_flow(task, dt=0.1, beta="log:1,1")):
        assert not noisy.deterministic
        with pytest.raises(ConfigError, match="pass a generator or a seed: this dynamics draws"):
            noisy.init(theta)


def test_teacher_student_with_noise_logs_entropy_and_free_energy(tmp_path):
    sets = ["N=40", "d=3", "steps=20", "backend=torch", "log_every=5", "save_every=10",
            "checkpoint_every=10", "beta=200", "lam=0.1"]
    cfg = runner.build_config("teacher-student", sets=sets)
    runner.run("teacher-student", cfg, tmp_path / "noisy", progress=False)
    m = io.read_metrics(tmp_path / "noisy" / io.METRICS)
    assert "entropy" in m and "free_energy" in m and len(m["free_energy"]) == 5
    with np.load(tmp_path / "noisy" / io.PARTICLES) as z:
        th = torch.as_tensor(z["theta"][-1], dtype=F64)
    H = diagnostics.knn_entropy(th)
    F = 0.5 * m["risk"][-1] + 0.5 * 0.1 * float((th ** 2).sum(-1).mean()) - H / 200
    assert abs(m["entropy"][-1] - H) < 1e-4 * abs(H) and abs(m["free_energy"][-1] - F) < 1e-4
    quiet = runner.build_config("teacher-student", sets=sets[:-2])
    runner.run("teacher-student", quiet, tmp_path / "quiet", progress=False)
    assert "free_energy" not in io.read_metrics(tmp_path / "quiet" / io.METRICS)


def test_help_of_the_dynamics_explains_lam_and_beta():
    for fn in (mf.langevin, mf.gradient_flow, mf.online_sgd, mf.minibatch_sgd):
        doc = fn.__doc__
        assert len(doc.strip().splitlines()) >= 10, fn.__name__
        assert "lam" in doc and "L2" in doc and "xi" in doc, fn.__name__
    doc = mf.langevin.__doc__
    assert "beta : inverse temperature" in doc and "Gibbs" in doc and "free energy" in doc


def test_risk_says_it_is_a_value_and_a_standard_error():
    task = ts_task()
    theta = torch.randn(10, task.D, generator=gen(1), dtype=F64)
    r = diagnostics.risk(task, theta)
    value, se = r
    assert r.value is value and r.se is None and r[0] is value and value.shape == (1,)
    assert "value=" in repr(r) and "se=None" in repr(r)
    mc = diagnostics.risk(ts_task(act="tanh"), theta, n_mc=200, generator=gen(2))
    assert mc.se is not None and mc.se.shape == (1,)


def test_units_without_exact_potentials_say_which_combinations_have_them():
    theta = torch.randn(10, 6, generator=gen(1), dtype=F64)
    for task, what in ((ts_task(bias=True), "relu units with a bias"),
                       (ts_task(act="tanh"), "activation 'tanh' has none")):
        for call in (lambda: mf.gradient_flow(task, dt=0.1),
                     lambda: mf.evaluate(task, theta[:, :task.D])):
            with pytest.raises(ConfigError) as e:
                call()
            msg = str(e.value)
            assert "without bias" in msg and "['erf', 'relu']" in msg and what in msg, msg
    assert ts_task().population_reason() is None
    # the sampled dynamics train them
    sgd = mf.online_sgd(ts_task(bias=True), eps=0.05)
    assert torch.isfinite(sgd.run(sgd.init(theta, seed=0), 10).theta).all()
    assert math.isfinite(float(diagnostics.risk(ts_task(bias=True), theta, n_mc=100,
                                                generator=gen(3)).value))
