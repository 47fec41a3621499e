#!/usr/bin/env bash
# Reproduces the embedded default erank-smol from scratch (docs/model-card.md), on 2 CPU cores with
# bf16 units (AMX; about 3x longer in fp32 on a CPU without them, see the model card) in
# about an hour (data 272 s + SFT 3,286 s measured 2026-12-05, avx512_bf16, 2 cores): blended labels (DL20; DL21 held out) -> SFT [-> GRPO with RL=1] -> export into the package.
# Every stage resumes after a kill (-9 included): run the same command again. Progress lines with
# an ETA go to stderr. Needs `bash scripts/install.sh --all` and ../shared/data.
#   bash scripts/train-erank-smol.sh            train and export to src/erank/weights/erank-smol
#   EVAL=1 bash scripts/train-erank-smol.sh     also score base / SFT / SFT+RL on held-out DL21
set -euo pipefail
cd "$(dirname "$0")/.."
E=.venv/bin/erank
[ -s runs/smol/data/train.jsonl ] || $E -v train data configs/train/smol-data.yaml
[ -f runs/smol/sft/summary.json ] || $E -v train sft configs/train/smol-sft.yaml
# The shipped adapter is the SFT stage's (GRPO on this data was not run to the end in the session
# that trained it: docs/model-card.md). RL=1 also runs GRPO and ships its adapter instead.
STAGE=sft
MODELS="smollm2-135m runs/smol/sft/adapter"
if [ "${RL:-0}" = 1 ]; then
  [ -f runs/smol/rl/summary.json ] || $E -v train rl configs/train/smol-rl.yaml
  STAGE=rl
  MODELS="$MODELS runs/smol/rl/adapter"
fi
# the expected-score rule (docs/model-card.md)
$E train export runs/smol/$STAGE/adapter src/erank/weights/erank-smol --rule expected
if [ "${EVAL:-0}" = 1 ]; then
  for m in $MODELS; do
    out="runs/smol/eval-$(echo "$m" | tr '/' '_').json"
    [ -s "$out" ] || $E train eval --model "$m" runs/smol/data/eval.jsonl --top-k 100 --truncate-length 128 > "$out"
  done
fi
