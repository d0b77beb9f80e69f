#!/usr/bin/env bash
# The main job on a fresh machine: install and start Docker when needed,
# build the examples' image locally, build reconcile, and converge the local
# engine to examples/manifests. Extra arguments go to `reconcile apply`
# (e.g. --auto-approve).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/docker-setup.sh
cargo build --release --locked --quiet
exec target/release/reconcile apply examples/manifests "$@"
