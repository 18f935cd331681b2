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
