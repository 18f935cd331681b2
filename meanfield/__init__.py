"""meanfield: mean-field training dynamics of neural networks as interacting particle systems.

Rooms: ``models`` (WHAT is minimised), ``interact`` (HOW pairwise sums are computed),
``dynamics`` (HOW particles move); ``diagnostics`` beside them; ``experiments``, ``io``,
``plotting`` and ``cli`` on top.  Conventions: docs/design.md §1 (risk without ½, MMN time).

``to_module`` / ``from_module`` here are the two-layer torch bridge
(``meanfield.models.twolayer_torch``); the ResNet bridge of the same names is
``meanfield.models.resnet_torch``.
"""
from .version import __version__  # noqa: E402,F401
from .cli import guard_startup  # noqa: E402  (before torch: Ctrl-C while `meanfield` starts)

guard_startup()
from .errors import ConfigError, DivergenceError  # noqa: E402
from .measure import ParticleMeasure  # noqa: E402
from .models import (ConfiningPotential, FiniteDataset, IsotropicGaussians,  # noqa: E402
                     TeacherStudent, Unit)
from .interact import evaluate, get_backend  # noqa: E402
from .dynamics import (ParticleDynamics, gradient_flow, langevin, linearized,  # noqa: E402
                       minibatch_sgd, online_sgd)
# lazy against mean-field: the output scale α, the tangent kernel
from .models.scaled import ScaledTask, scaled, symmetric  # noqa: E402
from .models.ntk import infinite_width_tangent_kernel, tangent_kernel  # noqa: E402
# the two-layer torch bridge (ResNets: meanfield.models.resnet_torch.to_module/from_module)
from .models.twolayer_torch import TwoLayerModule, from_module, to_module  # noqa: E402
# torch's threads for the API (meanfield.threads: one thread unless told otherwise)
from .threads import set_threads, using_threads  # noqa: E402
from . import diagnostics  # noqa: E402
# a run directory as an object: its config, metrics, measures, data, torch module, export
from .runs import Run, load_run  # noqa: E402

__all__ = ["ConfigError", "DivergenceError", "ParticleMeasure", "ConfiningPotential",
           "FiniteDataset", "IsotropicGaussians", "TeacherStudent", "Unit", "evaluate",
           "get_backend", "ParticleDynamics", "gradient_flow", "langevin", "minibatch_sgd",
           "online_sgd", "linearized", "ScaledTask", "scaled", "symmetric", "tangent_kernel",
           "infinite_width_tangent_kernel", "TwoLayerModule", "to_module", "from_module",
           "set_threads", "using_threads", "diagnostics", "Run", "load_run", "__version__"]
