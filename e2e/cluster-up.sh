#!/usr/bin/env bash
# The main job, from a fresh machine: builds what is needed and brings up a local cluster with
# Ferrite's controller manager and scheduler attached, then prints how to reach it.
#
# Until self-hosting lands this is the test bed (stock etcd + kube-apiserver, kwok nodes) with
# `ferrite controller-manager` and `ferrite scheduler` running beside it. Extra arguments go to
# `testbed up`, e.g. `--nodes 100` or `--controller-manager stock`. Stop it with
# `target/debug/testbed down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

e2e/stock/build.sh
cargo build --workspace --bins --quiet
target/debug/testbed down >/dev/null 2>&1 || true
target/debug/testbed up --controller-manager ferrite --scheduler ferrite "$@"
echo "kubectl: $(e2e/stock/build.sh --print-bin kubectl)" >&2
