"""Distances of finite ResNets to a reference, and their fitted rates in depth and width.

The analysis of resnet-limit (its module docstring is the documentation): per seed, the
output distance and the risk-curve distance of each L × M job to the reference
(L_ref, M_ref) trained from the same seed, and slopes of log(mean distance) against log L
and log M (:func:`~meanfield.analysis.fits.fit_slope`).
"""
from __future__ import annotations

import numpy as np

from .fits import fit_slope

PUBLISHED_SLOPES = {"depth_slope": -1.0, "width_slope": -0.5}    # O(1/L + α/√(LM)): slopes −1, −1/2


def reference_distances(job, ref):
    """Per seed, the distances of one job to the reference, each given as {"out": outputs
    [R, n_test, d] on the test points after training, "curve": risk curves [R, K] at the
    recorded times}: the output distance sqrt(mean_k |f(x_k) − f_ref(x_k)|²) and the
    risk-curve distance max_t |R(t) − R_ref(t)|.  Returns (d_out [R], d_risk [R])."""
    d_out = np.sqrt(((job["out"] - ref["out"]) ** 2).sum(-1).mean(-1))                   # (R,)
    d_risk = np.abs(job["curve"] - ref["curve"]).max(-1)                                 # (R,)
    return d_out, d_risk


def limit_distances(res, sizes) -> dict:
    """The distances of the depth sweep (L, M_ref) for L in sizes["depths"] and of the width
    sweep (L_ref, M) for M in sizes["widths"] to the reference (sizes["L_ref"],
    sizes["M_ref"]), ``res`` {(L, M): {"out", "curve"}} (:func:`reference_distances`).
    Returns {"final_risk_ref": the reference's final risk (mean over seeds), "depth" and
    "width": {"sizes", "output_distance" [R, K], "risk_distance" [R, K] (lists),
    "output_slope", "risk_slope" (``fit_slope`` of each against the sizes)}}."""
    Lr, Mr = sizes["L_ref"], sizes["M_ref"]
    ref = res[(Lr, Mr)]
    out = {"final_risk_ref": ref["curve"][:, -1].mean().item()}
    for kind, sz, key in (("depth", sizes["depths"], lambda v: (v, Mr)), ("width", sizes["widths"], lambda v: (Lr, v))):
        do = np.stack([reference_distances(res[key(v)], ref)[0] for v in sz], 1)           # (R, K)
        dr = np.stack([reference_distances(res[key(v)], ref)[1] for v in sz], 1)
        out[kind] = {"sizes": sz, "output_distance": do.tolist(), "risk_distance": dr.tolist(),
                     "output_slope": fit_slope(sz, do), "risk_slope": fit_slope(sz, dr)}
    return out


__all__ = ["PUBLISHED_SLOPES", "limit_distances", "reference_distances"]
