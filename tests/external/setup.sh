#!/usr/bin/env bash
# Install what the checks in tests/external need, pinned:
#   - Python: requirements.txt into tests/external/.venv (a virtualenv, so the
#     pins never fight the system's packages);
#   - Node: package-lock.json into tests/external/node_modules with `npm ci`.
# Idempotent: when the installed state matches the pins (a stamp holding the
# hash of the pin file), nothing is run, so a second call takes well under a
# second. Needs python3 (with venv) and node/npm on PATH; reaches only PyPI
# and the npm registry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- Python ---------------------------------------------------------------
py_stamp=".venv/.requirements.sha256"
py_want="$(hash_of requirements.txt)-$(python3 -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x .venv/bin/python || "$(cat "$py_stamp" 2>/dev/null)" != "$py_want" ]]; then
    echo "setup: installing Python requirements into tests/external/.venv" >&2
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r requirements.txt
    printf '%s\n' "$py_want" > "$py_stamp"
fi

# --- Node -----------------------------------------------------------------
node_stamp="node_modules/.package-lock.sha256"
node_want="$(hash_of package-lock.json)"
if [[ ! -d node_modules/yaml-language-server || "$(cat "$node_stamp" 2>/dev/null)" != "$node_want" ]]; then
    echo "setup: installing npm packages into tests/external/node_modules (npm ci)" >&2
    # yaml-language-server 2.x declares node >=22.13 but runs on node 20 for
    # what lsp_check.mjs uses; the engine warning is expected there.
    npm ci --no-audit --no-fund --loglevel=error
    printf '%s\n' "$node_want" > "$node_stamp"
fi

echo "setup: tests/external ready ($(.venv/bin/python -c 'from importlib.metadata import version as v; print("jsonschema", v("jsonschema") + ", ruamel.yaml", v("ruamel.yaml") + ", schemathesis", v("schemathesis"))'), yaml-language-server $(node -p 'require("./node_modules/yaml-language-server/package.json").version'))"
