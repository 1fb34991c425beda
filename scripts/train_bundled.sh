#!/usr/bin/env bash
# Reproduce the bundled weights (napari_sgnet/weights/{sgnet,baseline,baseline-fov}) with one command:
#
#   scripts/train_bundled.sh            # train all three, calibrate, install, score on held-out slides
#
# Three models, trained on the same generated Gleason-like slides (generator v2, docs/synthetic.md)
# with the same seeds, steps, batch size, augmentation and checkpoint selection:
#   sgnet         SGNet: the general branch on the local patch + the surrounding-context branch
#   baseline      the same general branch on the local patch alone (a quarter of SGNet's field of view)
#   baseline-fov  the same general branch on the surrounding patch downsampled to the local size
#                 (SGNet's field of view at half its resolution)
# then scored under the same engine tiling on slides whose seeds no run has seen (neither for
# training nor for checkpoint selection nor for OOD calibration). See docs/training.md (model card).
#
# Knobs (environment): OUT (work folder, default runs/bundled), STEPS, BATCH, PATCH, THREADS
# (torch threads per run: 1 is fastest on a shared 2-core machine), PARALLEL=1 (train the three at
# once), DEVICE (auto/cpu/cuda), INSTALL=0 (do not copy into the package), AUGMENT (stain: the
# stain-robust ranges of docs/training.md), ARCH (general branch), SCI (SCI width, blocks, heads).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/bundled}
STEPS=${STEPS:-2000}
BATCH=${BATCH:-8}
PATCH=${PATCH:-128}
LR=${LR:-1e-3}         # AdamW peak; from scratch on a short schedule (the paper's 2e-4 fine-tunes)
THREADS=${THREADS:-1}
PARALLEL=${PARALLEL:-1}
DEVICE=${DEVICE:-auto}
INSTALL=${INSTALL:-1}
AUGMENT=${AUGMENT:-stain}
ARCH=${ARCH:-vgg_fpn_deep}   # dense convolutions: 2.2x the old bundled forward on this CPU (docs/benchmarks.md)
read -r SCI_WIDTH SCI_BLOCKS SCI_HEADS <<< "${SCI:-64 1 4}"

VERSION=2                     # synthetic generator version
TRAIN_SEEDS=0-7               # training slides
VAL_SEEDS=100,101             # checkpoint selection (best held-out mIoU)
OOD_SEEDS=510-515             # out-of-distribution threshold calibration
TEST_SEEDS=(500 501 502 503 504 505)  # the model card's figures; never seen in training, selection, calibration
SIZE=16384                    # 8.2 mm x 8.2 mm at 0.5 µm/px; the 4 µm/px working level is 2048 px
COMMON=(--synthetic-train-seeds "$TRAIN_SEEDS" --synthetic-val-seeds "$VAL_SEEDS" --size "$SIZE"
        --synthetic-version "$VERSION" --arch "$ARCH" --patch-size "$PATCH" --mpp 4.0
        --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --seed 0 --val-every 250
        --checkpoint-every 500 --device "$DEVICE" --threads "$THREADS" --augment "$AUGMENT")
MODELS_TRAINED=(sgnet baseline baseline-fov)

mkdir -p "$OUT"
train() {  # $1 = sgnet | baseline | baseline-fov
  local extra=()
  case "$1" in
    sgnet) extra=(--sci-width "$SCI_WIDTH" --sci-blocks "$SCI_BLOCKS" --sci-heads "$SCI_HEADS") ;;
    baseline) extra=(--baseline) ;;
    baseline-fov) extra=(--baseline --baseline-input context) ;;
  esac
  local resume=()
  [ -d "$OUT/$1/last" ] && resume=(--resume)
  "$BIN/napari-sgnet" train --out "$OUT/$1" --name "$1" "${COMMON[@]}" "${extra[@]}" \
    "${resume[@]}" > "$OUT/$1.log" 2>&1
}

if [ "$PARALLEL" = 1 ]; then
  pids=()
  for m in "${MODELS_TRAINED[@]}"; do train "$m" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
else
  for m in "${MODELS_TRAINED[@]}"; do train "$m"; done
fi

"$BIN/python" scripts/plot_training_curve.py "$OUT/sgnet" "$OUT/baseline" "$OUT/baseline-fov" \
  --out "$OUT/training_curve.svg" --json "$OUT/training_curve.json"

for m in "${MODELS_TRAINED[@]}"; do  # OOD thresholds on held-out seeds no other step uses
  "$BIN/napari-sgnet" calibrate-ood --model "$OUT/$m/best" --held-out-seeds "$OOD_SEEDS" \
    --threads "$THREADS" > "$OUT/$m-ood.log" 2>&1
done

if [ "$INSTALL" = 1 ]; then
  MODELS=()
  for m in "${MODELS_TRAINED[@]}"; do
    dest=napari_sgnet/weights/$m
    mkdir -p "$dest"
    install -m 644 "$OUT/$m/best/model.safetensors" "$OUT/$m/best/config.json" "$dest/"
    MODELS+=(--model "$dest")
  done
  RECORD=--record  # the installed config.json files carry the test figures
else
  RECORD=""
  MODELS=()
  for m in "${MODELS_TRAINED[@]}"; do MODELS+=(--model "$OUT/$m/best"); done
fi

TEST_ARGS=()
for s in "${TEST_SEEDS[@]}"; do TEST_ARGS+=(--synthetic-seed "$s"); done
"$BIN/napari-sgnet" evaluate "${TEST_ARGS[@]}" --size "$SIZE" --synthetic-version "$VERSION" \
  "${MODELS[@]}" --ablations all --device "$DEVICE" --threads "$THREADS" --no-progress \
  --json "$OUT/heldout.json" $RECORD | tee "$OUT/heldout.txt"
