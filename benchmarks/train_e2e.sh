#!/usr/bin/env bash
# End-to-end ERank training on CPU (issue 6): data -> eval(untrained) -> SFT -> eval -> GRPO -> eval.
#
#   nohup taskset -c 1 benchmarks/train_e2e.sh > runs/toy/e2e.log 2>&1 &
#
# (one core, one torch thread: the other core stays free for other work; THREADS=2 and no
# taskset to use both)
# Model: SmolLM2-135M-Instruct (the embedded default). Data: configs/train/toy-*.yaml
# (DL20 + Cranfield + MED for training, DL21 held out). Every stage is a plain `erank train`
# command; the evaluation reranks the BM25 top-$CANDS of the held-out DL21 queries (all 53, or the
# first $EVAL_QUERIES) in direct mode, documents cut to 128 tokens, and also reports the hybrid
# with BM25 (alpha 0.2). Results: runs/toy/e2e-results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${THREADS:-1}
ERANK=${ERANK:-.venv/bin/erank}
OUT=${OUT:-runs/toy}
EVAL_QUERIES=${EVAL_QUERIES:-}
CANDS=${CANDS:-10}
mkdir -p "$OUT"
RES="$OUT/e2e-results.jsonl"
: > "$RES"

stage() {  # name, command...
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $(date -u +%H:%M:%S) $name: $*"
  local out; out=$("$@")
  local t1; t1=$(date +%s)
  echo "$out"
  python3 -c 'import json,sys; d=json.loads(sys.argv[2]) if sys.argv[2].strip().startswith("{") else {}; print(json.dumps({"stage": sys.argv[1], "wall_s": int(sys.argv[3]), **{k: v for k, v in d.items() if not isinstance(v, (list, dict))}}))' \
    "$name" "$(echo "$out" | python3 -c 'import sys,json; t=sys.stdin.read(); i=t.find("{"); print(json.dumps(json.loads(t[i:])) if i>=0 else "")')" "$((t1 - t0))" >> "$RES"
}

evaluate() {  # name, model
  stage "eval-$1" "$ERANK" train eval --model "$2" "$OUT/data/eval.jsonl" ${EVAL_QUERIES:+--queries "$EVAL_QUERIES"} \
    --top-k "$CANDS" --truncate-length 128
}

if [ -z "${SKIP_DATA:-}" ] || [ ! -f "$OUT/data/train.jsonl" ]; then
  stage data "$ERANK" train data configs/train/toy-data.yaml
fi
evaluate untrained default
stage sft "$ERANK" -v train sft configs/train/toy-sft.yaml
evaluate sft "$OUT/sft/merged"
stage rl "$ERANK" -v train rl configs/train/toy-rl.yaml
evaluate rl "$OUT/rl/final"
echo "== $(date -u +%H:%M:%S) done"
cat "$RES"
