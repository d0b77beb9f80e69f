#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh
# machine (idempotent), then runs every check. CI runs exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "tools for the cross-tool checks (pinned Python and npm packages)"
tests/external/setup.sh

step "Docker engine and the locally built test images"
scripts/docker-setup.sh --tests

step "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "build"
cargo build --locked --bins

step "Rust tests"
cargo test --locked --all-targets

step "the published schemas agree with an independent validator on every fixture"
python3 tests/external/independent_validator.py --reconcile target/debug/reconcile

step "the schemas work in a real editor client (yaml-language-server over LSP)"
for sample in manifest-invalid service-invalid; do
    node tests/external/lsp_check.mjs \
        --invalid "tests/external/lsp/$sample.yaml" --expect-line 9 \
        --expect-message-substring "below the minimum of 0" \
        --hover-file "tests/external/lsp/$sample.yaml" --hover-line 9 --hover-col 3 \
        --expect-hover-substring "Number of tasks to keep running"
    # A field whose type is a named enum shows the field's own description.
    node tests/external/lsp_check.mjs \
        --invalid "tests/external/lsp/$sample.yaml" --expect-line 9 \
        --expect-message-substring "below the minimum of 0" \
        --hover-file "tests/external/lsp/$sample.yaml" --hover-line 12 --hover-col 3 \
        --expect-hover-substring "REPLICA keeps desiredCount tasks"
done

step "the API against its OpenAPI document (schemathesis, with and without credentials)"
tests/external/.venv/bin/python tests/external/api_fuzz.py --reconcile target/debug/reconcile

step "all checks passed"
