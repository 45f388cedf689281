#!/usr/bin/env bash
# Makes target/python-venv, a virtualenv with the pinned packages of
# tests/python/requirements.txt (the official `openai` client and pytest),
# for tests/openai_python_client.rs. Idempotent: a venv that already has
# the pinned versions is left alone. Quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
venv="target/python-venv"
requirements="tests/python/requirements.txt"

# True when the venv's packages match every `name==version` pin.
up_to_date() {
    [ -x "$venv/bin/python" ] || return 1
    "$venv/bin/python" - "$requirements" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version

import openai  # noqa: F401
import pytest  # noqa: F401

for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    if version(name.strip()) != pinned.strip():
        sys.exit(1)
PY
}

if up_to_date; then
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p target
    "$python" -m venv "$venv" || {
        echo "setup-python-tests: could not create $venv with $python" >&2
        exit 1
    }
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input -r "$requirements" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-python-tests: pip install -r $requirements failed" >&2
    exit 1
fi

if ! up_to_date; then
    echo "setup-python-tests: $venv does not have the pinned versions after installing" >&2
    exit 1
fi
