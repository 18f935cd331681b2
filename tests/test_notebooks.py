"""Every notebook (jupytext percent script in notebooks/) runs top to bottom in its small mode
(MEANFIELD_SMALL=1) in a fresh process, asserts on what it computed (the asserts live in the
notebook), and writes its figures.

The selected notebooks run two at a time (one torch thread each: the CI machine has 2 cores
and each notebook is mostly single-threaded Python), then one test per notebook checks its
exit status and figures."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
# figures each notebook must produce (under $MEANFIELD_NOTEBOOK_OUT/<notebook name>/)
FIGURES = {
    "01_quickstart": ["risk.png", "particles.png", "movie.gif"],
    "02_mmn_pde": ["pde_densities.png", "run/figures/risk.png", "run/figures/histograms.png", "movie.gif"],
    "03_n_dependence": ["n_dependence.png", "run/figures/n_scaling.png"],
    "04_chizat_bach": ["relu2d_trajectories.png", "relu2d_risk.png", "threshold.png", "movie.gif"],
    "05_langevin": ["pde_gibbs.png", "pde_free_energy.png", "torus_free_energy.png",
                    "torus_annealing.png", "run/figures/free_energy.png", "run/figures/annealing.png",
                    "run/figures/particles.png"],
    "06_resnet_cot": ["training.png", "limits.png", "run/figures/limits.png", "movie.gif"],
    "07_rkhs_resnet": ["rkhs_kernel.png", "rkhs_training.png", "obstruction_matrix.png",
                       "obstruction_resnet.png", "rkhs/figures/training.png",
                       "linear-obstruction-d3/figures/obstruction.png"],
    "08_your_network": ["units.png", "training.png", "n_sweep.png"],
}
# the key numbers each notebook prints, parsed from its stdout: (regex with one number group,
# low, high) — what the notebook claims, in ranges its small mode resolves (measured values in
# the comments); a notebook whose subject were replaced by a constant would print other numbers
NUM = r"([-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)"
KEY_NUMBERS = {
    "01_quickstart": [(rf"final risk {NUM}", 1e-4, 5e-3)],                                # 1.2e-3
    "02_mmn_pde": [(rf"t =  8\.0   R = {NUM}", 0.275, 0.295),                             # 0.2853
                   (rf"t =  0\.0   R = {NUM}", 1.70, 1.71),                               # 1.7045
                   (rf"/ \(0\.05 R_PDE \+ 25/N\) = {NUM}", 0.0, 1.0),                   # 0.223
                   (rf"max W1\(\|w\|, PDE\) / E_PDE r = {NUM}", 0.0, 0.05)],           # 0.014
    "03_n_dependence": [(rf"i\.i\.d\. slope {NUM}", -1.05, -0.95),                       # −1.003
                        (rf"N =    32: mean R = \S+ ± \S+,  N·R/K\* = {NUM}", 0.9, 1.1),  # 1.000
                        (rf"GD slope {NUM}", -1.5, -1.0),                                 # −1.370
                        (rf"gap / i\.i\.d\. excess at N_max = {NUM}", 0.0, 0.01)],       # 1.2e-3
    "04_chizat_bach": [(rf"T = 600: m\* = {NUM}", 7, 7), (rf"T = 1200: m\* = {NUM}", 5, 5),  # m0 = 5
                       (rf"^m = 20: final risks \[{NUM}", 1e-5, 1e-4),                  # 5.5e-5
                       (rf"from t = 9: max \|balance − flow value\| / max \|balance\(t\)\| = {NUM}",
                        0.0, 5e-3)],                                                    # 1.1e-3
    "07_rkhs_resnet": [(rf"ν = 0\.5: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 0.99, 1.01),
                       (rf"ν = 1: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 1.99, 2.01),
                       (rf"ν = 1\.5: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 1.99, 2.01),
                       (rf"ν = inf: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 1.99, 2.01),
                       (rf"linear, lifted D = 6   loss \S+ -> {NUM}", 0.0, 1e-4),           # 8.5e-8
                       (rf"linear, D = 3          loss \S+ -> {NUM}", 0.5, 2.0)],          # 0.95: stuck
    "05_langevin": [(rf"β = 20: max_t ΔF = {NUM}", -1.0, 1e-12),                      # F decreases
                    (rf"β = 20: max_t ΔF = \S+ \(≤ 0 up to round-off\), ‖P_T − P\*‖₁ = {NUM}", 0.0, 1e-6),
                    (rf"agrees with gibbs_fixed_point to {NUM}", 0.0, 1e-10),
                    (rf"annealed below noiseless in {NUM}% of seeds", 75, 100),             # 100
                    (rf"annealed below noiseless in \S+ of seeds; ratio of means {NUM}", 0.0, 0.5)],  # 0.17
    "06_resnet_cot": [(rf"max \|module\(X\) − model\(X\)\| = {NUM}", 0.0, 1e-12),
                      (rf"max \|v \+ L·M ∇_θ loss\| / max \|v\| = {NUM}", 0.0, 1e-12),
                      (rf"max \|θ_flow − θ_SGD\| = {NUM}", 0.0, 1e-10),
                      (rf"discretisation gap \S+ -> \S+ \(ratio {NUM}\)", 3.0, 5.0),   # 3.80
                      (rf"against 1/L − 1/L_ref {NUM}", 0.8, 1.5),                        # 1.18
                      (rf"against 1/L − 1/L_ref \S+, against 1/M \+ 1/M_ref {NUM}", 0.2, 0.6)],  # 0.38
    "08_your_network": [(rf"\|f\(x; ρ_N\) − net\(x\)\| = {NUM}", 0.0, 1e-12),
                        (rf"lr = N·dt: max \|Δθ\| = {NUM}", 0.0, 1e-12),
                        (rf"^\s+100\s+{NUM}", 0.0, 0.05)],                                # 0.0177
}
BUDGET_S = 240          # per notebook, in small mode
PARALLEL = 2


def test_every_notebook_has_a_figure_list():
    assert {p.stem for p in NOTEBOOKS} <= set(FIGURES), "add the new notebook to FIGURES"
    assert len(NOTEBOOKS) >= 8


def _run(path, out):
    env = {**os.environ, "MEANFIELD_SMALL": "1", "MEANFIELD_NOTEBOOK_OUT": str(out),
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        return subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=BUDGET_S)
    except subprocess.TimeoutExpired as e:
        return e


@pytest.fixture(scope="module")
def notebook_runs(request, tmp_path_factory):
    """{stem: (result, output folder)} for the notebooks selected in this session."""
    selected = [p for p in NOTEBOOKS
                if any(it.nodeid.endswith(f"[{p.stem}]") for it in request.session.items)]
    outs = {p.stem: tmp_path_factory.mktemp(p.stem) for p in selected}
    with ThreadPoolExecutor(PARALLEL) as pool:
        res = dict(zip(outs, pool.map(lambda p: _run(p, outs[p.stem]), selected)))
    return {k: (res[k], outs[k]) for k in outs}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path, notebook_runs):
    res, out = notebook_runs[path.stem]
    assert not isinstance(res, subprocess.TimeoutExpired), f"{path.name}: over {BUDGET_S} s"
    assert res.returncode == 0, res.stderr[-3000:]
    for fig in FIGURES[path.stem]:
        f = out / path.stem / fig
        assert f.exists() and f.stat().st_size > 5_000, f


@pytest.mark.parametrize("stem", sorted(KEY_NUMBERS))
def test_notebook_prints_its_key_numbers(stem, notebook_runs):
    """The numbers each notebook prints lie where its claims put them (KEY_NUMBERS)."""
    import re

    res, _ = notebook_runs[stem]
    assert not isinstance(res, subprocess.TimeoutExpired) and res.returncode == 0
    for pattern, lo, hi in KEY_NUMBERS[stem]:
        found = re.search(pattern, res.stdout, re.MULTILINE)
        assert found, f"{stem}: no line matches {pattern!r}"
        assert lo <= float(found.group(1)) <= hi, (stem, pattern, found.group(0))
