"""Exceptions raised by meanfield.  The CLI turns ConfigError into one line and exit status 2."""


class ConfigError(ValueError):
    """A user-supplied value (argument, config key, array shape) is invalid.

    The message names the offending value and, where useful, what was expected.
    """


class DivergenceError(FloatingPointError):
    """A simulation produced a non-finite value (particle, risk or velocity).

    Raised by the runner with ``run_dir`` (the run directory) and ``checkpoint`` (the
    progress of its last checkpoint, None when none was written) attached."""

    run_dir = None
    checkpoint = None


class ShardError(RuntimeError):
    """A collective of a sharded run failed: another rank died, hung past the timeout, or the
    process group broke (``meanfield.distributed``, ``meanfield.dynamics.sharded``)."""


def check_positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an int, or raise ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def check_finite_float(name: str, value, *, positive: bool = False,
                       nonnegative: bool = False, allow_inf: bool = False) -> float:
    """Return ``value`` as a float, or raise ConfigError naming ``name``."""
    import math

    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(x) or (math.isinf(x) and not (allow_inf and x > 0)):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if positive and not x > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    if nonnegative and not x >= 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return x
