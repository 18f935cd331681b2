"""The two-layer torch bridge: ``mf.to_module`` / ``mf.from_module``.

Every comparison is against plain torch code written here (never the library's own forward):
round trips are exact, forward values agree to 1e-6 (float32) / 1e-12 (float64), and one
step of ``gradient_flow`` on a ``FiniteDataset`` with step dt is one ``torch.optim.SGD`` step
with lr = N·dt on the module's loss (squared and logistic, no ½; weight_decay = 2λ/N)."""
import hashlib
import math

import pytest
import torch

import meanfield as mf
from meanfield.errors import ConfigError
from meanfield.models.twolayer_torch import ActivationModule

F32, F64 = torch.float32, torch.float64
TOL = {F32: 1e-6, F64: 1e-12}
PLAIN = {"relu": torch.relu, "tanh": torch.tanh,
         "erf": lambda z: torch.erf(z / math.sqrt(2.0)), "sigmoid": torch.sigmoid}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_theta(unit, N, dtype, seed=0):
    return torch.randn(N, unit.D, generator=gen(seed), dtype=F64).to(dtype)


def plain_f(theta, unit, x, weights=None):
    """f(x) = Σ_i m_i a_i σ(⟨w_i, x⟩ + b_i), written out column by column."""
    N = theta.shape[0]
    k = 0
    a = None
    if unit.output_weight:
        a, k = theta[:, 0], 1
    W = theta[:, k:k + unit.d]
    z = x @ W.T
    if unit.bias:
        z = z + theta[:, -1]
    h = PLAIN[unit.activation.name](z)
    if a is not None:
        h = h * a
    m = torch.full((N,), 1.0 / N, dtype=theta.dtype) if weights is None else weights
    return h @ m


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


UNITS = [("relu", True, False), ("relu", True, True), ("tanh", False, True), ("erf", True, True)]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("act,ow,bias", UNITS)
def test_measure_module_round_trips_are_exact_and_forward_is_f(act, ow, bias, dtype):
    unit = mf.Unit(4, act, output_weight=ow, bias=bias)
    theta = random_theta(unit, 9, dtype)
    x = torch.randn(30, 4, generator=gen(1), dtype=F64).to(dtype)
    w = torch.rand(9, generator=gen(2), dtype=F64) + 0.2
    w = (w / w.sum()).to(dtype)
    for weights in (None, w):
        meas = mf.ParticleMeasure(theta, weights=weights)
        mod = mf.to_module(unit, meas)
        assert isinstance(mod, torch.nn.Module) and mod.W.dtype == dtype
        unit2, meas2 = mf.from_module(mod)                            # measure -> module -> measure
        assert unit2 == unit and torch.equal(meas2.positions, theta)
        assert (meas2.weights is None) == (weights is None)
        if weights is not None:
            assert torch.equal(meas2.weights, weights)
        mod2 = mf.to_module(unit2, meas2)                             # module -> measure -> module
        for (n1, p1), (n2, p2) in zip(mod.state_dict().items(), mod2.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2)
        out = mod(x)
        assert out.shape == (30, 1)
        assert rel(out[:, 0], plain_f(theta, unit, x, weights)) < TOL[dtype]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("act,bias", [("relu", True), ("relu", False), ("tanh", True),
                                      ("sigmoid", False), ("erf", True)])
def test_a_plain_sequential_reads_as_a_measure_with_a_equal_N_c(act, bias, dtype):
    torch.manual_seed(0)
    d, N = 5, 12
    layer = {"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid(),
             "erf": ActivationModule("erf")}[act]
    seq = torch.nn.Sequential(torch.nn.Linear(d, N, bias=bias), layer,
                              torch.nn.Linear(N, 1, bias=False)).to(dtype)
    unit, meas = mf.from_module(seq)
    assert unit == mf.Unit(d, act, output_weight=True, bias=bias) and meas.weights is None
    th = meas.positions
    assert torch.equal(th[:, 0], seq[2].weight[0].detach() * N)          # a_j = N c_j
    assert torch.equal(th[:, 1:1 + d], seq[0].weight.detach())
    if bias:
        assert torch.equal(th[:, -1], seq[0].bias.detach())
    x = torch.randn(40, d, generator=gen(3), dtype=F64).to(dtype)
    with torch.no_grad():
        ref = seq(x)[:, 0]
        assert rel(mf.to_module(unit, meas)(x)[:, 0], ref) < TOL[dtype]
        assert rel(plain_f(th, unit, x), ref) < TOL[dtype]
    # and the reading round-trips exactly through the module
    unit2, meas2 = mf.from_module(mf.to_module(unit, meas))
    assert unit2 == unit and torch.equal(meas2.positions, th)


def _one_flow_step_and_one_sgd_step(loss, dtype, lam, bias):
    N, d, n, dt = 16, 3, 25, 0.3
    g = gen(4)
    unit = mf.Unit(d, "relu", output_weight=True, bias=bias)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.sign(torch.randn(n, generator=g, dtype=F64)) if loss == "logistic" else \
        torch.randn(n, generator=g, dtype=F64)
    theta = torch.randn(N, unit.D, generator=g, dtype=F64).to(dtype)
    task = mf.FiniteDataset(unit, X, y, loss=loss)
    flow = mf.gradient_flow(task, dt=dt, lam=lam, backend="torch")
    ours = flow.step(flow.init(theta))[0].theta
    # plain torch: the parameters of f(x) = (1/N) Σ_i a_i relu(⟨w_i, x⟩ + b_i), SGD, lr = N·dt
    a = theta[:, 0].clone().requires_grad_(True)
    W = theta[:, 1:1 + d].clone().requires_grad_(True)
    b = theta[:, -1].clone().requires_grad_(True) if bias else None
    params = [a, W] + ([b] if bias else [])
    opt = torch.optim.SGD(params, lr=N * dt, weight_decay=2 * lam / N)
    Xd, yd = X.to(dtype), y.to(dtype)
    z = Xd @ W.T + (b if bias else 0.0)
    f = (a * torch.relu(z)).mean(-1)
    R = ((yd - f) ** 2).mean() if loss == "squared" else torch.log(1 + torch.exp(-yd * f)).mean()
    opt.zero_grad()
    R.backward()
    opt.step()
    theirs = torch.cat([a.detach()[:, None], W.detach()] + ([b.detach()[:, None]] if bias else []), -1)
    # the module of the measure, stepped the same way through its own loss
    mod = mf.to_module(unit, mf.ParticleMeasure(theta), loss=loss)
    opt = torch.optim.SGD(mod.parameters(), lr=N * dt, weight_decay=2 * lam / N)
    opt.zero_grad()
    mod.loss(Xd, yd).backward()
    opt.step()
    via_module = mf.from_module(mod)[1].positions
    assert float((theirs - theta).abs().max()) > 1e-3                   # the step moved
    return ours, theirs, via_module


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_one_flow_step_is_one_sgd_step_with_lr_N_dt(loss, dtype):
    for lam, bias in ((0.0, False), (0.05, True)):
        ours, theirs, via_module = _one_flow_step_and_one_sgd_step(loss, dtype, lam, bias)
        # measured: ≤ 2.4e-7 (float32), ≤ 4.5e-16 (float64)
        tol = 1e-6 if dtype == F32 else 1e-12
        assert float((ours - theirs).abs().max()) < tol, (loss, dtype, lam, bias)
        assert float((via_module - theirs).abs().max()) < tol


def test_bad_modules_and_measures_are_one_line_errors():
    seq = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with pytest.raises(ConfigError, match="output layer has a bias"):
        mf.from_module(seq)
    with torch.no_grad():
        seq[2].bias.zero_()
    assert mf.from_module(seq)[0].bias                                  # a zero output bias is fine
    with pytest.raises(ConfigError, match="GELU.*nn.ReLU"):
        mf.from_module(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(),
                                           torch.nn.Linear(4, 1, bias=False)))
    with pytest.raises(ConfigError, match=r"nn.Linear\(4, 1\)"):
        mf.from_module(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
                                           torch.nn.Linear(4, 2, bias=False)))
    with pytest.raises(ConfigError, match="Sequential"):
        mf.from_module(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()))
    from meanfield.models.resnet_torch import ResNetModule

    with pytest.raises(ConfigError, match="resnet_torch.from_module"):
        mf.from_module(ResNetModule(torch.eye(2), torch.eye(2), 1, 2))
    unit = mf.Unit(3, "relu")
    with pytest.raises(ConfigError, match=r"\[N, D\]"):
        mf.to_module(unit, mf.ParticleMeasure(torch.randn(2, 5, 4)))
    with pytest.raises(ConfigError, match="D=4"):
        mf.to_module(unit, torch.randn(5, 3))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_an_output_bias_reads_as_a_fixed_offset_and_both_layouts_rebuild_the_function(dtype):
    torch.manual_seed(1)
    d, N = 4, 11
    seq = torch.nn.Sequential(torch.nn.Linear(d, N), torch.nn.Tanh(), torch.nn.Linear(N, 1)).to(dtype)
    c = float(seq[2].bias.detach()[0])
    unit, meas, off = mf.from_module(seq, offset=True)
    assert off == c != 0.0 and unit == mf.Unit(d, "tanh", output_weight=True, bias=True)
    x = torch.randn(30, d, generator=gen(5), dtype=F64).to(dtype)
    with torch.no_grad():
        ref = seq(x)[:, 0]
        mod = mf.to_module(unit, meas, offset=off)
        plain = mf.to_module(unit, meas, offset=off, layout="sequential")
        assert rel(mod(x)[:, 0], ref) < TOL[dtype] and rel(plain(x)[:, 0], ref) < TOL[dtype]
        # without the offset: f alone, c below the original everywhere
        assert rel(mf.to_module(unit, meas)(x)[:, 0] + c, ref) < TOL[dtype]
    assert isinstance(plain, torch.nn.Sequential) and type(plain[1]) is torch.nn.Tanh
    assert torch.equal(plain[0].weight, seq[0].weight) and torch.equal(plain[0].bias, seq[0].bias)
    assert torch.allclose(plain[2].weight, seq[2].weight, rtol=TOL[dtype], atol=0)   # c_j = a_j / N
    # the module's offset round-trips; read without offset=True it is refused
    u2, m2, off2 = mf.from_module(mod, offset=True)
    assert off2 == pytest.approx(c, rel=TOL[dtype]) and torch.equal(m2.positions, meas.positions)
    with pytest.raises(ConfigError, match="fixed offset with from_module\\(module, offset=True\\)"):
        mf.from_module(mod)
    with pytest.raises(ConfigError, match="output layer has a bias"):
        mf.from_module(seq)


def test_the_sequential_layout_of_a_weighted_measure_without_output_weight_is_the_same_function():
    unit = mf.Unit(3, "erf", output_weight=False, bias=True)
    theta = random_theta(unit, 7, F64)
    w = torch.rand(7, generator=gen(2), dtype=F64)
    meas = mf.ParticleMeasure(theta, weights=w / w.sum())
    seq = mf.to_module(unit, meas, layout="sequential")
    x = torch.randn(25, 3, generator=gen(6), dtype=F64)
    with torch.no_grad():
        assert rel(seq(x)[:, 0], plain_f(theta, unit, x, meas.weights)) < 1e-12
    assert seq[2].bias is None and isinstance(seq[1], ActivationModule)
    u2, m2 = mf.from_module(seq)                           # read back: a_j = N m_j, uniform
    assert u2 == mf.Unit(3, "erf", output_weight=True, bias=True)
    assert torch.allclose(m2.positions[:, 0], 7 * meas.weights, rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="layout must be one of"):
        mf.to_module(unit, meas, layout="keras")
    with pytest.raises(ConfigError, match="offset must be a finite number"):
        mf.to_module(unit, meas, offset=float("nan"))


def test_load_module_reads_a_module_its_state_dict_and_an_export_alike(tmp_path):
    from meanfield.models.twolayer_torch import export_payload, load_module

    torch.manual_seed(2)
    seq = torch.nn.Sequential(torch.nn.Linear(3, 5), ActivationModule("erf"), torch.nn.Linear(5, 1))
    torch.save(seq, tmp_path / "module.pt")
    torch.save(seq.state_dict(), tmp_path / "state.pt")
    torch.save(export_payload(seq, "erf"), tmp_path / "export.pt")
    got = [load_module(tmp_path / f, activation="erf") for f in ("module.pt", "state.pt", "export.pt")]
    for unit, meas, c, sha in got:
        assert unit == got[0][0] and torch.equal(meas.positions, got[0][1].positions)
        assert c == float(seq[2].bias.detach()[0]) and len(sha) == 64
    assert got[0][3] == hashlib.sha256((tmp_path / "module.pt").read_bytes()).hexdigest()
    # an export holds plain tensors and names: torch alone reads it
    payload = torch.load(tmp_path / "export.pt", weights_only=True)
    assert payload["activation"] == {"name": "erf"} and payload["torch_activation"] is None
    with pytest.raises(ConfigError, match="does not say its activation"):
        load_module(tmp_path / "state.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="holds a list, not nn.Sequential"):
        load_module(tmp_path / "list.pt")
