#!/usr/bin/env bash
# The main job, from a fresh machine: a local self-hosted cluster. Builds what is needed (the
# pinned stock components, containerd and the pause binary, Ferrite), installs the Debian
# packages a node needs, and runs `ferrite bootstrap up`: containerd + runc + CNI + the stock
# kubelet on this machine, etcd and kube-apiserver as static pods, Ferrite's controller manager
# and scheduler pivoted into their own leader-elected Deployments (Helm chart). Idempotent: on a
# running node it only does what is missing. Prints `export KUBECONFIG=…`. Needs root.
#
#   e2e/cluster-up.sh [ferrite bootstrap up flags, e.g. --dir DIR --node-ip IP]
#   target/debug/ferrite bootstrap recover   # when every Ferrite replica is gone
#   target/debug/ferrite bootstrap down      # stop the node, remove all of its host state
#
# `e2e/cluster-up.sh --bed [testbed up flags]` gives the test bed instead (no kubelet: stock etcd
# + kube-apiserver and kwok nodes, with Ferrite attached as processes); `target/debug/testbed down`
# stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = --bed ]; then
  shift
  e2e/stock/build.sh
  cargo build --workspace --bins --quiet
  target/debug/testbed down >/dev/null 2>&1 || true
  target/debug/testbed up --controller-manager ferrite --scheduler ferrite "$@"
  echo "kubectl: $(e2e/stock/build.sh --print-bin kubectl)" >&2
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "cluster-up: a local node needs root (containerd, runc, the kubelet, iptables)" >&2
  exit 2
fi
e2e/stock/build.sh kubernetes etcd helm node
cargo build --bin ferrite --quiet
target/debug/ferrite bootstrap up --chart charts/ferrite "$@"
echo "kubectl: $(e2e/stock/build.sh --print-bin kubectl)" >&2
