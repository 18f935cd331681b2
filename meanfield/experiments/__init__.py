"""One module per experiment: a frozen dataclass ``Config`` (``RunConfig`` keys plus its own)
and ``run(config, out)`` writing a run directory (DESIGN.md §3)."""
from importlib import import_module

from ..errors import ConfigError
from .config import RunConfig

EXPERIMENTS = {"teacher-student": "teacher_student"}


def get_experiment(name: str):
    """The experiment module called ``name`` (``Config``, ``run``, ``NAME``)."""
    if name not in EXPERIMENTS:
        import difflib

        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown experiment {name!r}{hint}; available: {', '.join(EXPERIMENTS)}")
    return import_module(f".{EXPERIMENTS[name]}", __name__)


__all__ = ["EXPERIMENTS", "RunConfig", "get_experiment"]
