"""Time schedules on the MMN time axis: step-size profile ξ(t) and inverse temperature β(t).

A schedule is a frozen dataclass (so configs can store it) and a callable t ↦ value.
Specs as strings, for configs and the CLI:

    "1.0" or "const:1.0"         c
    "power:c,alpha,t0"           c (t0 + t)^(−alpha)            (MMN use ξ(t) = t^(−1/4))
    "log:b0,t0"                  b0 log(e + t/t0)               (logarithmic annealing of β)
    "linear:b0,t0"               b0 (1 + t/t0)                   (τ = 1/β decaying like τ0/(1 + t/t0))
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

_KINDS = {"const": 1, "power": 3, "log": 2, "linear": 2}


@dataclass(frozen=True)
class Schedule:
    """A schedule t ↦ value on the MMN time axis: ``kind`` ("const", "power", "log",
    "linear") with its ``params`` (c; c, alpha, t0; b0, t0; b0, t0), evaluated as in the
    module docstring.  Validated on construction (``ConfigError`` for an unknown kind, a
    wrong parameter count, non-finite parameters other than a constant ``inf``, or t0 < 0,
    and t0 = 0 for log/linear)."""

    kind: str = "const"
    params: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ConfigError(f"unknown schedule {self.kind!r}; choose one of {sorted(_KINDS)}")
        if len(self.params) != _KINDS[self.kind]:
            raise ConfigError(f"schedule {self.kind!r} takes {_KINDS[self.kind]} parameters, got {len(self.params)}")
        if not all(math.isfinite(p) or (self.kind == "const" and p == math.inf) for p in self.params):
            raise ConfigError(f"schedule {self.spec()!r} has non-finite parameters")
        if self.kind in ("power", "log", "linear") and self.params[-1] < 0:
            raise ConfigError(f"schedule {self.spec()!r} needs t0 >= 0")
        if self.kind in ("log", "linear") and self.params[-1] == 0:
            raise ConfigError(f"schedule {self.spec()!r} needs t0 > 0")

    def __call__(self, t: float) -> float:
        p = self.params
        if self.kind == "const":
            return p[0]
        if self.kind == "power":
            base = p[2] + t
            if base <= 0:
                raise ConfigError(f"schedule {self.spec()!r} is undefined at t={t} (use t0 > 0)")
            return p[0] * base ** (-p[1])
        if self.kind == "log":
            return p[0] * math.log(math.e + t / p[1])
        return p[0] * (1.0 + t / p[1])

    def spec(self) -> str:
        """The spec string ``"kind:p1,p2,..."`` (floats via repr); ``as_schedule(spec,
        positive=False)`` parses it back into an equal Schedule."""
        return f"{self.kind}:{','.join(repr(float(x)) for x in self.params)}"

    @property
    def is_constant(self) -> bool:
        """Whether the schedule is ``const`` (its value does not depend on t)."""
        return self.kind == "const"


def as_schedule(value, name: str = "schedule", *, positive: bool = True) -> Schedule:
    """A Schedule from a number, a spec string or a Schedule; errors name ``name``.

    ``positive``: the leading constant (c or b0) must be > 0, so the schedule stays > 0
    (ξ and β both must; β = inf means no noise)."""
    try:
        sched = _as_schedule(value, name)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(f"{name}:") else f"{name}: {msg}") from None
    if positive and not sched.params[0] > 0:
        raise ConfigError(f"{name} must be > 0, got {sched.spec()!r}")
    return sched


def _as_schedule(value, name):
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number or a schedule spec, got {value!r}")
    if isinstance(value, (int, float)):
        return Schedule("const", (float(value),))
    if isinstance(value, str):
        s = value.strip()
        kind, _, rest = s.partition(":")
        if not rest:
            kind, rest = "const", s
        try:
            params = tuple(float(x) for x in rest.split(","))
        except ValueError:
            raise ConfigError(f"{name}: cannot parse schedule {value!r} (e.g. 'power:1,0.25,1')") from None
        return Schedule(kind.strip(), params)
    raise ConfigError(f"{name} must be a number or a schedule spec, got {value!r}")
