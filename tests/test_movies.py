"""Movies of runs: every experiment that moves particles or densities renders its
views from its snapshots; the GIF decodes with the right number of frames, and the frames
differ; bad input is one line and exit 2 with nothing written."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from meanfield import io, runner
from meanfield.cli import main
from meanfield.experiments import get_experiment
from meanfield.movies import experiment_views, frame_indices

VIEWS = experiment_views()

# small runs with more snapshots than their TINY configs take (seconds in all); an
# experiment not listed here is run with its own TINY config
MORE_FRAMES = {
    "teacher-student": ["N=60", "d=4", "steps=40", "backend=torch", "save_every=4"],
    "n-scaling": ["scale=small", "m0=100", "N=30", "n_values=3", "steps=30", "save_every=3", "n_boot=100"],
    "dataset": ["scale=small", "data=sklearn:breast_cancer", "loss=logistic", "N=40", "steps=60",
                "save_every=6"],
    "cb-relu2d": ["scale=small", "steps=100", "n_snap=8"],
    "mmn-isotropic": ["scale=small", "N=50", "steps=4000", "log_every=1000", "save_every=500",
                      "checkpoint_every=4000", "n_mc=300", "pde_cells=80"],
    "mmn-bifurcation": ["scale=small", "N=40", "steps=4000", "log_every=1000", "save_every=500",
                        "checkpoint_every=4000", "n_mc=300", "pde_cells=80"],
    "chaos-rate": ["scale=small", "N=40", "N_min=10", "n_values=3", "replicas=2", "steps=1000",
                   "log_every=500", "save_every=125", "checkpoint_every=1000", "n_mc=200",
                   "pde_cells=80", "n_boot=100"],
    "mfld-torus": ["scale=small", "steps=24", "noise_off=16", "save_every=3", "log_every=2"],
    "pde2d-teacher": ["scale=small", "N=40", "N_min=10", "replicas=2", "steps=16", "log_every=8",
                      "save_every=2", "w2_every=16", "cells=12", "w2_replicas=2", "n_boot=100"],
    "pde2d-torus": ["scale=small", "N=40", "N_min=10", "replicas=2", "steps=16", "log_every=4",
                    "save_every=2", "w2_every=16", "cells=10", "t_long=1", "w2_replicas=2",
                    "n_boot=100", "fit_t0=0.1", "fit_floor=1e-9"],
    "resnet-limit": ["scale=small", "tasks=neg", "steps=10", "log_every=5", "save_every=2"],
    "resnet-rkhs": ["scale=small", "targets=neg", "steps=10", "log_every=5", "save_every=2"],
    "resnet-digits": ["scale=small", "steps=10", "log_every=5", "save_every=2"],
}
RUNS = {name: MORE_FRAMES.get(name, list(get_experiment(name).TINY)) for name in VIEWS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("movies")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, sets in RUNS.items():
            exp = get_experiment(name)
            runner.run(exp, exp.Config.build(None, sets), root / name, progress=False)
    finally:
        torch.set_num_threads(n)
    return root


def frames_of(path):
    with Image.open(path) as im:
        out = []
        for k in range(im.n_frames):
            im.seek(k)
            out.append(np.asarray(im.convert("RGB"), dtype=np.int16))
        return out


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_every_view_renders_a_decodable_movie_of_its_snapshots(runs, name, capsys):
    d = runs / name
    snaps = {s["phase"]: s for s in io.read_snapshots(d)}
    for what in VIEWS[name]:
        out = d / f"{what}.gif"
        assert main(["animate", str(d), "--what", what, "--out", str(out), "--dpi", "40",
                     "--no-progress"]) == 0, capsys.readouterr().err
        assert str(out) in capsys.readouterr().out
        frames = frames_of(out)
        if what == "depth":                         # one frame per layer boundary of the net
            L = len(np.unique(np.load(d / io.PARTICLES)["layer"]))
            assert len(frames) == L + 1
        elif what == "torus":
            assert len(frames) == min(len(s["t"]) for s in snaps.values())
        else:                                        # one frame per snapshot of the main phase
            primary = str(np.load(d / io.PARTICLES).get("primary_phase", "main"))
            assert len(frames) == len(snaps[primary]["t"]), (what, len(frames))
        assert len(frames) >= 3
        # the picture moves: most consecutive frames differ, the first from the last clearly
        moved = [np.abs(a - b).max() > 0 for a, b in zip(frames, frames[1:])]
        assert np.mean(moved) > 0.5, (what, moved)
        assert np.abs(frames[0] - frames[-1]).mean() > 0.05, what
    assert not list(d.glob(".*.tmp*")) and not list((d / io.FIGURES).glob(".*.tmp*"))


def test_frames_subsample_and_the_default_view(runs, capsys):
    d = runs / "teacher-student"
    assert main(["animate", str(d), "--frames", "4", "--dpi", "40", "--no-progress"]) == 0
    path = d / io.FIGURES / "cloud.gif"                       # the default view and place
    assert capsys.readouterr().out.strip() == str(path)
    assert len(frames_of(path)) == 4
    assert list(frame_indices(11, 4)) == [0, 3, 7, 10] and list(frame_indices(3, 10)) == [0, 1, 2]


@pytest.mark.parametrize("argv, needle", [
    (["--what", "nope"], "unknown view 'nope' for teacher-student; choose one of cloud, plane"),
    (["--out", "x.avi"], "unknown movie format '.avi'"),
    (["--frames", "1"], "--frames must be >= 2"),
    (["--fps", "0"], "--fps must be a finite number > 0"),
])
def test_bad_movie_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, argv, needle):
    d = runs / "teacher-student"
    before = sorted(p.name for p in (d / io.FIGURES).iterdir())
    argv = [a if a != "x.avi" else str(tmp_path / "x.avi") for a in argv]
    assert main(["animate", str(d), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert sorted(p.name for p in (d / io.FIGURES).iterdir()) == before
    assert not list(tmp_path.iterdir())


def test_too_few_snapshots_no_particles_and_unwritable_output(runs, tmp_path, capsys, monkeypatch):
    import shutil

    d = tmp_path / "one"
    shutil.copytree(runs / "teacher-student", d)
    z = io.read_npz(d / io.PARTICLES)
    io.write_npz(d / io.PARTICLES, {**z, "t": z["t"][:1], "step": z["step"][:1], "theta": z["theta"][:1]})
    assert main(["animate", str(d)]) == 2
    err = capsys.readouterr().err
    assert "has 1 snapshot: a movie needs at least two (run it with a smaller --set save_every)" in err
    (d / io.PARTICLES).unlink()
    assert main(["animate", str(d)]) == 2
    assert "has 0 snapshots" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p).startswith(str(ro)) else real(p, m))
    assert main(["animate", str(runs / "teacher-student"), "--out", str(ro / "m.gif")]) == 2
    assert "not writable" in capsys.readouterr().err and not list(ro.iterdir())
    monkeypatch.undo()
    assert main(["animate", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_mp4_needs_a_writer_or_says_so(runs, tmp_path, capsys):
    from matplotlib import animation

    d = runs / "cb-relu2d"
    out = tmp_path / "m.mp4"
    code = main(["animate", str(d), "--out", str(out), "--frames", "3", "--dpi", "30", "--no-progress"])
    err = capsys.readouterr().err
    import importlib.util

    have = importlib.util.find_spec("imageio_ffmpeg") is not None or animation.writers.is_available("ffmpeg")
    if have:
        assert code == 0 and out.stat().st_size > 1000
    else:
        assert code == 2 and "no MP4 writer" in err and not out.exists()


def test_the_python_api_returns_a_funcanimation(runs):
    from matplotlib import animation

    from meanfield import movies

    anim = movies.animate(runs / "mfld-torus", frames=3)
    assert isinstance(anim, animation.FuncAnimation)
    html = anim.to_jshtml()
    assert html.count("data:image/png;base64") >= 3
