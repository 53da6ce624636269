#!/usr/bin/env bash
# The whole test suite, from a fresh machine: builds the pinned stock components (cached outside
# the repository), checks formatting and lints, builds Ferrite and runs every test — unit tests
# and the integration tests that start their own test beds (stock etcd + kube-apiserver + kwok).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

e2e/stock/build.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --bins --quiet

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?

# One closing line over every test binary (cargo prints one "test result" line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "cargo-test: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
