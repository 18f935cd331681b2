"""The CUDA paths: every backend that runs on CUDA against the float64 numpy
reference on the CPU, CPU and CUDA trajectories of the same runs, the ResNet conditional-OT
flow, and ``backend="auto"`` on CUDA.

Every test is marked ``gpu`` and skips without CUDA, so CI (no GPU) is unchanged;
``scripts/gpu_check.sh`` runs them on a CUDA machine (``pytest -m gpu tests/test_gpu.py``).
``MEANFIELD_GPU_TEST_DEVICE=cpu`` runs the same tests on the CPU instead — a check of the
tests' own logic on a machine without a GPU (the CPU-vs-device comparisons then compare the
CPU with itself).

KeOps compiles one formula per (kernel, grad, dtype, d, device): everything here uses d = 10,
the dimension of the GPU benchmarks, so the benchmark stage that follows finds its formulas
compiled.  Tolerances (relative to max |reference|): 1e-10 in float64, 1e-4 in float32
(``tol``); 1e-8 for trajectories after 100 steps.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from benchmarks.interact import dense_autograd, keops_autograd
from meanfield.dynamics import ParticleDynamics, conditional_ot_flow, gradient_flow, langevin, online_sgd
from meanfield.interact import (AUTO_KEOPS_PAIRS_CUDA, KeOpsBackend, NumpyBackend, TiledTorchBackend,
                                evaluate, get_backend, keops_available)
from meanfield.models import TeacherStudent, Unit, gaussian_kernel
from meanfield.models.resnet import ResNet, grid_measure, lift_matrices

DEVICE = os.environ.get("MEANFIELD_GPU_TEST_DEVICE", "cuda")
_NO_DEVICE = DEVICE.startswith("cuda") and not torch.cuda.is_available()

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(_NO_DEVICE, reason="no CUDA device (GPU checks run by scripts/gpu_check.sh)")]

F64, F32 = torch.float64, torch.float32
D = 10                       # input dimension everywhere in this file (one KeOps formula per case)
B = 2                        # replicas
STEPS = 100                  # trajectory length for the CPU/CUDA comparisons
TRAJ_TOL = 1e-8

MODELS = [("relu", True), ("relu", False), ("erf", True), ("erf", False)]
MODEL_IDS = [f"{a}-{'a' if ow else 'noa'}" for a, ow in MODELS]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def dev():
    return torch.device(DEVICE)


def sync():
    if dev().type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def keops_ready():
    """KeOps must really run (get_backend would silently fall back to torch): on a CUDA
    machine a missing or broken pykeops is a failure here, not a skip."""
    assert keops_available(), "pykeops or a C++ compiler is missing: KeOps cannot run"
    assert isinstance(get_backend("keops"), KeOpsBackend)


def backend(name, request):
    if name == "keops":
        request.getfixturevalue("keops_ready")
        return get_backend("keops")
    if name == "torch-tiles":       # several eager tiles on the device: 7 rows per tile
        return TiledTorchBackend(tile_bytes=1, cuda_tile_bytes=8 * B * 300 * 8 * 7)
    return get_backend(name)


LIBRARY = ["torch", "torch-tiles", pytest.param("keops", marks=pytest.mark.keops)]


def teacher_student(act, output_weight, seed=1, m0=4):
    unit = Unit(D, act, output_weight=output_weight)
    g = gen(seed)
    tt = torch.randn(m0, unit.D, generator=g, dtype=F64)
    tw = torch.tensor([0.4, -0.25, 0.6, 0.3], dtype=F64)[:m0]
    return TeacherStudent(unit, tt, tw, noise_std=0.1)


def particles(Dp, N, seed, replicas=B):
    g = gen(seed)
    theta = torch.randn(replicas, N, Dp, generator=g, dtype=F64)
    m = torch.rand(replicas, N, generator=g, dtype=F64) + 0.1
    return theta, m / m.sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------
# 1. evaluate() on the device against the float64 numpy reference on the CPU
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", LIBRARY)
@pytest.mark.parametrize("act,output_weight", MODELS, ids=MODEL_IDS)
def test_library_backends_on_device_match_the_numpy_reference(act, output_weight, name, dtype, tol,
                                                              rel_err, request):
    be = backend(name, request)
    task = teacher_student(act, output_weight)
    theta, m = particles(task.D, 300, seed=2)
    ref = evaluate(task, theta, m, backend="numpy")                 # CPU, float64
    got = evaluate(teacher_student(act, output_weight), theta.to(dev(), dtype), m.to(dev(), dtype),
                   backend=be)
    sync()
    for f in ("psi", "V", "risk", "grad"):
        t = getattr(got, f)
        assert t.device.type == dev().type and t.dtype == dtype, (f, t.device, t.dtype)
        err = rel_err(t, getattr(ref, f))
        assert err < tol(dtype), f"{f}: relative error {err:.3g} ({name}, {dtype}, {DEVICE})"


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", LIBRARY)
@pytest.mark.parametrize("src_batch", [B, 1], ids=["src-B", "src-1"])
def test_kernel_sum_on_device_with_broadcast_sources(src_batch, name, dtype, tol, rel_err, request):
    """kernel_sum directly: M ≠ N sources, a batch-1 source broadcast against B replicas,
    with and without the gradient."""
    be = backend(name, request)
    unit = Unit(D, "relu", output_weight=True)
    kern = gaussian_kernel(unit)
    g = gen(5)
    x = torch.randn(B, 40, unit.D, generator=g, dtype=F64)
    y = torch.randn(src_batch, 25, unit.D, generator=g, dtype=F64)
    c = torch.randn(src_batch, 25, generator=g, dtype=F64)
    S0, G0 = NumpyBackend().kernel_sum(kern, unit, x, y, c)
    args = [t.to(dev(), dtype) for t in (x, y, c)]
    S, G = be.kernel_sum(kern, unit, *args)
    S1, none = be.kernel_sum(kern, unit, *args, grad=False)
    assert none is None and S.device.type == dev().type
    assert rel_err(S, S0) < tol(dtype) and rel_err(G, G0) < tol(dtype) and rel_err(S1, S0) < tol(dtype)


@pytest.mark.parametrize("act,output_weight", MODELS, ids=MODEL_IDS)
def test_autograd_through_the_device_tiles_matches_the_reference(act, output_weight, rel_err):
    """The eager tiles are differentiable on the device: autograd of Σ_i S_i w.r.t. x (sources
    y ≠ x held fixed) equals the explicit gradient and the numpy reference (float64)."""
    unit = Unit(D, act, output_weight=output_weight)
    kern = gaussian_kernel(unit)
    g = gen(8)
    x = torch.randn(B, 30, unit.D, generator=g, dtype=F64)
    y = torch.randn(B, 30, unit.D, generator=g, dtype=F64)
    c = torch.randn(B, 30, generator=g, dtype=F64)
    _, G0 = NumpyBackend().kernel_sum(kern, unit, x, y, c)
    xx = x.to(dev()).requires_grad_(True)
    S, G = TiledTorchBackend().kernel_sum(kern, unit, xx, y.to(dev()), c.to(dev()))
    (auto,) = torch.autograd.grad(S.sum(), xx)
    assert auto.device.type == dev().type
    assert rel_err(auto, G0) < 1e-10 and rel_err(G, G0) < 1e-10


# the benchmark's baselines: ReLU with output weights (what benchmarks/interact.py times)
BASELINES = ["dense-autograd", pytest.param("keops-autograd", marks=pytest.mark.keops)]
# The baselines clamp cos φ to ±(1 − 1e-6) (autograd of arccos is infinite at 1, hit by the
# self-pairs), which moves R and ∇Ψ by ~1e-6/N relatively: measured on the CPU in float64,
# 1.6e-7 at N = 50 and 3.1e-8 at N = 300.  1e-10 holds for the library backends only.
BASELINE_TOL = {F64: 1e-6, F32: 1e-4}


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", BASELINES)
def test_autograd_baselines_on_device_match_the_numpy_reference(name, dtype, rel_err, request):
    if name == "keops-autograd":
        request.getfixturevalue("keops_ready")
    fn = {"dense-autograd": dense_autograd, "keops-autograd": keops_autograd}[name]
    task = TeacherStudent.random(Unit(D, "relu", output_weight=True), 4, generator=gen(3))
    theta, _ = particles(task.D, 300, seed=4, replicas=1)
    m = torch.full((1, 300), 1 / 300, dtype=F64)
    ref = evaluate(task, theta, m, backend="numpy")
    R, G = fn(task, theta.to(dev(), dtype), m.to(dev(), dtype))
    sync()
    assert G.device.type == dev().type
    assert rel_err(G, ref.grad[0]) < BASELINE_TOL[dtype]
    assert rel_err(R.reshape(1), ref.risk) < BASELINE_TOL[dtype]


# ---------------------------------------------------------------------------------------
# 2. trajectories: the same run on the CPU and on the device (float64, 100 steps)
# ---------------------------------------------------------------------------------------

def _ts_run(dyn, theta0, seed):
    state = dyn.init(theta0, generator=gen(seed))
    for _ in range(STEPS):
        state, info = dyn.step(state)
    return state, info


def _theta0(task, N=200, seed=6):
    std = [1.0] + [1 / math.sqrt(D)] * D
    z = torch.randn(B, N, task.D, generator=gen(seed), dtype=F64)
    return z * torch.tensor(std, dtype=F64)


@pytest.mark.parametrize("name", ["torch", pytest.param("keops", marks=pytest.mark.keops)])
def test_gradient_flow_on_device_follows_the_cpu_run(name, rel_err, request):
    be = backend(name, request)
    task = TeacherStudent.random(Unit(D, "relu", output_weight=True), 4, generator=gen(0))
    theta0 = _theta0(task)
    cpu, cpu_info = _ts_run(gradient_flow(task, dt=0.2, backend="torch"), theta0, 0)
    gpu, gpu_info = _ts_run(gradient_flow(task, dt=0.2, backend=be), theta0.to(dev()), 0)
    assert gpu.theta.device.type == dev().type and gpu.step == cpu.step == STEPS
    assert (cpu.theta - theta0).abs().max() > 0.05                      # the run went somewhere
    assert rel_err(gpu.theta, cpu.theta) < TRAJ_TOL
    assert rel_err(gpu_info.potential.risk, cpu_info.potential.risk) < TRAJ_TOL


@pytest.mark.parametrize("name", ["torch", pytest.param("keops", marks=pytest.mark.keops)])
def test_langevin_on_device_follows_the_cpu_run_with_the_same_noise(name, rel_err, request):
    be = backend(name, request)
    task = TeacherStudent.random(Unit(D, "erf", output_weight=True), 4, generator=gen(0))
    theta0 = _theta0(task)
    kw = dict(dt=0.05, drift="population", beta=200.0, lam=0.1)
    cpu, _ = _ts_run(ParticleDynamics(task, backend="torch", **kw), theta0, 7)
    gpu, _ = _ts_run(ParticleDynamics(task, backend=be, **kw), theta0.to(dev()), 7)
    assert gpu.theta.device.type == dev().type
    assert torch.equal(gpu.generator.get_state(), cpu.generator.get_state())   # same draws
    assert rel_err(gpu.theta, cpu.theta) < TRAJ_TOL
    # the noise mattered: without it the run ends elsewhere
    quiet, _ = _ts_run(gradient_flow(task, dt=0.05, lam=0.1, backend="torch"), theta0, 7)
    assert (quiet.theta - cpu.theta).abs().max() > 1e-3


def test_noisy_dynamics_on_device_with_a_device_generator_reproduce():
    """The library's own randomness on the device: init(seed=…) makes a generator on θ's
    device; the same seed gives the same run (Langevin and online SGD, step loop)."""
    task = TeacherStudent.random(Unit(D, "relu", output_weight=True), 4, generator=gen(0))
    theta0 = _theta0(task, N=100).to(dev())
    for dyn in (langevin(task, dt=0.05, beta=100.0, backend="torch"), online_sgd(task, eps=0.05)):
        runs = [dyn.run(dyn.init(theta0, seed=3), 20) for _ in range(2)]
        assert runs[0].generator.device.type == dev().type
        assert runs[0].theta.device.type == dev().type and torch.isfinite(runs[0].theta).all()
        assert torch.equal(runs[0].theta, runs[1].theta)
        assert (runs[0].theta - theta0).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["langevin", "online-sgd"])
def test_library_dynamics_accept_a_cpu_generator_for_device_particles(kind):
    """Random numbers are drawn on the generator's device and moved to θ's (particles._noise,
    TeacherStudent.sample): the experiments' CPU generators drive CUDA particles."""
    if dev().type == "cpu":
        pytest.skip("meaningful on a CUDA device only")
    task = TeacherStudent.random(Unit(D, "relu", output_weight=True), 4, generator=gen(0))
    dyn = (langevin(task, dt=0.05, beta=100.0, backend="torch") if kind == "langevin"
           else online_sgd(task, eps=0.05))
    state = dyn.init(_theta0(task, N=50).to(dev()), generator=gen(1))
    state, _ = dyn.step(state)
    assert state.theta.device.type == dev().type


# ---------------------------------------------------------------------------------------
# 3. the ResNet conditional-OT flow
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
@pytest.mark.parametrize("name", ["torch", pytest.param("keops", marks=pytest.mark.keops)])
def test_resnet_cot_flow_on_device_follows_the_cpu_run(name, loss, rel_err, request):
    if name == "keops":
        request.getfixturevalue("keops_ready")
    L, M, n, d = 3, 4, 9, 2
    g = gen(0)
    A, Bm = lift_matrices(d, 2, d_out=d if loss == "squared" else 3)
    model = ResNet(A, Bm, activation="tanh", loss=loss)
    meas = grid_measure(torch.randn(B, L, M, model.P, generator=g, dtype=F64))
    X = torch.randn(n, d, generator=g, dtype=F64)
    Y = torch.sin(2 * X).flip(-1) if loss == "squared" else torch.randint(0, 3, (n,), generator=g)
    cpu_flow = conditional_ot_flow(model, X, Y, dt=0.05, backend="torch")
    dev_flow = conditional_ot_flow(model, X, Y, dt=0.05, backend=name)
    cpu = cpu_flow.run(cpu_flow.init(meas, generator=gen(1)), 50)
    on = dev_flow.run(dev_flow.init(meas.positions.to(dev()), meas.layer, generator=gen(1)), 50)
    assert on.theta.device.type == dev().type
    assert (cpu.theta - meas.positions).abs().max() > 1e-3
    assert rel_err(on.theta, cpu.theta) < TRAJ_TOL
    assert rel_err(dev_flow.loss(on), cpu_flow.loss(cpu)) < TRAJ_TOL


# ---------------------------------------------------------------------------------------
# 4. backend="auto" on the device
# ---------------------------------------------------------------------------------------

@pytest.mark.keops
def test_auto_on_device_switches_to_keops_above_the_cuda_threshold(keops_ready, tol, rel_err):
    """auto picks KeOps on CUDA from AUTO_KEOPS_PAIRS_CUDA pairs on (which backend is fastest at
    each N is measured by the GPU benchmark, ``auto`` in its JSON), and evaluate through auto
    on the device is exact there."""
    if dev().type != "cuda":
        pytest.skip("the CUDA rule needs a CUDA device")
    n = math.isqrt(AUTO_KEOPS_PAIRS_CUDA) + 1
    assert isinstance(get_backend("auto", N=n, M=n, d=D, device=dev()), KeOpsBackend)
    assert isinstance(get_backend("auto", N=n // 2, M=n // 2, d=D, device=dev()), TiledTorchBackend)
    task = TeacherStudent.random(Unit(D, "relu", output_weight=True), 4, generator=gen(0))
    theta, m = particles(task.D, n, seed=9, replicas=1)
    ref = evaluate(task, theta, m, backend="numpy")
    got = evaluate(task, theta.to(dev(), F32), m.to(dev(), F32), backend="auto")
    assert got.grad.device.type == "cuda"
    assert rel_err(got.grad, ref.grad) < tol(F32) and rel_err(got.risk, ref.risk) < tol(F32)
