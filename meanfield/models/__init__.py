"""WHAT is minimised: units φ, activations, closed-form Gaussian kernels, tasks."""
from .activations import ACTIVATIONS, Activation, get_activation
from .kernels import CLOSED_FORM_ACTIVATIONS, GaussianKernel, gaussian_kernel, has_gaussian_kernel
from .gaussian_tasks import IsotropicGaussians, TeacherStudent
from .task_base import Potential, Task, as_batched, as_weights, uniform_weights
from .tasks import ConfiningPotential, FiniteDataset
from .torus import TorusMMD
from .units import Unit

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "CLOSED_FORM_ACTIVATIONS",
           "GaussianKernel", "gaussian_kernel", "has_gaussian_kernel", "ConfiningPotential", "FiniteDataset",
           "IsotropicGaussians", "Potential", "Task", "TeacherStudent", "TorusMMD", "Unit", "as_batched",
           "as_weights", "uniform_weights"]
