"""dynamics.fast_sgd: the compiled multi-step online SGD is the step-by-step update.

Both paths consume the state's generator identically (same draws, same order), so from the
same seed the trajectories agree to float rounding; the fast path is itself bit-for-bit
reproducible however the steps are split into calls; step, t and the generator advance as
with ``step``.  Every unit layout, activation, noise/annealing, λ, schedules, label noise,
per-replica weights and non-teacher tasks are covered.  Each distinct (unit, dtype) builds
one small native library (≈1 s, cached in .cache/native).
"""
from __future__ import annotations

import math

import pytest
import torch

from meanfield.dynamics import ParticleDynamics, fast_sgd, online_sgd
from meanfield.errors import ConfigError, DivergenceError
from meanfield.interact import native
from meanfield.models import FiniteDataset, IsotropicGaussians, TeacherStudent, Unit
from meanfield.models.activations import get_activation

pytestmark = pytest.mark.skipif(not native.enabled(), reason="no C++ compiler")

F32, F64 = torch.float32, torch.float64
TOL = {F32: 2e-5, F64: 1e-12}


def _teacher(unit, g, **kw):
    return TeacherStudent(unit, torch.randn(3, unit.D, generator=g, dtype=F64),
                          torch.tensor([0.5, -0.3, 0.8], dtype=F64), **kw)


def _both(dyn, theta0, steps, seed=1, weights=None):
    slow = dyn.run(dyn.init(theta0, seed=seed, weights=weights), steps, fast=False)
    fast = dyn.run(dyn.init(theta0, seed=seed, weights=weights), steps, fast=True)
    return slow, fast


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


CASES = [
    # activation, output_weight, bias, dtype, beta, lam, xi, noise_std, offset
    ("relu", False, False, F32, math.inf, 0.0, 1.0, 0.0, 0.0),            # MMN's unit
    ("relu", True, False, F64, 40.0, 0.05, 1.0, 0.1, 0.3),
    ("erf", True, False, F32, "linear:200,1", 0.0, "power:1,0.5,1", 0.0, 0.0),
    ("tanh", True, True, F64, math.inf, 0.1, "log:1,2", 0.2, -0.1),
    ("sigmoid", False, True, F64, 100.0, 0.0, 1.0, 0.0, 0.0),
    ("linear", True, False, F64, math.inf, 0.0, 1.0, 0.0, 0.0),
    ("piecewise", False, False, F64, math.inf, 0.0, 1.0, 0.0, 0.0),
]


@pytest.mark.parametrize("act,ow,bias,dtype,beta,lam,xi,noise_std,offset", CASES,
                         ids=[f"{c[0]}-{'a' if c[1] else 'noa'}-{'b' if c[2] else 'nob'}-{c[3]}"
                              for c in CASES])
def test_fast_path_equals_step_by_step(act, ow, bias, dtype, beta, lam, xi, noise_std, offset, gen):
    if act == "piecewise":
        act = get_activation("piecewise", t1=0.5, t2=1.5, s1=-2.5, s2=7.5)
    unit = Unit(6, act, output_weight=ow, bias=bias)
    task = _teacher(unit, gen(0), noise_std=noise_std, offset=offset)
    dyn = ParticleDynamics(task, dt=0.01, drift="sgd", beta=beta, lam=lam, xi=xi)
    theta0 = torch.randn(3, 37, unit.D, generator=gen(1), dtype=dtype) * 0.5
    assert fast_sgd.unsupported(dyn, dyn.init(theta0, seed=0)) is None
    slow, fast = _both(dyn, theta0, 150)
    assert _rel(fast.theta, slow.theta) < TOL[dtype]
    assert (fast.theta - theta0).abs().max() > 1e-3                 # it really moved
    assert fast.step == slow.step == 150 and fast.t == slow.t == 1.5
    # the same random numbers were consumed: the generators end in the same state
    assert torch.equal(fast.generator.get_state(), slow.generator.get_state())


@pytest.mark.parametrize("dtype", [F32, F64])
def test_fast_runs_split_anywhere_and_resume_bit_for_bit(dtype, gen):
    unit = Unit(5, "relu", output_weight=True)
    task = _teacher(unit, gen(2), noise_std=0.1)
    dyn = ParticleDynamics(task, dt=0.02, drift="sgd", beta=50.0)
    theta0 = torch.randn(2, 40, unit.D, generator=gen(3), dtype=dtype)
    whole = dyn.run(dyn.init(theta0, seed=4), 300)
    parts = dyn.init(theta0, seed=4)
    for k in (1, 99, 7, 193):                        # chunk boundaries fall anywhere
        parts = dyn.run(parts, k)
    assert torch.equal(whole.theta, parts.theta)
    assert whole.step == parts.step == 300 and whole.t == parts.t
    # chunks smaller than the run (several C calls in one run) change nothing either
    old = fast_sgd.CHUNK_STEPS
    try:
        fast_sgd.CHUNK_STEPS = 64
        chunked = dyn.run(dyn.init(theta0, seed=4), 300)
    finally:
        fast_sgd.CHUNK_STEPS = old
    assert torch.equal(whole.theta, chunked.theta)
    # and resuming a state (dict) continues identically; mixing step() and run() too
    mixed = dyn.init(theta0, seed=4)
    mixed = dyn.run(mixed, 100)
    for _ in range(3):
        mixed, _ = dyn.step(mixed)
    mixed = dyn.run(mixed, 197)
    assert _rel(mixed.theta, whole.theta) < TOL[dtype]


def test_per_replica_weights_and_mmn_size(gen):
    unit = Unit(40, "relu", output_weight=False)
    task = TeacherStudent.random(unit, 4, generator=gen(5))
    dyn = online_sgd(task, eps=1e-3)
    theta0 = torch.randn(2, 64, 40, generator=gen(6)) / 6
    w = torch.rand(2, 64, generator=gen(7)) + 0.5
    w = w / w.sum(-1, keepdim=True)
    slow, fast = _both(dyn, theta0, 200, weights=w)
    assert _rel(fast.theta, slow.theta) < TOL[F32]


@pytest.mark.parametrize("kind", ["isotropic", "dataset"])
def test_sample_based_tasks_use_the_task_sampler(kind, gen):
    unit = Unit(4, "tanh", output_weight=True, bias=True)
    if kind == "isotropic":
        task = IsotropicGaussians(unit, 0.4)
    else:
        X = torch.randn(30, 4, generator=gen(8), dtype=F64)
        task = FiniteDataset(unit, X, torch.tanh(X[:, 0]))
    dyn = online_sgd(task, eps=0.02)
    theta0 = torch.randn(2, 25, unit.D, generator=gen(9), dtype=F64)
    slow, fast = _both(dyn, theta0, 60)
    assert _rel(fast.theta, slow.theta) < TOL[F64]
    assert torch.equal(fast.generator.get_state(), slow.generator.get_state())


def test_dispatch_rules(gen):
    unit = Unit(3, "relu")
    task = _teacher(unit, gen(10))
    theta0 = torch.randn(20, unit.D, generator=gen(11), dtype=F64)
    mb = ParticleDynamics(task, dt=0.01, drift="sgd", batch_size=4)
    assert fast_sgd.unsupported(mb, mb.init(theta0, seed=0)) is None     # minibatches too
    gd = ParticleDynamics(task, dt=0.01, drift="population", backend="torch")
    assert "only SGD" in fast_sgd.unsupported(gd, gd.init(theta0, seed=0))
    with pytest.raises(ConfigError, match="fast SGD path is unavailable: only SGD"):
        gd.run(gd.init(theta0, seed=0), 3, fast=True)
    assert gd.run(gd.init(theta0, seed=0), 2).step == 2
    on = online_sgd(task, eps=0.01)
    half = on.init(theta0.to(torch.float16), seed=0)
    assert "float32/float64" in fast_sgd.unsupported(on, half)
    assert on.run(on.init(theta0, seed=0), 0).step == 0


def test_divergence_is_reported(gen):
    unit = Unit(3, "linear")
    task = _teacher(unit, gen(12))
    dyn = online_sgd(task, eps=50.0)
    theta0 = torch.randn(10, unit.D, generator=gen(13), dtype=F64) * 10
    with pytest.raises(DivergenceError, match="non-finite"):
        dyn.run(dyn.init(theta0, seed=0), 2000)


def test_fallback_without_compiler(monkeypatch, gen):
    monkeypatch.setenv("MEANFIELD_NATIVE", "0")
    unit = Unit(3, "relu")
    task = _teacher(unit, gen(14))
    dyn = online_sgd(task, eps=0.01)
    state = dyn.init(torch.randn(10, unit.D, generator=gen(15), dtype=F64), seed=0)
    assert "compiler" in fast_sgd.unsupported(dyn, state)
    assert dyn.run(state, 5).step == 5


MB_CASES = [
    # activation, output_weight, bias, dtype, beta, lam, noise_std, batch_size
    ("relu", False, False, F32, math.inf, 0.0, 0.0, 8),
    ("tanh", True, True, F64, 50.0, 0.1, 0.2, 5),
    ("erf", True, False, F64, "linear:200,1", 0.0, 0.1, 2),
]


@pytest.mark.parametrize("act,ow,bias,dtype,beta,lam,noise_std,nb", MB_CASES,
                         ids=[f"{c[0]}-{c[3]}-n{c[7]}" for c in MB_CASES])
def test_minibatch_fast_path_equals_step_by_step(act, ow, bias, dtype, beta, lam, noise_std, nb, gen):
    # minibatch SGD (batch_size > 1) runs in compiled code too, drawing the step
    # loop's random numbers in its order (x [B, n, d], label noise, then ζ)
    unit = Unit(5, act, output_weight=ow, bias=bias)
    task = _teacher(unit, gen(20), noise_std=noise_std)
    dyn = ParticleDynamics(task, dt=0.02, drift="sgd", batch_size=nb, beta=beta, lam=lam)
    theta0 = (torch.randn(3, 40, unit.D, generator=gen(21), dtype=F64) / 2).to(dtype)
    slow, fast = _both(dyn, theta0, 60)
    assert 0 < _rel(fast.theta, slow.theta) < TOL[dtype] or torch.equal(fast.theta, slow.theta)
    assert _rel(fast.theta, theta0) > 1e-3                       # it moved
    assert torch.equal(fast.generator.get_state(), slow.generator.get_state())
    assert (fast.step, fast.t) == (slow.step, slow.t)
    split = dyn.run(dyn.run(dyn.init(theta0, seed=1), 25), 35)
    assert torch.equal(split.theta, fast.theta)                  # chunking never changes it


@pytest.mark.parametrize("kind", ["isotropic", "dataset"])
def test_minibatch_fast_path_on_sample_based_tasks(kind, gen):
    unit = Unit(4, "tanh", output_weight=True, bias=True)
    if kind == "isotropic":
        task = IsotropicGaussians(unit, 0.4)
    else:
        X = torch.randn(30, 4, generator=gen(8), dtype=F64)
        task = FiniteDataset(unit, X, torch.tanh(X[:, 0]))
    dyn = ParticleDynamics(task, dt=0.02, drift="sgd", batch_size=6)
    theta0 = torch.randn(2, 25, unit.D, generator=gen(9), dtype=F64)
    slow, fast = _both(dyn, theta0, 40)
    assert _rel(fast.theta, slow.theta) < TOL[F64]
    assert torch.equal(fast.generator.get_state(), slow.generator.get_state())
