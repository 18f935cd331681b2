"""HOW particles move: Wasserstein GD, online/minibatch SGD, noisy SGD / mean-field Langevin."""
from .particles import (DRIFTS, ParticleDynamics, ParticleState, StepInfo, gradient_flow,
                        langevin, minibatch_sgd, online_sgd)
from .noise_switch import NoiseSwitch
from .record import RunRecord
from .schedules import Schedule, as_schedule
from .linearized import linearized
from .cot import (COT_DRIFTS, ConditionalOTFlow, CotStepInfo, ResNetState,  # ResNets
                  conditional_ot_flow, resnet_sgd)

__all__ = ["DRIFTS", "ParticleDynamics", "ParticleState", "StepInfo", "gradient_flow",
           "langevin", "minibatch_sgd", "online_sgd", "RunRecord", "Schedule", "as_schedule",
           "COT_DRIFTS", "ConditionalOTFlow", "CotStepInfo", "ResNetState", "conditional_ot_flow",
           "resnet_sgd", "NoiseSwitch", "linearized"]
