"""scripts/gpu_check.sh on a machine without CUDA: it says so, runs the CPU-side
steps (the environment record, the GPU tests — which skip —, tiny CPU smokes of the GPU
benchmark entry points, the summary) and exits 0; with its time budget used up it skips the
stages and still writes the summary.  CUDA is hidden (CUDA_VISIBLE_DEVICES="") so that the
CPU-side path is what runs even on a GPU machine.  The CUDA stages themselves run only on a
GPU (benchmarks/README.md, "GPU check")."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
NO_CUDA = "no CUDA: running the CPU-side checks only"


def run_script(out: Path, tmp: Path, budget: int):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OUT", "MEANFIELD_GPU_TEST_DEVICE", "PYTEST_ADDOPTS")}
    env.update({"PYTHON": sys.executable, "GPU_CHECK_BUDGET_S": str(budget), "GPU_CHECK_INSTALL": "0",
                "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp),
                "KEOPS_CACHE_FOLDER": str(REPO / ".cache" / "keops")})
    return subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=240)


def test_gpu_check_without_cuda_runs_the_cpu_side_steps(tmp_path):
    out = tmp_path / "out"
    res = run_script(out, tmp_path, budget=200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert NO_CUDA in res.stdout
    # few files, all at the top of the output folder (what a device run can bring back)
    files = sorted(p.name for p in out.iterdir())
    assert all((out / f).is_file() for f in files) and len(files) <= 8, files
    assert {"gpu_check.log", "environment.json", "pytest_gpu.xml", "summary.json",
            "interact_smoke_cpu.json", "sgd_smoke_cpu.json", "nscaling_smoke_cpu.json"} == set(files)

    log = (out / "gpu_check.log").read_text()
    assert NO_CUDA in log and "stage pytest: ok" in log and "done in" in log

    env = json.loads((out / "environment.json").read_text())
    assert env["cuda_available"] is False and env["note"] == NO_CUDA
    assert env["torch"] and env["python"] and env["imports"]["meanfield"]["ok"]
    assert env["keops_probe"] == {"skipped": "no CUDA"}
    assert {"pykeops", "keopscore", "pot", "dask", "distributed"} <= set(env["packages"])

    # the GPU tests were collected and all skipped cleanly
    cases = list(ET.parse(out / "pytest_gpu.xml").getroot().iter("testcase"))
    assert len(cases) > 20
    assert all(c.find("skipped") is not None for c in cases)

    inter = json.loads((out / "interact_smoke_cpu.json").read_text())
    assert inter["complete"] and inter["machine"]["date_utc"] and inter["machine"]["torch"]
    rows = [r for r in inter["results"] if not r.get("skipped")]
    assert {r["dtype"] for r in rows} == {"float32", "float64"}
    assert all(r["grad_rel_err"] < 1e-4 for r in rows if "grad_rel_err" in r)
    assert {"n1e6_le_2s", "speedup_vs_autograd_at_1e5", "gpu_memory", "auto_picks_fastest"} <= set(inter["goals"])
    sgd = json.loads((out / "sgd_smoke_cpu.json").read_text())
    assert sgd["complete"] and all(r["max_rel_diff"] < 1e-4 for r in sgd["results"])
    ns = json.loads((out / "nscaling_smoke_cpu.json").read_text())
    assert ns["complete"] and ns["device_run"]["N_done"] == ns["config"]["grid"]
    assert ns["cpu_run"]["N_done"] == ns["config"]["cpu_grid"] and len(ns["config"]["cpu_grid"]) >= 3
    for fit in (ns["device_run"]["fit"], ns["device_run"]["fit_cpu_range"], ns["cpu_run"]["fit"]):
        assert math.isfinite(fit["slope"]) and fit["ci95"][0] < fit["ci95"][1], fit
    # the two runs start from the same particles: here both on the CPU, so identical
    assert [g["N"] for g in ns["agreement"]] == ns["config"]["cpu_grid"]
    assert all(g["rel_diff"] < 1e-12 for g in ns["agreement"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cuda"] is False
    assert [s["stage"] for s in summary["stages"]] == ["env", "pytest", "interact", "sgd", "nscaling"]
    assert all(s["status"] == "ok" for s in summary["stages"]), summary["stages"]
    assert summary["pytest"]["counts"] == {"skipped": len(cases)}
    assert set(summary["results"]) == {"interact_smoke_cpu.json", "sgd_smoke_cpu.json",
                                       "nscaling_smoke_cpu.json"}


def test_gpu_check_with_its_budget_used_up_skips_stages_and_still_summarises(tmp_path):
    out = tmp_path / "out"
    res = run_script(out, tmp_path, budget=5)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert NO_CUDA in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cuda"] is False and summary["budget_s"] == 5
    assert summary["stages"] and all(s["status"] == "skipped" for s in summary["stages"])
    assert "skipped (time budget" in (out / "gpu_check.log").read_text()
