"""linear-obstruction: GD on f(θ) = ‖e^θ + I‖² from θ = 0 follows θ_k = −a_k I with
a_{k+1} = a_k + 2dt e^{−a_k}(1 + e^{−a_k}), so e^θ → 0 and f → d without converging."""
import json
import math

import numpy as np
import pytest
import torch

from meanfield import io
from meanfield.cli import main
from meanfield.dynamics.matrix_gd import MatrixGD
from meanfield.models.linear_ode import objective

SMALL = ["--set", "scale=small", "--set", "log_every=20", "--set", "save_every=100",
         "--set", "checkpoint_every=50", "--no-progress"]


class _Crash(Exception):
    pass


def test_gradient_of_the_objective_matches_the_closed_form(gen):
    # at θ = −aI: ∇f = 2 e^{−a}(1 + e^{−a}) I; at a general θ, a central difference
    a = 0.7
    th = torch.full((1, 1, 4), 0.0, dtype=torch.float64)
    th[0, 0, [0, 3]] = -a
    from meanfield.dynamics import ParticleState

    st = ParticleState(th, None, 0, 0.0, gen(0))
    g = MatrixGD(2, 0.1).grad(st).reshape(2, 2)
    np.testing.assert_allclose(g, 2 * math.exp(-a) * (1 + math.exp(-a)) * torch.eye(2, dtype=torch.float64),
                               rtol=1e-12)
    th = torch.randn(1, 1, 9, generator=gen(1), dtype=torch.float64)
    st = ParticleState(th, None, 0, 0.0, gen(0))
    g = MatrixGD(3, 0.1).grad(st).reshape(9)
    E = torch.randn(9, generator=gen(2), dtype=torch.float64)
    h = 1e-6
    fd = (objective((th.reshape(9) + h * E).reshape(3, 3)) - objective((th.reshape(9) - h * E).reshape(3, 3))) / (2 * h)
    # central difference O(h²) and round-off 1e-16/h; measured 2e-9 relative
    assert abs(float(fd) - float(g @ E)) < 1e-7 * abs(float(fd))


def test_small_mode_never_converges_from_zero_and_resumes_bit_for_bit(tmp_path, capsys, monkeypatch):
    ref = tmp_path / "ref"
    assert main(["run", "linear-obstruction", "--out", str(ref), *SMALL]) == 0
    capsys.readouterr()
    m = io.read_metrics(ref / io.METRICS)
    dt, d = 0.05, 2
    # replica 0 stays symmetric and follows the scalar recursion exactly (float64 round-off)
    a, expect = 0.0, {}
    for k in range(201):
        expect[k] = a
        a = a + 2 * dt * math.exp(-a) * (1 + math.exp(-a))
    steps = m["step"].astype(int)
    np.testing.assert_allclose(-m["maxre_r0"], [expect[k] for k in steps], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(m["skew_r0"], 0.0)
    f = m["risk_r0"]
    assert (np.diff(f) < 0).all() and (f > d).all()                     # f decreases towards d, never below
    assert (np.diff(m["expnorm_r0"]) < 0).all() and m["expnorm_r0"][-1] < 0.2
    with np.load(ref / io.PARTICLES) as z:
        assert z["theta"].shape == (3, 3, 1, 4) and z["layer"].shape == (1,)
        np.testing.assert_allclose(z["theta"][-1, 0, 0], [-expect[200], 0, 0, -expect[200]], rtol=1e-10)
    res = json.loads((ref / "results.json").read_text())
    assert res["final"]["risk_r0"] > d
    # crash mid-run (after the checkpoint at step 100), resume, same bytes
    crashed = tmp_path / "crashed"
    real, calls = MatrixGD.step, {"n": 0}

    def crashing(self, state):
        calls["n"] += 1
        if calls["n"] == 120:
            raise _Crash()
        return real(self, state)

    monkeypatch.setattr(MatrixGD, "step", crashing)
    with pytest.raises(_Crash):
        main(["run", "linear-obstruction", "--out", str(crashed), *SMALL])
    monkeypatch.setattr(MatrixGD, "step", real)
    assert io.load_checkpoint(crashed / io.CHECKPOINT)["progress"]["step"] == 100
    assert main(["resume", str(crashed), "--no-progress"]) == 0
    assert (ref / io.METRICS).read_bytes() == (crashed / io.METRICS).read_bytes()
    assert (ref / "results.json").read_bytes() == (crashed / "results.json").read_bytes()
