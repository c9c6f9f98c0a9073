#!/usr/bin/env bash
# Retrain glioseg's real release models from the 21 real BraTS 2018 cases, with glioseg's own commands.
#
#   scripts/train_real_models.sh [STAGE ...]
#   STAGE: split nnunet mednext degrade ensemble postprocess package all
#
# Every stage skips finished work, so the script can be stopped at any time and run again
# (an unfinished fold resumes from its last checkpoint, a finished fold is skipped).  The
# training folders live in $WORK (default release/<name>); only each finished fold's
# model.json + model.safetensors, its logs and the small JSON/CSV outputs are committed
# (see release/.gitignore), so training can be spread over several work sessions.
#
# Profiles (PROFILE=cpu|gpu):
#   cpu  2 mm, 64^3 patches, 16 base features (the released "brats-2mm"; measured 4.2 h on a
#        2-core CPU where an nnU-Net iteration takes ~1.3 s; docs/models.md)
#   gpu  1 mm, 128^3 patches, 32 base features (nnU-Net's BraTS plan; needs a CUDA GPU)
#
# Environment: DATA (labelled cases, default ../shared/data/brats2018), WORK, PROFILE, SEED,
# DEST (folder the package stage writes the bundle into; default: the package's own bundled
# models, i.e. a retrain replaces the shipped one; set it for a trial run).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-cpu}
DATA=${DATA:-../shared/data/brats2018}
SEED=${SEED:-0}
GLIOSEG=${GLIOSEG:-.venv/bin/glioseg}
case "$PROFILE" in
  cpu)
    NAME=brats-2mm
    PLAN=(--spacing 2 --patch 64,64,64 --base-features 16)
    NNUNET_SCHEDULE=(--epochs 25 --iters-per-epoch 40)
    MEDNEXT_SCHEDULE=(--epochs 20 --iters-per-epoch 40)
    DEVICE=(--accelerator cpu --reuse-memory)  # faster CPU training for more RAM: docs/performance.md
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    ;;
  gpu)
    NAME=brats-1mm
    PLAN=(--spacing 1 --patch 128,128,128 --base-features 32)
    NNUNET_SCHEDULE=(--epochs 100 --iters-per-epoch 250)
    MEDNEXT_SCHEDULE=(--epochs 100 --iters-per-epoch 250)
    DEVICE=(--accelerator gpu --num-workers 6)
    ;;
  *) echo "PROFILE must be cpu or gpu, got '$PROFILE'" >&2; exit 2 ;;
esac
WORK=${WORK:-release/$NAME}
COMMON=(--splits "$WORK/splits.json" --fold all --cache "$WORK/preprocessed" --val-every 5
        --low-quality-augment 0.2 --seed "$SEED" "${PLAN[@]}" "${DEVICE[@]}")

[ -d "$DATA" ] || { echo "$DATA: no such folder (set DATA to the labelled BraTS cases)" >&2; exit 2; }
mkdir -p "$WORK"

stage_split() {
  [ -f "$WORK/splits.json" ] && { echo "split: $WORK/splits.json exists, kept"; return; }
  "$GLIOSEG" split "$DATA" --folds 5 --strategy radiomics --seed "$SEED" --out "$WORK/splits.json"
}
stage_nnunet() {
  "$GLIOSEG" train "$DATA" --model nnunet --out "$WORK/nnunet" "${COMMON[@]}" "${NNUNET_SCHEDULE[@]}"
}
stage_mednext() {
  "$GLIOSEG" train "$DATA" --model mednext-s-k3 --out "$WORK/mednext" "${COMMON[@]}" "${MEDNEXT_SCHEDULE[@]}"
}
stage_degrade() {  # low-quality copies of the cases: the card's degraded-input result
  "$GLIOSEG" degrade "$DATA" --out "$WORK/degraded" --seed "$SEED" --severity moderate --no-preview
}
stage_ensemble() {
  [ -f "$WORK/mednext/cv_summary.json" ] || { echo "ensemble: no finished MedNeXt cross-validation yet, skipped"; return; }
  "$GLIOSEG" ensemble-weights "$WORK/nnunet" "$WORK/mednext" --out "$WORK/weights.json" \
    --data "$DATA" --oof-out "$WORK/oof-ensemble"
}
stage_postprocess() {  # tuned on the ensemble's out-of-fold labels (nnU-Net's alone until MedNeXt is done)
  local pred="$WORK/oof-ensemble"
  [ -d "$pred" ] || pred="$WORK/nnunet/oof"
  "$GLIOSEG" postprocess tune --pred "$pred" --gt "$DATA" --out "$WORK/pp.json" \
    --clusters "$WORK/splits.model.json"
}
stage_package() {
  local degraded=()
  [ -d "$WORK/degraded" ] && degraded=(--degraded "$WORK/degraded")
  local dest=()
  [ -n "${DEST:-}" ] && dest=(--dest "$DEST")
  "$GLIOSEG" models package "$WORK" --name "$NAME" --data "$DATA" --card "$WORK/card-fields.json" \
    "${degraded[@]}" "${dest[@]}"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(all)
for stage in "${stages[@]}"; do
  case "$stage" in
    all) stage_split; stage_nnunet; stage_mednext; stage_degrade; stage_ensemble; stage_postprocess; stage_package ;;
    split|nnunet|mednext|degrade|ensemble|postprocess|package) "stage_$stage" ;;
    *) echo "unknown stage '$stage' (split nnunet mednext degrade ensemble postprocess package all)" >&2; exit 2 ;;
  esac
done
