"""Seeds: one way to derive independent random streams from a run's seed.

Every stream of a run (the initial particles of each N, the Monte Carlo samples of the
risk, each training job of a sweep …) comes from a ``torch.Generator`` seeded by
:func:`derive_seed` ``(seed, *keys)``: numpy's ``SeedSequence`` hashes the run's seed together
with the stream's keys (integers or strings), so streams with different keys are
statistically independent, and a stream does not depend on which other streams the run
holds (dropping one N from a grid leaves the others' draws unchanged).  Typed offsets such
as ``seed + 7919`` collide (seed 7919's main stream is seed 0's offset stream) and overflow
for large seeds; this does neither.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def _entropy(key) -> int:
    if isinstance(key, (bool, np.bool_)):
        return int(key)
    if isinstance(key, (int, np.integer)):
        k = int(key)
        return k if k >= 0 else (1 << 64) + k          # SeedSequence takes non-negative ints
    if isinstance(key, str):
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    raise TypeError(f"seed keys are integers or strings, got {type(key).__name__}")


def derive_seed(seed: int, *keys) -> int:
    """A 64-bit seed for the stream ``keys`` of a run seeded with ``seed``
    (``np.random.SeedSequence([seed, *keys])``; string keys hashed with SHA-256)."""
    words = np.random.SeedSequence([_entropy(seed), *(_entropy(k) for k in keys)]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 32 | int(words[1])


def derive_generator(seed: int, *keys, device=None) -> torch.Generator:
    """A new ``torch.Generator`` (on ``device``, default CPU) seeded by
    :func:`derive_seed` ``(seed, *keys)``."""
    g = torch.Generator(device=device) if device is not None else torch.Generator()
    return g.manual_seed(derive_seed(seed, *keys))
