#!/usr/bin/env bash
# Regenerate the README gallery: run each reproduction in the mode shown in the README, copy
# its figures to docs/gallery/<experiment>-<figure>.png and write its movie to
# docs/gallery/<experiment>.gif (`meanfield animate`).  `make gallery` calls this.
# Usage: scripts/gallery.sh [EXPERIMENT ...]   (default: all of them; long: tens of minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
MF=${MF:-.venv/bin/meanfield}
RUNS=${GALLERY_RUNS:-runs/gallery}
mkdir -p "$RUNS" docs/gallery

# experiment | extra arguments | figures
GALLERY=(
  "teacher-student||risk.png particles.png"
  "mmn-isotropic||risk.png histograms.png"
  "mmn-bifurcation||risk.png histograms.png"
  "chaos-rate||chaos.png"
  "n-scaling||n_scaling.png"
  "cb-relu2d||trajectories.png"
  "cb-threshold||threshold.png"
  "mfld-torus||free_energy.png annealing.png"
  "pde2d-teacher||density.png rates.png"
  "pde2d-torus||density.png free_energy.png"
  "resnet-limit||limits.png"
  "resnet-digits||accuracy.png"
  "resnet-rkhs||separation.png training.png"
  "linear-obstruction||obstruction.png"
  "lazy-vs-meanfield||paths.png alpha.png crossover.png linearization.png"
)

# the README's sweep: the N-dependence of teacher-student with a wide (1000-unit) teacher
SWEEP_ARGS="--grid N=25,50,100,200,400 --grid seed=0:4 --set m0=1000"

want=("$@")
for row in "${GALLERY[@]}"; do
  IFS='|' read -r name args figs <<<"$row"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " ${name} " ]]; then continue; fi
  out="$RUNS/$name"
  rm -rf "$out"
  echo "gallery: meanfield run $name $args --out $out" >&2
  # shellcheck disable=SC2086
  "$MF" run "$name" $args --out "$out" --no-progress
  for f in $figs; do
    cp "$out/figures/$f" "docs/gallery/$name-$f"
  done
  # the movie of the flow (README gallery: at most 50 frames, small enough for the page)
  if [ "$name" != "cb-threshold" ] && [ "$name" != "linear-obstruction" ]; then
    "$MF" animate "$out" --out "docs/gallery/$name.gif" --frames 50 --dpi 60 --no-progress >/dev/null
  fi
done
if [ ${#want[@]} -eq 0 ] || [[ " ${want[*]} " =~ " sweep " ]]; then
  out="$RUNS/sweep-n"
  rm -rf "$out"
  echo "gallery: meanfield sweep teacher-student $SWEEP_ARGS --out $out" >&2
  # shellcheck disable=SC2086
  "$MF" sweep teacher-student $SWEEP_ARGS --out "$out" --no-progress
  "$MF" plot "$out" >/dev/null
  cp "$out/figures/risk_vs_N.png" docs/gallery/sweep-risk_vs_N.png
fi
