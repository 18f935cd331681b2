"""HOW particles move: Wasserstein GD, online/minibatch SGD, noisy SGD / mean-field Langevin."""
from .particles import (DRIFTS, ParticleDynamics, ParticleState, StepInfo, gradient_flow,
                        langevin, minibatch_sgd, online_sgd)
from .schedules import Schedule, as_schedule

__all__ = ["DRIFTS", "ParticleDynamics", "ParticleState", "StepInfo", "gradient_flow",
           "langevin", "minibatch_sgd", "online_sgd", "Schedule", "as_schedule"]
