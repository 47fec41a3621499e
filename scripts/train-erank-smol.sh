#!/usr/bin/env bash
# Reproduces the embedded default erank-smol from scratch (docs/model-card.md), on 2 CPU cores with
# bf16 units (AMX; about 3x longer in fp32 on a CPU without them, see the model card) in
# about an hour (347 + 2225 + 634 s measured on shared cores): blended labels (DL20; DL21 held out) -> SFT -> GRPO -> export into the package.
# Every stage resumes after a kill (-9 included): run the same command again. Progress lines with
# an ETA go to stderr. Needs `bash scripts/install.sh --all` and ../shared/data.
#   bash scripts/train-erank-smol.sh            train and export to src/erank/weights/erank-smol
#   EVAL=1 bash scripts/train-erank-smol.sh     also score base / SFT / SFT+RL on held-out DL21
set -euo pipefail
cd "$(dirname "$0")/.."
E=.venv/bin/erank
[ -s runs/smol/data/train.jsonl ] || $E -v train data configs/train/smol-data.yaml
[ -f runs/smol/sft/summary.json ] || $E -v train sft configs/train/smol-sft.yaml
[ -f runs/smol/rl/summary.json ] || $E -v train rl configs/train/smol-rl.yaml
# the expected-score rule: s x P(s) is exactly 0 for the 89% of documents labelled 0 (docs/model-card.md)
$E train export runs/smol/rl/adapter src/erank/weights/erank-smol --rule expected
if [ "${EVAL:-0}" = 1 ]; then
  for m in smollm2-135m runs/smol/sft/adapter runs/smol/rl/adapter; do
    out="runs/smol/eval-$(echo "$m" | tr '/' '_').json"
    [ -s "$out" ] || $E train eval --model "$m" runs/smol/data/eval.jsonl --top-k 100 --truncate-length 128 > "$out"
  done
fi
