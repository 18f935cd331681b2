"""The mean-field limit (PDE side): the radial distributional-dynamics solver and its checks."""
from .radial import (SCHEMES, QuadraticRadialPotentials, RadialDD, RadialGrid, RadialSolution,
                     bernoulli, chi_law, solve_quantiles)
from .grid2d import GRID_SCHEMES, GridDD, GridSolution
from .grid2d_mesh import Grid2D, knn_neg_entropy, w2_grid

__all__ = ["SCHEMES", "QuadraticRadialPotentials", "RadialDD", "RadialGrid", "RadialSolution",
           "bernoulli", "chi_law", "solve_quantiles", "GRID_SCHEMES", "Grid2D", "GridDD",
           "GridSolution", "knn_neg_entropy", "w2_grid"]
