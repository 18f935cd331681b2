"""What ``flow.run(state, steps, record_every=k)`` records: step, time and risk every k steps.

A recorded run keeps the state at step s₀ (where it starts), s₀ + k, s₀ + 2k, … and always
at its last step s₀ + steps (also when ``steps`` is not a multiple of k; ``steps = 0`` gives
the one row s₀).  Recording never touches the state's generator: a recorded run ends in the
same state, bit for bit, as the unrecorded ``run`` and draws the same random numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import check_positive_int


@dataclass
class RunRecord:
    """Rows of a recorded run: ``step`` [K] (int64), ``t`` [K] (float64) and ``risk`` [K, B]
    per replica (the two-layer risk R(ρ_N), or a ResNet's training loss L(μ)), with ``risk_se``
    [K, B] its Monte Carlo standard error, or None when every value is exact."""

    step: torch.Tensor
    t: torch.Tensor
    risk: torch.Tensor
    risk_se: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def as_dict(self) -> dict:
        """{"step": [...], "t": [...], "risk": [[...] per row], "risk_se": … or None} (lists)."""
        return {"step": self.step.tolist(), "t": self.t.tolist(), "risk": self.risk.tolist(),
                "risk_se": None if self.risk_se is None else self.risk_se.tolist()}


def check_record_every(record_every) -> Optional[int]:
    """None, or ``record_every`` as an int ≥ 1 (``ConfigError`` naming it otherwise)."""
    return None if record_every is None else check_positive_int("record_every", record_every)


def recorded_run(state, steps: int, every: int, advance: Callable, measure: Callable):
    """Advance ``state`` by ``steps`` steps in chunks of ``every``, recording before the
    first chunk and after each one.

    ``advance(state, k)`` → (state after k steps, the value at the chunk's start or None);
    ``measure(state)`` → (value [B], se [B] or None): the value where ``advance`` gave none.
    Returns (final state, :class:`RunRecord`)."""
    steps_, ts, vals, ses = [], [], [], []
    done = 0
    pending = state                          # the state whose row is not written yet
    while True:
        k = min(every, steps - done)
        if k == 0:
            value, se = measure(pending)
        else:
            state, at_start = advance(pending, k)
            value, se = at_start if at_start is not None else measure(pending)
        steps_.append(pending.step)
        ts.append(pending.t)
        vals.append(value.detach().reshape(-1))
        ses.append(None if se is None else se.detach().reshape(-1))
        if k == 0:
            break
        done += k
        pending = state
    exact = all(s is None for s in ses)
    se_t = None if exact else torch.stack(
        [torch.full_like(v, float("nan")) if s is None else s for v, s in zip(vals, ses)])
    rec = RunRecord(step=torch.tensor(steps_, dtype=torch.int64),
                    t=torch.tensor(ts, dtype=torch.float64),
                    risk=torch.stack(vals), risk_se=se_t)
    return pending, rec


__all__ = ["RunRecord", "check_record_every", "recorded_run"]
