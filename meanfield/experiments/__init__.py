"""Experiments: each a declaration that ``meanfield.runner`` runs (docs/design.md §3).

An experiment is one module (or any object with these attributes):

* ``NAME``: its command-line name; the module docstring's first line is its
  ``meanfield list`` entry and the rest its documentation.
* ``Config``: a frozen dataclass of its keys, subclassing :class:`TwoLayerConfig` (particle
  systems of N units in dimension d), :class:`ResNetConfig` (measure-valued ResNets of L
  layers × M units) or :class:`RunConfig`; presets (``scale = "small"``) in ``_presets``,
  ``shardable`` when its phases may split over processes, ``memory_bytes()`` its size.
* ``plan(cfg) -> Plan``: its phases (``experiments.plan``).
* ``FIGURES``: ``(run_dir, coords=None) -> [Path]``, its figures drawn from the run directory
  alone (a function of ``meanfield.figures``; default: ``plotting.plot_run``).
* ``VIEWS``: the views ``meanfield animate`` offers for it, the first the default
  (``meanfield.movies``; default: none).
* ``TINY``: ``--set`` strings of a config that runs in about a second (the tests run every
  experiment with it).
* optionally ``warmup(cfg)``: compiles what its points need before a sweep's workers start.

Registering an experiment is one line: an entry of :data:`EXPERIMENTS` (CLI name → module
name in this package), or, from another package, an entry point in the group
``meanfield.experiments`` (``name = "package.module"``), which ``meanfield list`` shows too.
"""
from importlib import import_module

from ..errors import ConfigError
from .config import ResNetConfig, RunConfig, TwoLayerConfig

EXPERIMENTS = {
    "teacher-student": "teacher_student",
    "mmn-isotropic": "mmn_isotropic",
    "mmn-bifurcation": "mmn_bifurcation",
    "chaos-rate": "chaos_rate",
    "n-scaling": "n_scaling",
    "cb-relu2d": "cb_relu2d",
    "cb-threshold": "cb_threshold",
    "mfld-torus": "mfld_torus",
    "pde2d-teacher": "pde2d_teacher",
    "pde2d-torus": "pde2d_torus",
    "resnet-limit": "resnet_limit",
    "resnet-rkhs": "resnet_rkhs",
    "resnet-digits": "resnet_digits",
    "linear-obstruction": "linear_obstruction",
    "dataset": "dataset",
    "lazy-vs-meanfield": "lazy_vs_meanfield",
}
ENTRY_POINT_GROUP = "meanfield.experiments"


def _entry_points() -> dict:
    """{name: entry point} of the experiments other installed packages register."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in EXPERIMENTS}


def names() -> list[str]:
    """Every experiment's name: this package's, then those of entry points (sorted)."""
    return [*EXPERIMENTS, *sorted(_entry_points())]


def get_experiment(name: str):
    """The experiment called ``name`` (a module with ``NAME``, ``Config``, ``plan`` …);
    ConfigError (with a did-you-mean) when there is none, or when an entry point's module
    does not load or is not an experiment."""
    if name in EXPERIMENTS:
        return import_module(f".{EXPERIMENTS[name]}", __name__)
    eps = _entry_points()
    if name not in eps:
        import difflib

        close = difflib.get_close_matches(name, names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown experiment {name!r}{hint}; available: {', '.join(names())}")
    try:
        exp = eps[name].load()
    except Exception as e:  # noqa: BLE001 — a user's package: say which and why, in one line
        raise ConfigError(f"experiment {name!r} (entry point {eps[name].value!r}) does not load: "
                          f"{type(e).__name__}: {e}") from None
    missing = [a for a in ("NAME", "Config", "plan") if not hasattr(exp, a)]
    if missing or getattr(exp, "NAME", None) != name:
        raise ConfigError(f"entry point {name!r} ({eps[name].value}) is not a meanfield experiment "
                          + (f"(no {', '.join(missing)})" if missing else f"(its NAME is {exp.NAME!r})"))
    return exp


def figures_of(exp):
    """The experiment's figure function ``(run_dir, coords=None) -> [Path]``."""
    fn = getattr(exp, "FIGURES", None)
    if fn is None:
        from ..plotting import plot_run

        fn = plot_run
    return fn


def views_of(exp) -> tuple:
    """The movie views the experiment declares (``VIEWS``; the first is the default)."""
    return tuple(getattr(exp, "VIEWS", ()))


def summary_line(exp) -> str:
    """The first line of the experiment's docstring (its ``meanfield list`` entry)."""
    return ((getattr(exp, "__doc__", None) or exp.NAME).strip().splitlines() or [exp.NAME])[0]


__all__ = ["ENTRY_POINT_GROUP", "EXPERIMENTS", "ResNetConfig", "RunConfig", "TwoLayerConfig",
           "figures_of", "get_experiment", "names", "summary_line", "views_of"]
