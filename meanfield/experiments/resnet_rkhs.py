"""resnet-rkhs: RKHS ResNets with random Fourier features, PL ratio and λ_min(K_X) against data separation.

Model (Barboni–Peyré–Vialard, NeurIPS 2022): residuals v_s(x) = Θ_s ψ(x) with fixed random
Fourier features ψ_j(x) = cos(⟨ω_j, x⟩ + φ_j), ω_j from the Student-t spectral density of
the Matérn-ν kernel (``models.resnet.random_fourier_units``; E[ψ(x)ψ(x')] = ½ k_ν(|x − x'|)),
the same M features in each of L layers; only Θ (the u of the units u cos(⟨w, x⟩ + b))
is trained, from Θ = 0 (the identity map), by the full-batch conditional-OT flow
(``train="u"``, ξ = 1, step dt).  Hidden dimension D = lift·d with BPV's lifting A, B.

Data with separation δ: n_pairs centres c_k ~ N(0, I_d), each giving the pair c_k ± (δ/2) e_k
(e_k a random unit vector), so the closest points are δ apart.  Targets:

* ``neg``: y = −x (Lipschitz: the residual varies little across a pair);
* ``split``: y = −x ± ``split`` e_k for the two members of pair k (points δ apart must be
  sent 2·split apart: the residual has an O(1) component along the pair's difference).

Recorded along training (metrics.csv, one row per ``log_every`` steps; columns target
(index into ``targets``), nu, delta, step, t, risk, velocity_sq, pl_ratio, lam_min,
lam_min_0, pl_bound, means over seeds):

    velocity_sq = ‖v‖²_{L²(μ)} = Σ_j m_j |v_j|²  (u-coordinates: the actual velocity),
    pl_ratio    = ‖v‖² / L   (the risk infimum is 0: interpolation),
                = (4/n) × the Rayleigh quotient of the tangent kernel along the residual,
    lam_min     = min_l λ_min(K_l),  K_l = (1/M) Ψ(X_l) Ψ(X_l)ᵀ  [n × n] at the hidden states
                  X_l of layer l;  lam_min_0 = λ_min(K_0) at the embedded data,
    pl_bound    = Σ_l h_l λ_min(K_l) ‖P_{l+1}‖²_F / (n² L) ≤ pl_ratio  (h_l = 1/L the layer
                  mass, P the adjoints: ‖v‖² = Σ_l h_l tr(P_{l+1}ᵀ K_l P_{l+1}) / n²).

Expected: for the Matérn-ν kernel λ_min(K_X) decays like δ^{min(2ν, 2)} as δ → 0 (the
pair's 2 × 2 block has smallest eigenvalue ½(1 − k_ν(δ√lift)), an upper bound on λ_min),
except ν = 1, where 1 − k_1 has a logarithm at leading order and λ_min ~ δ² log(1/δ).  The
PL *bound* follows λ_min, while the PL ratio itself (a Rayleigh quotient along the residual)
need not when the target is Lipschitz (``neg``) — the distinction of Robin–Scaman–Lelarge
(NeurIPS 2022) recalled in docs/design.md §1.

Exponents of λ_min in δ (fit.json, and ``results.json["exponents"]``; computed by
``meanfield.analysis.kernels``), three per ν, labelled:

* ``asymptotic`` — the exact kernel ½k_ν (``analysis.kernels.exact_lam_min``) on a grid of ``GRID_PER_DECADE``
  = 8 points per decade from δ = ``ASYMPTOTIC_FLOOR`` = 1e-4 up to the largest δ of the run;
  the exponent is the least-squares slope of log λ_min against log δ over the smallest decade
  [1e-4, 1e-3], and it counts as converged when the local slopes (successive grid points)
  inside that decade spread by less than ``SLOPE_TOL`` = 0.01.  For ν = 1 the fitted quantity
  is λ_min / log(2/z) (z = √2·δ√lift/ℓ, the Bessel argument at a pair's distance), so the
  exponent compares with 2; the uncorrected slope is kept as ``asymptotic_uncorrected``;
* ``pre_asymptotic`` — the exact kernel at the run's δ values (0.02 to 0.4 in full mode);
* ``trained_features`` — λ_min at initialisation of the M random features actually trained
  (the recorded ``lam_min_0``), at the run's δ values, with a bootstrap interval over seeds;
  beside it ``features_asymptotic``, the same features on the grid's smallest decade.

Measured (full mode: M = 256, n = 16; 44 s wall), asymptotic / pre-asymptotic / trained
features: ν = ½: 1.000 / 0.85 / 1.39;  ν = 1 (log-corrected): 1.993 / 1.44 / 1.92 (uncorrected
1.868, local slopes spread 0.035: not converged — the logarithm);  ν = 3/2: 1.999 / 1.71 /
1.86;  ν = ∞: 2.000 / 1.93 / 1.94.  Local slopes in [1e-4, 1e-3] spread by at most 0.004.
The M features are smooth, so on the grid's smallest decade they give δ² for every ν
(2.00); for ν = ½ the crossover sits near δ ~ 1/max_j |ω_j|, where hardly any of the M
Cauchy frequencies exceeds 1/δ — that is what steepens the trained-feature slope to 1.39.
float64 suffices: at δ = 1e-4 the eigensolver's λ_min agrees with 40-digit arithmetic to a
relative 6·10⁻⁸ (``exact_lam_min``).

results.json holds, per target and ν, λ_min(K_X) at initialisation (random features, and
``lam_min_0_exact_kernel`` for the M = ∞ kernel ½k_ν), the minimum over training of pl_ratio
and of pl_bound, the final risk, and fitted slopes in log δ (bootstrap over seeds;
``analysis.kernels.separation_fits``).  Figures: ``figures.resnets.rkhs_figures``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import io
from ..analysis.kernels import ASYMPTOTIC_FLOOR, FIT, lam_min_exponents, separation_fits
from ..diagnostics import resnet_kernel_pl
from ..dynamics import ConditionalOTFlow
from ..errors import ConfigError
from ..figures import resnets
from ..models.resnet import ResNet, grid_measure, lift_matrices, random_fourier_units
from ..models.resnet_tasks import PAIR_TARGETS, separated_pairs
from .config import ResNetConfig, parse_floats
from .plan import Plan
from .resnet_common import job_phase, snapshots_arrays, write_outputs

NAME = "resnet-rkhs"
VIEWS = ("depth", "params")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "targets=neg", "steps=10", "log_every=5", "save_every=5",
        "checkpoint_every=5")


@dataclass(frozen=True)
class Config(ResNetConfig):
    """Keys of resnet-rkhs: M random features per layer, L layers, n_pairs separated pairs
    per δ in ``deltas``, Matérn smoothness ``nus``, the targets.  ``scale = "small"``
    presets M = 32, L = 2, n_pairs = 3, deltas 0.05,0.5, nus 0.5,inf (the defaults are the
    full run's)."""

    d: int = 2
    steps: int = 400
    dt: float = 0.1
    replicas: int = 2
    dtype: str = "float64"
    log_every: int = 20
    save_every: int = 200
    checkpoint_every: int = 100
    lift: int = 2
    M: int = 256
    L: int = 4
    n_pairs: int = 8
    deltas: str = "0.02,0.05,0.1,0.2,0.4"
    nus: str = "0.5,1,1.5,inf"
    targets: str = "neg,split"
    split: float = 0.5
    lengthscale: float = 1.0
    task_seed: int = 0

    _presets = {"scale": {"full": {}, "small": {"M": 32, "L": 2, "n_pairs": 3, "deltas": "0.05,0.5",
                                                 "nus": "0.5,inf"}}}
    _help = {"d": "input dimension of the pairs' centres c_k ~ N(0, I_d)",
             "dt": "step of the conditional-OT flow on the MMN time axis",
             "replicas": "independent seeds (replicas of one tensor)",
             "lift": "hidden dimension D = lift·d (Barboni–Peyré–Vialard's lifting)",
             "M": "random Fourier features per layer",
             "L": "layers",
             "n_pairs": "separated pairs of points per δ",
             "deltas": "the separations δ of the pairs, comma-separated",
             "nus": "Matérn smoothness ν of the features' kernel, comma-separated (inf: Gaussian)",
             "targets": "the targets, comma-separated: neg (y = −x) and/or split",
             "split": "split target: a pair's members are sent ±split·e_k apart, in (0, 1]",
             "lengthscale": "length scale ℓ of the Matérn kernel",
             "task_seed": "seed of the pairs"}
    # the data kernels K_l [2·n_pairs]² of every layer and the hidden states of the points
    _size_terms = {"n_pairs": lambda c: 8 * 3 * (c.L + 2) * c.replicas * ((2 * c.n_pairs) ** 2
                                                                      + 8 * c.n_pairs * c.lift * c.d)}

    def validate(self):
        """ResNetConfig's checks, then (``ConfigError``): targets among "neg", "split"; lift,
        M, L, n_pairs ≥ 1; task_seed ≥ 0; lengthscale finite and > 0; 0 < split ≤ 1; deltas numbers
        > 0, at least two, the largest ≥ 10·``ASYMPTOTIC_FLOOR``, and nus half-integers > 0
        or inf (:meth:`sizes`)."""
        super().validate()
        if not self.target_list or any(t not in PAIR_TARGETS for t in self.target_list):
            raise ConfigError(f"targets must list 'neg' and/or 'split', got {self.targets!r}")
        self.check_bounds(at_least_one=("lift", "M", "L", "n_pairs"),
                          nonnegative_ints=("task_seed",),
                          positive=("split", "lengthscale"))
        if not self.split <= 1:
            raise ConfigError(f"split must be in (0, 1] (the offset ±split·e_k is O(1): at most the "
                              f"centres' scale, c_k ~ N(0, I_d)), got {self.split}")
        s = self.sizes()
        for nu in s["nus"]:
            if not (nu == math.inf or (nu > 0 and abs(2 * nu - round(2 * nu)) < 1e-12)):
                raise ConfigError(f"nus must be half-integers > 0 (0.5, 1, 1.5, …) or inf, got {nu!r}")
        if len(set(s["deltas"])) < 2 or max(s["deltas"]) < 10 * ASYMPTOTIC_FLOOR:
            raise ConfigError(f"deltas must hold at least two values, the largest >= {10 * ASYMPTOTIC_FLOOR:g} "
                              f"(the exponent grid starts at {ASYMPTOTIC_FLOOR:g}), got {self.deltas!r}")

    @property
    def target_list(self) -> list[str]:
        """The target names in ``targets`` (comma-separated, stripped, empty entries dropped)."""
        return [t.strip() for t in self.targets.split(",") if t.strip()]

    def sizes(self) -> dict:
        """{"M", "L", "n_pairs", "deltas", "nus"}, deltas and nus parsed to float lists
        (``parse_floats``; nus may hold inf)."""
        return {"M": self.M, "L": self.L, "n_pairs": self.n_pairs,
                "deltas": parse_floats("deltas", self.deltas),
                "nus": parse_floats("nus", self.nus, allow_inf=True)}

    def largest_job(self) -> tuple[int, int]:
        """(L, M): every job has the same size."""
        return self.L, self.M

    def unit_dim(self) -> int:
        """The linear unit's output u in D = lift·d and its random feature (w, b): 2D + 1."""
        return 2 * self.lift * self.d + 1


def plan(cfg: Config) -> Plan:
    """One job per (target, ν, δ), trained from Θ = 0; snapshots of the first job; results:
    λ_min, PL ratio and PL bound against δ with fitted slopes."""
    sz = cfg.sizes()
    dtype = getattr(torch, cfg.dtype)
    A, B = lift_matrices(cfg.d, cfg.lift)
    model = ResNet(A, B, activation="cos")
    jobs = [(ti, nu, delta) for ti in range(len(cfg.target_list)) for nu in sz["nus"] for delta in sz["deltas"]]

    def key(ti, nu, delta):
        return f"{cfg.target_list[ti]}/nu={nu:g}/delta={delta:g}"

    def phases(shared):
        return [job_phase(
            key(ti, nu, delta), {"target": ti, "nu": nu, "delta": delta},
            lambda nu=nu, delta=delta, target=cfg.target_list[ti]: _build(cfg, sz, model, nu, delta, target, dtype),
            log_every=cfg.log_every, measure=_measure,
            save_every=cfg.save_every if n == 0 else None,
            finish=lambda f, s, r, sn: {"layer": s.layer.numpy()})
            for n, (ti, nu, delta) in enumerate(jobs)]

    def results(ctx):
        res = {job: ctx.done[key(*job)] for job in jobs}
        first = res[jobs[0]]
        ti, nu, delta = jobs[0]
        X, Ys = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                                split=cfg.split)
        arrays = snapshots_arrays(first.snaps, first.result["layer"], model.param_names,
                                  {**model.arrays(), "data_X": X.numpy(),
                                   "data_Y": Ys[cfg.target_list[ti]].numpy()})
        analysis = _analyse(cfg, sz, res)
        io.write_json(ctx.out / FIT, analysis["exponents"])
        return write_outputs(ctx, arrays, analysis)

    return Plan(phases=phases, results=results, threads=cfg.threads,
                record={"model": model.to_dict(), "sizes": sz})


def _build(cfg, sz, model, nu, delta, target, dtype):
    X, Ys = separated_pairs(sz["n_pairs"], cfg.d, delta, generator=torch.Generator().manual_seed(cfg.task_seed),
                            split=cfg.split)
    g = torch.Generator().manual_seed(cfg.seed)
    feats = random_fourier_units(sz["M"], model.D, nu=nu, generator=g, lengthscale=cfg.lengthscale,
                                 replicas=cfg.replicas)                        # (R, M, P), u = 0
    L = sz["L"]
    theta = feats[:, None].expand(cfg.replicas, L, sz["M"], model.P).to(dtype).contiguous()
    flow = ConditionalOTFlow(model, X.to(dtype), Ys[target].to(dtype), dt=cfg.dt, train="u", backend=cfg.backend)
    return flow, flow.init(grid_measure(theta, param_names=model.param_names), generator=g)


def _measure(flow, state):
    diag = resnet_kernel_pl(flow, state)
    row = {k: float(v.double().mean()) for k, v in diag.items()}
    row.update({f"risk_r{r}": float(x) for r, x in enumerate(diag["risk"])})
    row.update({f"pl_ratio_r{r}": float(x) for r, x in enumerate(diag["pl_ratio"])})
    row.update({f"lam_min_0_r{r}": float(x) for r, x in enumerate(diag["lam_min_0"])})
    row.update({f"pl_bound_r{r}": float(x) for r, x in enumerate(diag["pl_bound"])})
    return row


def _analyse(cfg, sz, res) -> dict:
    """results.json: per target and ν the ``separation_fits`` table of its jobs, and the
    exponents of fit.json (``lam_min_exponents``, from the first target)."""
    out = {"experiment": NAME, "sizes": sz, "targets": {}}
    for ti, target in enumerate(cfg.target_list):
        out["targets"][target] = {f"{nu:g}": separation_fits(cfg, sz, nu, [res[(ti, nu, delta)].rows
                                                                           for delta in sz["deltas"]])
                                  for nu in sz["nus"]}
    out["exponents"] = lam_min_exponents(cfg, sz, out["targets"][cfg.target_list[0]], cfg.d * cfg.lift)
    return out


FIGURES = resnets.rkhs_figures
