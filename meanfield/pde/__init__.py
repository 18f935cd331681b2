"""The mean-field limit (PDE side): the radial distributional-dynamics solver and its checks."""
from .radial import (SCHEMES, QuadraticRadialPotentials, RadialDD, RadialGrid, RadialSolution,
                     bernoulli, chi_law, solve_quantiles)

__all__ = ["SCHEMES", "QuadraticRadialPotentials", "RadialDD", "RadialGrid", "RadialSolution",
           "bernoulli", "chi_law", "solve_quantiles"]
