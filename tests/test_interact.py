"""interact: the numpy reference, the tiled torch backend and KeOps agree on every closed-form
model (values and gradients, float64 and float32); tiling; explicit gradients vs autograd;
backend selection; Monte Carlo evaluation of sample-based tasks.

KeOps compiles one formula per (kernel, grad flag, dtype, d): every KeOps test uses d = D_KEOPS
so the whole file compiles at most 2 kernels × 2 flags × 2 dtypes = 8 formulas.
"""
import math

import pytest
import torch

import meanfield.interact as interact
from meanfield.errors import ConfigError
from meanfield.interact import (AUTO_KEOPS_PAIRS_CPU, KeOpsBackend, NumpyBackend, TiledTorchBackend, evaluate,
                                get_backend, keops_available)
from meanfield.models import IsotropicGaussians, TeacherStudent, Unit, gaussian_kernel

D_KEOPS = 5          # the one input dimension used with KeOps in this file
B = 2                # replicas

# (activation, output_weight, offset)
MODELS = [
    ("relu", True, 0.0),
    ("relu", False, 0.0),
    ("relu", True, 0.7),
    ("relu", False, -0.4),
    ("erf", True, 0.0),
    ("erf", False, 0.0),
]
MODEL_IDS = [f"{a}-{'a' if ow else 'noa'}-c{c}" for a, ow, c in MODELS]

BACKENDS = [
    "torch",
    pytest.param("keops", marks=pytest.mark.keops),
]
DTYPES = [torch.float64, torch.float32]


@pytest.fixture(scope="module")
def keops_ready():
    """KeOps must really be in use here (get_backend would silently fall back to torch)."""
    assert keops_available(), "pykeops or g++ is missing: the keops tests cannot run"
    assert isinstance(get_backend("keops"), KeOpsBackend)


def _backend(name, request):
    if name == "keops":
        request.getfixturevalue("keops_ready")
    be = get_backend(name)
    assert be.name == name
    return be


def _teacher(act, output_weight, offset, g, d=D_KEOPS, m0=4):
    unit = Unit(d, act, output_weight=output_weight)
    tt = torch.randn(m0, unit.D, generator=g, dtype=torch.float64)
    tw = torch.tensor([0.4, -0.25, 0.6, 0.3], dtype=torch.float64)[:m0]
    return unit, tt, tw, offset


def _task(spec):
    unit, tt, tw, offset = spec
    return TeacherStudent(unit, tt, tw, offset=offset, noise_std=0.1)


def _particles(D, N, g, replicas=B):
    theta = torch.randn(replicas, N, D, generator=g, dtype=torch.float64)
    m = torch.rand(replicas, N, generator=g, dtype=torch.float64) + 0.1
    return theta, m / m.sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------
# evaluate(): Ψ, V, R, ∇Ψ agree across backends
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_evaluate_backends_agree(model, backend, dtype, gen, tol, rel_err, request):
    be = _backend(backend, request)
    spec = _teacher(*model, gen(1))
    theta, m = _particles(spec[0].D, 60, gen(2))
    ref_task = _task(spec)
    ref = evaluate(ref_task, theta, m, backend="numpy")
    task = _task(spec)                   # fresh: R_# is computed by the backend under test
    got = evaluate(task, theta.to(dtype), m.to(dtype), backend=be)
    assert got.grad.dtype == dtype and got.psi.dtype == dtype
    assert got.risk_se is None and ref.risk_se is None
    assert task.risk_sharp == pytest.approx(ref_task.risk_sharp, rel=1e-12)   # always float64
    for name in ("psi", "V", "risk", "grad"):
        err = rel_err(getattr(got, name), getattr(ref, name))
        assert err < tol(dtype), f"{name}: relative error {err:.3g} on {backend}/{dtype}"


def test_evaluate_uniform_and_shared_weights(gen, rel_err):
    """weights None ≡ uniform 1/N; weights [N] ≡ the same row for every replica."""
    spec = _teacher("relu", True, 0.3, gen(3))
    theta, m = _particles(spec[0].D, 30, gen(4))
    be = get_backend("torch")
    uni = evaluate(_task(spec), theta, None, backend=be)
    uni2 = evaluate(_task(spec), theta, torch.full((B, 30), 1 / 30, dtype=torch.float64), backend=be)
    shared = evaluate(_task(spec), theta, m[0], backend=be)
    explicit = evaluate(_task(spec), theta, m[0].expand(B, 30), backend=be)
    for name in ("psi", "V", "risk", "grad"):
        assert rel_err(getattr(uni, name), getattr(uni2, name)) < 1e-14
        assert rel_err(getattr(shared, name), getattr(explicit, name)) < 1e-14
    # replicas are independent: replica 1 alone gives the same numbers
    one = evaluate(_task(spec), theta[1], m[1], backend=be)
    both = evaluate(_task(spec), theta, m, backend=be)
    for name in ("psi", "V", "risk", "grad"):
        assert rel_err(getattr(one, name)[0], getattr(both, name)[1]) < 1e-13


# ---------------------------------------------------------------------------------------
# kernel_sum directly: M != N, and a batch-1 source broadcast against B = 2
# ---------------------------------------------------------------------------------------

def _kernel_inputs(act, output_weight, g, N=40, M=25, d=D_KEOPS, src_batch=B):
    unit = Unit(d, act, output_weight=output_weight)
    x = torch.randn(B, N, unit.D, generator=g, dtype=torch.float64)
    y = torch.randn(src_batch, M, unit.D, generator=g, dtype=torch.float64)
    c = torch.randn(src_batch, M, generator=g, dtype=torch.float64)
    return unit, gaussian_kernel(unit), x, y, c


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("src_batch", [B, 1], ids=["src-B", "src-1"])
@pytest.mark.parametrize("act,output_weight", [("relu", True), ("relu", False), ("erf", True), ("erf", False)])
def test_kernel_sum_backends_agree(act, output_weight, src_batch, backend, dtype, gen, tol, rel_err, request):
    be = _backend(backend, request)
    unit, kern, x, y, c = _kernel_inputs(act, output_weight, gen(5), src_batch=src_batch)
    S_ref, G_ref = get_backend("numpy").kernel_sum(kern, unit, x, y, c)
    assert S_ref.shape == (B, 40) and G_ref.shape == (B, 40, unit.D)
    S, G = be.kernel_sum(kern, unit, x.to(dtype), y.to(dtype), c.to(dtype))
    S_only, G_none = be.kernel_sum(kern, unit, x.to(dtype), y.to(dtype), c.to(dtype), grad=False)
    assert G_none is None
    assert rel_err(S, S_ref) < tol(dtype)
    assert rel_err(G, G_ref) < tol(dtype)
    assert rel_err(S_only, S_ref) < tol(dtype)     # κ-only path (kernel.value) == full path


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_reference_broadcast_and_pairwise_definition(act, gen, rel_err):
    """The numpy reference: a batch-1 source equals the source repeated per replica, and
    S_i = Σ_j c_j U(x_i, y_j) pair by pair (U from one-pair sums)."""
    unit, kern, x, y, c = _kernel_inputs(act, True, gen(6), N=7, M=4, src_batch=1)
    ref = NumpyBackend()
    S1, G1 = ref.kernel_sum(kern, unit, x, y, c)
    S2, G2 = ref.kernel_sum(kern, unit, x, y.expand(B, -1, -1), c.expand(B, -1))
    assert rel_err(S1, S2) < 1e-15 and rel_err(G1, G2) < 1e-15
    one = torch.ones(1, 1, dtype=torch.float64)
    S_pairs = torch.zeros(B, 7, dtype=torch.float64)
    for j in range(4):
        Sj, _ = ref.kernel_sum(kern, unit, x, y[:, j:j + 1], one)
        S_pairs += c[0, j] * Sj
    assert rel_err(S1, S_pairs) < 1e-13
    # a tile smaller than N changes nothing
    S3, G3 = NumpyBackend(tile=2).kernel_sum(kern, unit, x, y, c)
    assert rel_err(S3, S1) < 1e-14 and rel_err(G3, G1) < 1e-14


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_torch_backend_tiles(act, gen, rel_err):
    unit, kern, x, y, c = _kernel_inputs(act, True, gen(7), N=37, M=23)
    tiny, big = TiledTorchBackend(tile_bytes=1), TiledTorchBackend(tile_bytes=2 ** 40)
    assert tiny.tile_rows(B, 23, 8) == 1 and big.tile_rows(B, 23, 8) >= 37
    for grad in (True, False):
        S_t, G_t = tiny.kernel_sum(kern, unit, x, y, c, grad=grad)
        S_b, G_b = big.kernel_sum(kern, unit, x, y, c, grad=grad)
        assert S_t.shape == S_b.shape == (B, 37)
        assert rel_err(S_t, S_b) < 1e-14
        if grad:
            assert rel_err(G_t, G_b) < 1e-14
    # a middle tile size that does not divide N
    mid = TiledTorchBackend(tile_bytes=8 * B * 23 * 8 * 5)
    assert mid.tile_rows(B, 23, 8) == 5
    S_m, G_m = mid.kernel_sum(kern, unit, x, y, c)
    assert rel_err(S_m, S_b) < 1e-14 and rel_err(G_m, big.kernel_sum(kern, unit, x, y, c)[1]) < 1e-14


@pytest.mark.parametrize("act,output_weight,same", [("relu", True, False), ("relu", False, False),
                                                    ("erf", True, True), ("erf", False, True),
                                                    ("erf", True, False)])
def test_explicit_gradient_equals_autograd(act, output_weight, same, gen, rel_err):
    """G_i = ∂S_i/∂x_i with the sources y held fixed (S_k depends on x_k only, so the
    gradient of Σ_k S_k w.r.t. x_i is ∂S_i/∂x_i).  For erf also with y a detached copy of x
    (self-pairs included; the ReLU kernel is not differentiable by autograd at φ = 0)."""
    unit, kern, x, y, c = _kernel_inputs(act, output_weight, gen(8), N=30, M=30)
    if same:
        y = x.detach().clone()
    be = TiledTorchBackend()
    _, G = be.kernel_sum(kern, unit, x, y, c)
    for grad_flag in (False, True):                   # autograd through κ-only and full formulas
        xx = x.clone().requires_grad_(True)
        S, _ = be.kernel_sum(kern, unit, xx, y, c, grad=grad_flag)
        (auto,) = torch.autograd.grad(S.sum(), xx)
        assert torch.isfinite(auto).all()
        assert rel_err(G, auto) < 1e-12


# ---------------------------------------------------------------------------------------
# backend selection
# ---------------------------------------------------------------------------------------

def test_get_backend_names():
    assert isinstance(get_backend("numpy"), NumpyBackend)
    assert isinstance(get_backend("torch"), TiledTorchBackend)
    mine = TiledTorchBackend(tile_bytes=123)
    assert get_backend(mine) is mine
    with pytest.raises(ConfigError, match="'nope'"):
        get_backend("nope")
    with pytest.raises(ConfigError, match="nope"):
        evaluate(TeacherStudent(Unit(3, "relu"), torch.ones(1, 4)), torch.ones(2, 4), backend="nope")


@pytest.mark.keops
def test_get_backend_auto(keops_ready):
    small = get_backend("auto", N=100, M=100, d=D_KEOPS)
    assert isinstance(small, TiledTorchBackend)
    side = math.isqrt(AUTO_KEOPS_PAIRS_CPU) + 1
    assert side * side >= AUTO_KEOPS_PAIRS_CPU
    assert isinstance(get_backend("auto", N=side, M=side, d=D_KEOPS), KeOpsBackend)
    # just below the threshold: torch
    assert isinstance(get_backend("auto", N=AUTO_KEOPS_PAIRS_CPU - 1, M=1, d=D_KEOPS), TiledTorchBackend)
    # KeOps is weak at large feature dimension
    big_d = interact.AUTO_KEOPS_MAX_DIM + 1
    assert isinstance(get_backend("auto", N=side, M=side, d=big_d), TiledTorchBackend)
    # on CUDA KeOps wins earlier (only the decision is tested; nothing runs on the device)
    n = math.isqrt(interact.AUTO_KEOPS_PAIRS_CUDA) + 1
    assert isinstance(get_backend("auto", N=n, M=n, d=D_KEOPS, device="cuda"), KeOpsBackend)
    assert isinstance(get_backend("auto", N=n, M=n, d=D_KEOPS, device="cpu"), TiledTorchBackend)


# ---------------------------------------------------------------------------------------
# sample-based tasks through evaluate
# ---------------------------------------------------------------------------------------

def test_evaluate_isotropic_gaussians_needs_n_mc(gen):
    task = IsotropicGaussians(Unit(3, "relu", output_weight=False), 0.5)
    theta = torch.randn(B, 10, 3, generator=gen(9), dtype=torch.float64)
    with pytest.raises(ConfigError, match="n_mc"):
        evaluate(task, theta)
    with pytest.raises(ConfigError, match="n_mc"):
        evaluate(task, theta, n_mc=100)                 # no generator


def test_evaluate_isotropic_gaussians_monte_carlo(gen):
    d, N, n = 3, 10, 2000
    unit = Unit(d, "relu", output_weight=False)
    task = IsotropicGaussians(unit, 0.5)
    theta = torch.randn(B, N, d, generator=gen(9), dtype=torch.float64)
    m = torch.rand(N, generator=gen(10), dtype=torch.float64)
    m = m / m.sum()
    pot = evaluate(task, theta, m, n_mc=n, generator=gen(11))
    # the same draws by hand
    x, y = task.sample(n, generator=gen(11), batch=B, dtype=torch.float64)
    phi = torch.relu(x @ theta.transpose(-1, -2))                        # [B, n, N]
    r = phi @ m - y                                                      # [B, n]
    sq = r * r
    torch.testing.assert_close(pot.risk, sq.mean(-1), rtol=1e-12, atol=0)
    assert pot.risk_se is not None
    torch.testing.assert_close(pot.risk_se, sq.std(-1) / math.sqrt(n), rtol=1e-12, atol=0)
    torch.testing.assert_close(pot.psi, (r.unsqueeze(-1) * phi).mean(-2), rtol=1e-12, atol=1e-15)
    # replicas see independent data
    assert (pot.risk[0] - pot.risk[1]).abs() > 0


# ---------------------------------------------------------------------------------------
# the fused native loop in float64: vectorisable arccos/arcsin, 1e-12 agreement
# ---------------------------------------------------------------------------------------

def _ulps(got, ref, dtype):
    """|got − ref| in units of the spacing of dtype at |ref| (float64 arithmetic)."""
    import numpy as np

    spacing = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / np.maximum(spacing, np.finfo(dtype).smallest_subnormal)


@pytest.mark.skipif(not interact.native.enabled(), reason="no C++ compiler")
@pytest.mark.parametrize("dtype,max_ulp", [(torch.float64, 3.0), (torch.float32, 3.0)], ids=["f64", "f32"])
def test_native_acos_asin_match_numpy(dtype, max_ulp):
    """The branch-free mf_acos/mf_asin of the fused loops against numpy (correctly rounded to
    within an ulp) on a dense grid of [−1, 1] with both ends, ±½ (where the two branches
    meet) and their neighbours, and points piling up at ±1 (1 ∓ 10⁻¹⁶ … 1 ∓ 10⁻¹)."""
    import numpy as np

    npd = {torch.float64: np.float64, torch.float32: np.float32}[dtype]
    one = npd(1)
    special = [-1, 1, 0.5, -0.5, 0.0, -0.0, 1e-300, -1e-300]
    x = np.concatenate([np.linspace(-1, 1, 400_001), special,
                        1 - np.logspace(-16, -1, 2001), -1 + np.logspace(-16, -1, 2001)]).astype(npd)
    x = np.concatenate([x, [np.nextafter(npd(0.5), one), np.nextafter(npd(0.5), -one),
                            np.nextafter(npd(-0.5), one), np.nextafter(npd(-0.5), -one),
                            np.nextafter(one, -one), np.nextafter(-one, one)]]).astype(npd)
    xd = x.astype(np.float64)                  # reference in float64 (float32: exact input)
    for fn, ref in (("acos", np.arccos), ("asin", np.arcsin)):
        got = interact.native.vector_math(fn, torch.from_numpy(x)).numpy()
        assert got.dtype == npd
        err = _ulps(got, ref(xd), npd)
        assert err.max() <= max_ulp, (fn, float(err.max()), float(x[err.argmax()]))
    assert interact.native.vector_math("acos", torch.tensor([1.0, -1.0], dtype=dtype)).tolist() == \
        [0.0, pytest.approx(math.pi, rel=1e-7)]
    with pytest.raises(ValueError, match="fn"):
        interact.native.vector_math("atan", torch.zeros(2, dtype=dtype))


@pytest.mark.skipif(not interact.native.enabled(), reason="no C++ compiler")
@pytest.mark.parametrize("act,output_weight", [("relu", True), ("relu", False), ("erf", True), ("erf", False)])
@pytest.mark.parametrize("d,N,M", [(5, 37, 90), (20, 9, 70)], ids=["simd", "strips"])
def test_float64_fused_loop_matches_reference(act, output_weight, d, N, M, gen, rel_err, monkeypatch):
    """float64 CPU inputs without autograd take the fused C++ loop (the eager tiles are never
    called), and its S and G agree with the numpy reference to 1e-12 relative, with sources
    broadcast or not and (near-)coincident pairs (c → 1, where arccos is steepest)."""
    unit = Unit(d, act, output_weight=output_weight)
    kern = gaussian_kernel(unit)
    be = TiledTorchBackend()

    def no_eager(*a, **k):
        raise AssertionError("float64 took the eager tiles")

    monkeypatch.setattr(TiledTorchBackend, "_eager_sum", no_eager)
    x = torch.randn(B, N, unit.D, generator=gen(d), dtype=torch.float64)
    for yb in (1, B):
        y = torch.randn(yb, M, unit.D, generator=gen(d + 1), dtype=torch.float64)
        y[0, :N] = x[0]                                          # self-pairs: c = 1 up to rounding
        y[-1, N:2 * N] = x[-1] * (1 + 1e-9)                      # parallel pairs
        c = torch.randn(yb, M, generator=gen(d + 2), dtype=torch.float64)
        assert be.uses_native(kern, x, y, c)
        S0, G0 = NumpyBackend().kernel_sum(kern, unit, x, y, c)
        for grad in (True, False):
            S, G = be.kernel_sum(kern, unit, x, y, c, grad=grad)
            assert S.dtype == torch.float64 and S.shape == S0.shape
            assert rel_err(S, S0) < 1e-12
            if grad:
                assert G.dtype == torch.float64 and rel_err(G, G0) < 1e-12
    # mixed dtypes and autograd do not take the fused loop
    assert not be.uses_native(kern, x, y.float(), c)
    assert not be.uses_native(kern, x.clone().requires_grad_(), y, c)


@pytest.mark.skipif(not interact.native.enabled(), reason="no C++ compiler")
def test_float64_evaluate_uses_fused_loop(gen, rel_err, monkeypatch):
    """evaluate() in float64 on the CPU (what `--set dtype=float64` runs) goes through the fused
    loop and matches the numpy reference to 1e-12 (Ψ, V, R, ∇Ψ)."""
    spec = _teacher("relu", True, 0.3, gen(12), d=10)
    theta, m = _particles(spec[0].D, 300, gen(13))
    ref = evaluate(_task(spec), theta, m, backend="numpy")
    calls = []
    native_sum = TiledTorchBackend._native_sum
    monkeypatch.setattr(TiledTorchBackend, "_native_sum",
                        staticmethod(lambda *a: calls.append(1) or native_sum(*a)))
    monkeypatch.setattr(TiledTorchBackend, "_eager_sum", lambda *a, **k: 1 / 0)
    got = evaluate(_task(spec), theta, m, backend="torch")
    assert calls
    for name in ("psi", "V", "risk", "grad"):
        assert rel_err(getattr(got, name), getattr(ref, name)) < 1e-12, name
