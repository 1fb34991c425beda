#!/usr/bin/env bash
# Reproduce the bundled weights (napari_sgnet/weights/{sgnet,baseline}) with one command:
#
#   scripts/train_bundled.sh            # train both, install them, score them on held-out slides
#
# SGNet and its baseline (the same general branch without the surrounding-context branch) are
# trained on the same generated Gleason-like slides, with the same seeds, steps, batch size and
# augmentation, then scored under the same tiling on slides whose seeds neither run has seen
# (neither for training nor for checkpoint selection). See docs/training.md (model card).
#
# Knobs (environment): OUT (work folder, default runs/bundled), STEPS, BATCH, THREADS (torch
# threads per run: 1 is fastest on a shared 2-core machine), PARALLEL=1 (train both at once),
# DEVICE (auto/cpu/cuda), INSTALL=0 (do not copy into the package), AUGMENT (augmentation preset
# of the main run: mild, the shipped weights'; stain, the stain-robust ranges), ROBUST_STEPS
# (default 400; 0 skips it): a second stage that continues each best checkpoint for this many
# steps with the stain-robust augmentation (lr 2e-4, seed 1); the shipped weights are its result.
# See docs/training.md "Stain robustness" (OUT=runs/stain INSTALL=0 AUGMENT=stain ROBUST_STEPS=0
# is the from-scratch stain-robust run measured there).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/bundled}
STEPS=${STEPS:-1500}
BATCH=${BATCH:-8}
LR=${LR:-1e-3}         # AdamW peak; from scratch on a short schedule (the paper's 2e-4 fine-tunes)
THREADS=${THREADS:-1}
PARALLEL=${PARALLEL:-1}
DEVICE=${DEVICE:-auto}
INSTALL=${INSTALL:-1}
AUGMENT=${AUGMENT:-mild}
ROBUST_STEPS=${ROBUST_STEPS:-400}

TRAIN_SEEDS=0-7        # training slides
VAL_SEEDS=100,101      # checkpoint selection (best held-out mIoU)
TEST_SEEDS=(200 201 202 203)  # the model card's figures; never seen in training or selection
SIZE=16384             # 8.2 mm x 8.2 mm at 0.5 µm/px; the 4 µm/px working level is 2048 px
COMMON=(--synthetic-train-seeds "$TRAIN_SEEDS" --synthetic-val-seeds "$VAL_SEEDS" --size "$SIZE"
        --arch deeplabv3plus_small --patch-size 128 --mpp 4.0 --steps "$STEPS"
        --batch-size "$BATCH" --lr "$LR" --seed 0 --val-every 300 --checkpoint-every 300
        --device "$DEVICE" --threads "$THREADS" --augment "$AUGMENT")

mkdir -p "$OUT"
train() {  # $1 = sgnet | baseline
  local extra=()
  [ "$1" = baseline ] && extra=(--baseline)
  local resume=()
  [ -d "$OUT/$1/last" ] && resume=(--resume)
  "$BIN/napari-sgnet" train --out "$OUT/$1" --name "$1" "${COMMON[@]}" "${extra[@]}" \
    "${resume[@]}" 2>&1 | tee "$OUT/$1.log"
}

robust() {  # $1 = sgnet | baseline: continue $OUT/$1/best with the stain-robust augmentation
  local extra=()
  [ "$1" = baseline ] && extra=(--baseline)
  local resume=()
  [ -d "$OUT/$1-robust/last" ] && resume=(--resume)
  "$BIN/napari-sgnet" train --out "$OUT/$1-robust" --name "$1" --init "$OUT/$1/best" \
    "${COMMON[@]}" --steps "$ROBUST_STEPS" --lr 2e-4 --seed 1 --val-every 200 \
    --checkpoint-every 200 --augment stain "${extra[@]}" "${resume[@]}" 2>&1 \
    | tee "$OUT/$1-robust.log"
}
both() {  # $1 = train | robust
  if [ "$PARALLEL" = 1 ]; then
    "$1" sgnet > /dev/null & pid=$!
    "$1" baseline
    wait "$pid"
  else
    "$1" sgnet
    "$1" baseline
  fi
}

both train
FINAL=""
if [ "$ROBUST_STEPS" -gt 0 ]; then
  both robust
  FINAL=-robust
fi

if [ "$INSTALL" = 1 ]; then
  for kind in sgnet baseline; do
    dest=napari_sgnet/weights/$kind
    mkdir -p "$dest"
    install -m 644 "$OUT/$kind$FINAL/best/model.safetensors" "$OUT/$kind$FINAL/best/config.json" \
      "$dest/"
  done
  MODELS=(--model napari_sgnet/weights/sgnet --model napari_sgnet/weights/baseline)
  RECORD=--record  # the installed config.json files carry the test figures
else
  RECORD=""
  MODELS=(--model "$OUT/sgnet$FINAL/best" --model "$OUT/baseline$FINAL/best")
fi

TEST_ARGS=()
for s in "${TEST_SEEDS[@]}"; do TEST_ARGS+=(--synthetic-seed "$s"); done
"$BIN/napari-sgnet" evaluate "${TEST_ARGS[@]}" --size "$SIZE" "${MODELS[@]}" \
  --device "$DEVICE" --threads "$THREADS" --json "$OUT/heldout.json" $RECORD \
  | tee "$OUT/heldout.txt"
