"""Torch's intra-op threads for meanfield's Python API: one thread unless told otherwise.

The systems meanfield simulates are mostly small (N × n products of a few hundred by a few
hundred), where an OpenMP team costs more than it saves, and on a machine whose cores other
processes keep busy a team of torch's default size waits for descheduled threads.  Measured
on this project's 2-core machine with two busy processes beside it (``python -m
benchmarks.api_threads``, benchmarks/README.md §8): the ``dataset`` experiment's default job
(breast_cancer, N = 100, population GD) took 98.8 ms per step on torch's default 2 threads
and 3.09 ms on one (the command line: 7.25 ms, its recording included).  The command line
always chose for its experiments (``Plan.threads``: one thread for small systems); the
Python API now chooses the same way.

**The rule, applied once when meanfield is imported:**

* ``MEANFIELD_THREADS=n`` in the environment: n threads (0: torch's own default);
* else ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set (a launcher, a Dask worker, a test
  runner chose): torch follows it, meanfield leaves it;
* else one thread.

:func:`set_threads` changes it at any time (``mf.set_threads(0)``: back to torch's default,
the count torch had chosen before meanfield was imported — worth it for one big pair sum,
N ≳ 10⁴, on an otherwise idle machine with many cores); :func:`using_threads` scopes a choice
to a ``with`` block.  The ``meanfield`` command runs each command with torch's default and
lets each experiment choose, exactly as before (:func:`for_command`).  ``torch.set_num_threads``
after ``import meanfield`` works as usual: meanfield never changes the count again on its own.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .errors import ConfigError

ENV = "MEANFIELD_THREADS"
TORCH_DEFAULT = torch.get_num_threads()       # torch's choice, before meanfield changed it


def _check(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"threads must be an integer >= 0 (0: torch's default, "
                          f"{TORCH_DEFAULT} here), got {n!r}")
    return n


def set_threads(n: int) -> int:
    """Use n torch intra-op threads from now on (n ≥ 1; 0: torch's default, the count torch
    chose before meanfield was imported); returns the previous count.  ``ConfigError`` for
    a negative or non-integer n."""
    n = _check(n)
    old = torch.get_num_threads()
    n = n or TORCH_DEFAULT
    if n != old:
        torch.set_num_threads(n)
    return old


@contextlib.contextmanager
def using_threads(n: int):
    """``with using_threads(n):`` — n torch threads inside the block (0: torch's default),
    the previous count restored after it (also when it raises)."""
    old = set_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def env_threads() -> int | None:
    """``MEANFIELD_THREADS`` as an integer ≥ 0, None when unset; ``ConfigError`` naming the
    variable when it is not one."""
    raw = os.environ.get(ENV)
    if raw is None or not raw.strip():
        return None
    try:
        return _check(int(raw))
    except (ValueError, ConfigError):
        raise ConfigError(f"{ENV} must be an integer >= 0 (0: torch's default), got {raw!r}") from None


def api_default() -> int:
    """The count the module docstring's rule gives the Python API: ``MEANFIELD_THREADS``
    (0: torch's default), else the current count when ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` is set, else 1."""
    try:
        n = env_threads()
    except ConfigError:
        n = None                   # a bad value is reported by the command line, not on import
    if n is not None:
        return n or TORCH_DEFAULT
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return torch.get_num_threads()
    return 1


def for_command():
    """The threads of one ``meanfield`` command: ``MEANFIELD_THREADS`` when set, else
    torch's default, for the command's duration (each experiment's ``Plan.threads`` then
    chooses inside its run, as the command line always did); a context manager."""
    n = env_threads()
    return using_threads(0 if n is None else n)


def _apply_api_default() -> None:
    n = api_default()
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


_apply_api_default()

__all__ = ["ENV", "TORCH_DEFAULT", "api_default", "env_threads", "for_command", "set_threads",
           "using_threads"]
