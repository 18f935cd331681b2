"""A dynamics that switches its noise off at a given iteration.

:class:`NoiseSwitch` advances a state with a noisy dynamics (mean-field Langevin, β < ∞)
before iteration ``k_off`` and with a noiseless one (β = ∞) from ``k_off`` on, as Chizat's
mean-field Langevin experiments on the torus do (the mfld-torus experiment).  Its potential
is the noiseless dynamics' (the same task: the potential does not depend on β).
"""
from __future__ import annotations


class NoiseSwitch:
    """Steps with ``noisy`` while ``state.step < k_off``, with ``clean`` (β = ∞) after.

    noisy, clean : two ``ParticleDynamics`` of the same task (and dt, backend), ``clean``
        without noise; ``state.step`` is the iteration k about to be taken.
    ``step(state) -> (state, info)`` is the chosen dynamics' step; ``potential(state)`` is
    ``clean.potential(state)``.
    """

    def __init__(self, noisy, clean, k_off: int):
        self.noisy, self.clean, self.k_off = noisy, clean, k_off

    def step(self, state):
        """One step of ``noisy`` before iteration ``k_off``, of ``clean`` from it on."""
        return (self.noisy if state.step < self.k_off else self.clean).step(state)

    def potential(self, state):
        """The potential at ``state`` (``clean``'s: the noise does not enter it)."""
        return self.clean.potential(state)
