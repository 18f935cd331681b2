"""Configs: frozen dataclasses, filled from embedded defaults, a TOML file and --set overrides.

Every experiment's config subclasses :class:`RunConfig` (the keys shared by all
experiments) — through :class:`TwoLayerConfig` (systems of N particles in dimension d) or
:class:`ResNetConfig` (measure-valued ResNets of L layers × M units, sizes by preset) — and
adds its own.  One preset mechanism (``_presets``: ``scale = "small"`` swaps in a small
mode's defaults) serves every experiment, and ``meanfield config EXPERIMENT`` prints it.  Values from TOML keep their TOML types; values from
``--set key=value`` are strings parsed according to the field's type.  Unknown keys,
wrong types and out-of-range values raise :class:`meanfield.errors.ConfigError` with one
line naming the key (and a did-you-mean suggestion for unknown keys).
"""
import dataclasses
import difflib
import math
import os
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DTYPES = ("float32", "float64")
INT64 = (-(1 << 63), (1 << 63) - 1)
# keys a resumed run may change (meanfield.runner's one resume rule); experiments narrow it
RESUME_MUTABLE = ("steps", "dt", "log_every", "save_every", "checkpoint_every", "backend",
                  "shards", "shard_timeout")


@dataclass(frozen=True)
class RunConfig:
    """Keys shared by every experiment.

    ``steps`` steps of size ``dt`` on the MMN time axis
    (t = k·dt), ``seed`` for the run's generator, interaction ``backend``
    (auto | numpy | torch | keops), ``dtype`` (float32 | float64), ``replicas`` independent
    systems in one tensor, a metrics row every ``log_every`` steps, a particle snapshot
    every ``save_every`` steps, a checkpoint every ``checkpoint_every`` steps.
    ``shards`` > 1 splits the particles over that many processes (torch.distributed, see
    ``meanfield.distributed``), whose collectives give up after ``shard_timeout`` seconds;
    only experiments whose Config sets ``shardable`` accept it.

    ``resume_mutable`` lists the keys ``meanfield resume DIR --set KEY=...`` may change (the
    runner refuses any other, naming it; ``steps`` only upwards).
    """

    steps: int = 1000
    dt: float = 0.1
    seed: int = 0
    backend: str = "auto"
    dtype: str = "float32"
    replicas: int = 1
    log_every: int = 10
    save_every: int = 100
    checkpoint_every: int = 500
    shards: int = 1
    shard_timeout: float = 600.0

    # fields holding schedule specs: numbers are accepted and stored as strings
    _schedule_fields: typing.ClassVar[tuple[str, ...]] = ()
    # choices for string fields
    _choices: typing.ClassVar[dict] = {}
    # presets: {field: {value: {key: default, ...}}} — e.g. ``scale = "small"`` swaps in the
    # defaults of a small mode; keys given explicitly (TOML, --set, a saved config) still win
    _presets: typing.ClassVar[dict] = {}
    # whether the experiment's phases may be split over `shards` processes
    shardable: typing.ClassVar[bool] = False
    # one line of meaning per key ({key: text}), merged along the class hierarchy (a
    # subclass's entry wins): `meanfield config EXPERIMENT` and the docs site print it
    _help: typing.ClassVar[dict] = {
        "steps": "steps of each phase (step k sits at t = k·dt)",
        "dt": "step size on the MMN time axis (docs/design.md §1)",
        "seed": "seed of the run's random generator",
        "backend": "pair-sum backend: auto, numpy (float64 reference), torch or keops",
        "dtype": "floating-point type of the particles: float32 or float64",
        "replicas": "independent systems advanced together in one tensor",
        "log_every": "a metrics row every this many steps",
        "save_every": "a particle snapshot every this many steps",
        "checkpoint_every": "a checkpoint every this many steps",
        "shards": "processes the particles are split over (experiments that allow it)",
        "shard_timeout": "seconds a sharded run's collectives wait before giving up",
    }
    # bytes that size-like keys other than the particles cost ({key: f(cfg) -> bytes},
    # merged along the class hierarchy): the runner's memory check adds them to
    # memory_bytes(), so n_boot=10**9 is refused before anything runs, like N=10**9
    _size_terms: typing.ClassVar[dict] = {}
    # keys that `meanfield resume` may change (meanfield.runner)
    resume_mutable: typing.ClassVar[tuple[str, ...]] = RESUME_MUTABLE

    def __post_init__(self):
        for key, typ in self.field_types().items():
            object.__setattr__(self, key, self._coerce(key, typ, getattr(self, key), False))
        self.validate()

    def validate(self) -> None:
        """Check the shared keys; raise ``ConfigError`` naming the first bad one.

        steps, replicas, log_every, save_every, checkpoint_every, shards ≥ 1;
        seed ≥ 0; dt and shard_timeout finite and > 0; backend in
        ``interact.BACKENDS``; dtype in ``DTYPES``; every ``_choices`` field among its
        choices; every ``_schedule_fields`` field a valid schedule spec
        (``dynamics.as_schedule``).  Called by ``__post_init__``; subclasses extend it.
        """
        from ..interact import BACKENDS

        self.check_bounds(at_least_one=("steps", "replicas", "log_every", "save_every",
                                        "checkpoint_every", "shards"))
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"dt must be a finite number > 0, got {self.dt}")
        if self.shards > 1 and not self.shardable:
            raise ConfigError(f"shards must be 1 for this experiment (its runs do not split over "
                              f"processes), got {self.shards}")
        if not (math.isfinite(self.shard_timeout) and self.shard_timeout > 0):
            raise ConfigError(f"shard_timeout must be a finite number of seconds > 0, "
                              f"got {self.shard_timeout}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        for name, choices in self._choices.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        from ..dynamics import as_schedule

        for name in self._schedule_fields:
            as_schedule(getattr(self, name), name)
        if "threads" in self.field_types():        # torch's intra-op threads; 0: its default
            self.check_bounds(nonnegative_ints=("threads",))

    def memory_bytes(self) -> int:
        """Peak bytes a run of this config needs (``meanfield.runner`` refuses a config that
        cannot fit before anything is allocated or written).  Every experiment declares its
        size: :class:`TwoLayerConfig` and :class:`ResNetConfig` estimate theirs."""
        raise NotImplementedError(f"{type(self).__qualname__} does not declare memory_bytes()")

    def size_terms(self) -> dict[str, int]:
        """{size-like key: the bytes it costs beyond ``memory_bytes()``} from the ``_size_terms``
        of the class and its bases (bootstrap resamples, grid cells, data points …)."""
        terms: dict = {}
        for klass in reversed(type(self).__mro__):
            terms.update(vars(klass).get("_size_terms", {}))
        return {k: int(f(self)) for k, f in terms.items()}

    def bytes_needed(self) -> int:
        """Peak bytes of a run: :meth:`memory_bytes` plus :meth:`size_terms` (what
        ``meanfield.runner.check_memory`` compares with the machine's memory)."""
        return int(self.memory_bytes()) + sum(self.size_terms().values())

    def size_text(self) -> str:
        """What sizes the run (for the memory refusal's message): "replicas=…, dtype=…", and
        the size-like keys that cost more than a tenth of the estimate ("n_boot=…")."""
        terms = self.size_terms()
        total = max(1, sum(terms.values()) + int(self.memory_bytes())) if terms else 1
        big = "".join(f", {k}={getattr(self, k)}" for k, b in terms.items() if b > total / 10)
        return f"replicas={self.replicas}, dtype={self.dtype}{big}"

    @classmethod
    def key_help(cls) -> dict[str, str]:
        """{key: its one-line meaning} for every key in field order, from the ``_help`` of the
        class and its bases (a subclass's entry wins); "" for a key nobody described."""
        merged: dict = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("_help", {}))
        return {f.name: merged.get(f.name, "") for f in dataclasses.fields(cls)}

    def check_bounds(self, *, at_least_one=(), nonnegative_ints=(), positive=(),
                     nonnegative=()) -> None:
        """ConfigError naming the first field out of its bound, for subclasses' ``validate``:
        integers ``at_least_one`` ≥ 1 and ``nonnegative_ints`` ≥ 0; floats ``positive``
        finite and > 0 and ``nonnegative`` finite and ≥ 0 (each a tuple of field names)."""
        for names, ok, bound in ((at_least_one, lambda v: v >= 1, ">= 1"),
                                 (nonnegative_ints, lambda v: v >= 0, ">= 0"),
                                 (positive, lambda v: math.isfinite(v) and v > 0, "finite and > 0"),
                                 (nonnegative, lambda v: math.isfinite(v) and v >= 0,
                                  "finite and >= 0")):
            for name in names:
                v = getattr(self, name)
                if not ok(v):
                    raise ConfigError(f"{name} must be {bound}, got {v}")

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def field_types(cls) -> dict:
        """{field name: its type} (``int``, ``float``, ``str`` or ``bool``, resolved from the
        annotations), in field order; used to parse ``--set`` strings."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def build(cls, toml_path=None, overrides=(), base: dict | None = None):
        """Defaults ← ``base`` (e.g. a saved config) ← TOML file ← ``--set key=value`` strings."""
        values: dict = dict(base or {})
        if toml_path is not None:
            values.update(cls._coerce_all(read_toml(toml_path), from_cli=False, source=str(toml_path)))
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set expects key=value, got {item!r}")
            values.update(cls._coerce_all({key.strip(): raw.strip()}, from_cli=True, source="--set"))
        return cls(**cls._with_presets(values))

    @classmethod
    def _with_presets(cls, values: dict) -> dict:
        """Fill keys not given from the preset selected by a preset field (see ``_presets``)."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for key, table in cls._presets.items():
            choice = values.get(key, defaults.get(key))
            if choice in table:
                values = {**table[choice], **values}
        return values

    @classmethod
    def from_mapping(cls, mapping: dict, source: str = "config"):
        """A config from typed values (as in a TOML file) over the defaults."""
        return cls(**cls._with_presets(cls._coerce_all(mapping, from_cli=False, source=source)))

    @classmethod
    def _coerce_all(cls, mapping: dict, *, from_cli: bool, source: str) -> dict:
        types = cls.field_types()
        out = {}
        for key, value in mapping.items():
            if key not in types:
                close = difflib.get_close_matches(key, list(types), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown config key {key!r} in {source}{hint}")
            out[key] = cls._coerce(key, types[key], value, from_cli)
        return out

    @classmethod
    def _coerce(cls, key, typ, value, from_cli):
        if key in cls._schedule_fields:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ConfigError(f"{key} must be a number or a schedule spec, got {value!r}")
            return value if isinstance(value, str) else repr(float(value))
        if typ is bool:
            if isinstance(value, bool):
                return value
            if from_cli and isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        if typ is int:
            out = None
            if isinstance(value, int) and not isinstance(value, bool):
                out = value
            elif from_cli and isinstance(value, str):
                try:
                    out = int(value)
                except ValueError:
                    pass
            if out is None:
                raise ConfigError(f"{key} must be an integer, got {value!r}")
            if not INT64[0] <= out <= INT64[1]:
                raise ConfigError(f"{key} must fit in a 64-bit integer, got {out}")
            return out
        if typ is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    return float(value)
                except OverflowError:
                    raise ConfigError(f"{key} is too large for a float, got {value!r}") from None
            if isinstance(value, str) and value.strip().lower() in ("inf", "-inf", "nan", "+inf"):
                return float(value)                # config.json's spelling of non-finite floats
            if from_cli and isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if typ is str:
            if isinstance(value, str):
                return value
            raise ConfigError(f"{key} must be a string, got {value!r}")
        raise ConfigError(f"{key}: unsupported config type {typ}")  # pragma: no cover

    def to_dict(self) -> dict:
        """{key: value} of every field (plain int/float/str/bool: JSON-serialisable, and
        ``from_mapping(cfg.to_dict()) == cfg``); what ``config.json`` stores."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Particles:
    N: int = 1000
    d: int = 10

    _help: typing.ClassVar[dict] = {"N": "particles (units of the network)",
                                    "d": "input dimension"}


@dataclass(frozen=True)
class TwoLayerConfig(RunConfig, _Particles):
    """Keys of a system of N particles (units of a two-layer network, points on a torus …)
    in input dimension d, then :class:`RunConfig`'s.  ``shards`` ≤ N."""

    def validate(self) -> None:
        """RunConfig's checks, then N, d ≥ 1 and shards ≤ N (``ConfigError``)."""
        self.check_bounds(at_least_one=("N", "d"))
        super().validate()
        if self.shards > self.N:
            raise ConfigError(f"shards must be <= N={self.N}, got {self.shards}")

    def memory_bytes(self) -> int:
        """Estimated peak bytes, with p = replicas·N·(d + 2) numbers of the config's dtype:
        12 p (state, velocity, noise, potentials, gathered copies) + snapshots (steps/save_every
        + 2 of p, twice while they are written) + samples (replicas · max(batch_size, n_mc) ·
        (d + N) · 3) + the teacher (m0 · (d + 2) float64) + the pair backend's workspace (the
        numpy reference forms N² float64 products; tiles and KeOps O(N))."""
        item = 4 if self.dtype == "float32" else 8
        R, N, d = self.replicas, self.N, self.d
        p = R * N * (d + 2)
        snaps = self.steps // max(1, self.save_every) + 2
        batch = max(int(getattr(self, "batch_size", 1) or 1), int(getattr(self, "n_mc", 0) or 0))
        total = 12 * p * item + 2 * snaps * p * item
        total += 3 * R * batch * (d + N) * item
        total += 4 * int(getattr(self, "m0", 0) or 0) * (d + 2) * 8
        total += 4 * R * N * (N if self.backend == "numpy" else 256) * 8
        return int(total)

    def size_text(self) -> str:
        """"N=…, d=…, replicas=…, dtype=…"."""
        return f"N={self.N}, d={self.d}, {super().size_text()}"


# a resumed ResNet run may change only what changes no recorded number
RESNET_RESUME_MUTABLE = ("checkpoint_every", "threads")


@dataclass(frozen=True)
class ResNetConfig(RunConfig):
    """Keys of a measure-valued ResNet experiment (``models.resnet``), then
    :class:`RunConfig`'s: ``scale`` (its ``_presets`` fill the sizes: "full" the README's
    run, "small" the tests') and torch's intra-op ``threads`` (0: torch's default).  Its
    particles are the L·M units of each training job: :meth:`largest_job` and
    :meth:`unit_dim` size the memory check.  Jobs train to ``steps`` and are not extended: a
    resume may change only ``checkpoint_every`` and ``threads``."""

    scale: str = "full"
    threads: int = 1

    resume_mutable = RESNET_RESUME_MUTABLE
    _help = {"scale": "preset of sizes: full (the README's run) or small (the tests')",
             "threads": "torch intra-op threads during the run (0: torch's default)"}

    def validate(self) -> None:
        """RunConfig's checks (threads ≥ 0 among them), then (``ConfigError``): ``backend``
        among the ResNet backends, ``scale`` a preset."""
        from ..interact import RESNET_BACKENDS

        super().validate()
        if self.backend not in RESNET_BACKENDS:
            raise ConfigError(f"backend must be one of {list(RESNET_BACKENDS)}, got {self.backend!r}")
        scales = tuple(self._presets.get("scale", {})) or ("full", "small")
        if self.scale not in scales:
            raise ConfigError(f"scale must be one of {list(scales)}, got {self.scale!r}")

    def largest_job(self) -> tuple[int, int]:
        """(L, M) of the training job with the most units."""
        raise NotImplementedError(f"{type(self).__qualname__} does not declare largest_job()")

    def unit_dim(self) -> int:
        """Parameters of one unit."""
        raise NotImplementedError(f"{type(self).__qualname__} does not declare unit_dim()")

    def memory_bytes(self) -> int:
        """Estimated peak bytes of the largest job: 24 copies of its replicas × L·M units ×
        ``unit_dim()`` parameters (state, gradient, adjoint and activations per layer) in the
        config's dtype."""
        L, M = self.largest_job()
        item = 4 if self.dtype == "float32" else 8
        return int(24 * self.replicas * L * M * self.unit_dim() * item)

    def size_text(self) -> str:
        """"L·M=…, replicas=…, dtype=…" of the largest job."""
        L, M = self.largest_job()
        return f"L·M={L}·{M}, {super().size_text()}"


# ---- the memory check (meanfield.runner's Sizes promise) ---------------------------------
def machine_memory() -> int:
    """Bytes of physical memory (``MEANFIELD_MEMORY_LIMIT`` overrides, e.g. "8e9")."""
    env = os.environ.get("MEANFIELD_MEMORY_LIMIT", "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ConfigError(f"MEANFIELD_MEMORY_LIMIT must be a number of bytes, got {env!r}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover (not POSIX)
        return 1 << 62


def memory_needed(cfg) -> int:
    """Estimated peak bytes of a run of ``cfg``: what its Config declares
    (``cfg.bytes_needed()``: ``memory_bytes()`` — particles, snapshots, samples, the backend's
    workspace — plus the size-like keys' ``size_terms()``: n_values, n_boot, grid cells …)."""
    return int(cfg.bytes_needed() if hasattr(cfg, "bytes_needed") else cfg.memory_bytes())


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def check_memory(cfg) -> int:
    """ConfigError when :func:`memory_needed` exceeds the machine's memory; else the estimate.
    Called (``meanfield.runner``, ``meanfield.sweep``) before an experiment builds anything."""
    need, have = memory_needed(cfg), machine_memory()
    if need > have:
        raise ConfigError(f"this config needs about {_gb(need)} of memory ({cfg.size_text()}); "
                          f"this machine has {_gb(have)}")
    return need


def parse_ints(name: str, spec: str) -> list[int]:
    """"2,4,8" → [2, 4, 8] (each ≥ 1, increasing); ConfigError naming ``name`` otherwise."""
    try:
        vals = [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of integers, got {spec!r}") from None
    if not vals or any(v < 1 for v in vals) or sorted(set(vals)) != vals:
        raise ConfigError(f"{name} must list increasing integers >= 1, got {spec!r}")
    return vals


def parse_floats(name: str, spec: str, *, allow_inf: bool = False) -> list[float]:
    """"0.5,1.5,inf" → [0.5, 1.5, inf] (each > 0); ConfigError naming ``name`` otherwise."""
    try:
        vals = [float(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of numbers, got {spec!r}") from None
    if not vals or any(not (v > 0) or (math.isinf(v) and not allow_inf) or math.isnan(v) for v in vals):
        raise ConfigError(f"{name} must list numbers > 0{' (or inf)' if allow_inf else ''}, got {spec!r}")
    return vals


def spectral_cells(text: str) -> list[int]:
    """The grid sizes of a ``spectral_cells`` key: comma- (or ";"-) separated increasing
    distinct integers ≥ 6, [] for ""; ConfigError naming the key otherwise."""
    text = text.replace(";", ",").strip()
    if not text:
        return []
    try:
        cells = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"spectral_cells must be comma-separated integers, got {text!r}") from None
    if not cells or cells != sorted(set(cells)) or min(cells) < 6:
        raise ConfigError(f"spectral_cells must be increasing distinct integers >= 6, got {text!r}")
    return cells


def geometric_grid(lo: int, hi: int, n: int) -> list[int]:
    """The N grid of the multi-N experiments: n values geometric from lo to hi
    (``np.geomspace``), rounded half to even and made distinct, increasing."""
    import numpy as np

    return sorted({int(v) for v in np.geomspace(lo, hi, n).round()})


def check_n_grid(cfg) -> None:
    """The checks of a multi-N config (keys N, N_min, n_values, replicas, n_boot; ``cfg.grid()``
    the N values), ``ConfigError`` naming the first that fails: 1 ≤ N_min < N; 3 ≤ n_values ≤
    N − N_min + 1 (the grid holds distinct integers of [N_min, N]); N − N_min ≥ 2 (at least 3
    distinct N: the rounded geometric grid of n ≥ 3 values from N_min to N ≥ N_min + 2 always
    has 3, tests/test_run_refusals.py checks it); replicas (seeds per N) ≥ 2 for a spread;
    n_boot ≥ 100.  Nothing here expands the grid: the memory check (``n_values`` in
    :func:`n_grid_bytes`) comes first."""
    if not 1 <= cfg.N_min < cfg.N:
        raise ConfigError(f"N_min must be in [1, N), got N_min={cfg.N_min}, N={cfg.N}")
    if cfg.n_values < 3:
        raise ConfigError(f"n_values must be >= 3 to fit a slope, got {cfg.n_values}")
    if cfg.n_values > cfg.N - cfg.N_min + 1:
        raise ConfigError(f"n_values must be <= N - N_min + 1 = {cfg.N - cfg.N_min + 1} (the N grid "
                          f"holds distinct integers from N_min={cfg.N_min} to N={cfg.N}), got {cfg.n_values}")
    if cfg.N - cfg.N_min < 2:
        raise ConfigError(f"the N grid from N_min={cfg.N_min} to N={cfg.N} has fewer than 3 distinct values")
    if cfg.replicas < 2:
        raise ConfigError(f"replicas (seeds per N) must be >= 2 for a spread, got {cfg.replicas}")
    if cfg.n_boot < 100:
        raise ConfigError(f"n_boot must be >= 100, got {cfg.n_boot}")


def n_grid_bytes(cfg) -> int:
    """Bytes the n_values phases of a multi-N config keep beside the largest N's particles:
    per N value its snapshots at 0 and T (replicas × N × (d + 2) float64, twice) and its
    metrics rows (64 columns of float64 every ``log_every`` steps), and the grid itself."""
    rows = cfg.steps // max(1, cfg.log_every) + 2
    return int(cfg.n_values * (4 * cfg.replicas * cfg.N * (cfg.d + 2) * 8 + rows * 64 * 8 + 32))


def boot_bytes(cfg) -> int:
    """Bytes of a bootstrap over ``n_boot`` resamples of ``replicas`` seeds at each of up to
    ``n_values`` x values (int64 indices and float means, a few copies)."""
    return int(32 * cfg.n_boot * (cfg.replicas + getattr(cfg, "n_values", 1)))


def read_toml(path) -> dict:
    """The flat ``key = value`` table of the TOML file at ``path`` (values keep their TOML
    types).  ``ConfigError`` when the file is missing, not valid TOML, or has a [table]."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid TOML ({e})") from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(f"config file {p}: unexpected table [{nested[0]}] (use flat key = value lines)")
    return data
