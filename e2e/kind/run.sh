#!/usr/bin/env bash
# Ferrite on a kind cluster, for users with Docker: creates the cluster, moves the stock
# kube-controller-manager and kube-scheduler static pods out of the control-plane node (only one
# controller manager and one scheduler may act on a cluster), loads the image built from the
# repository's Dockerfile, installs the chart, and runs the same checks as the local-node e2e test
# (e2e/tests/selfhost.rs): both Deployments 2/2, a pod of each holding its Lease, no stock
# component left, a user Deployment's pods Running, and recovery after every replica is gone.
#
#   e2e/kind/run.sh          # create, install, check (the cluster is kept: kind delete cluster --name ferrite)
#
# Needs docker, kind, kubectl and helm on PATH. Not run on the project's own machines (they have
# no Docker engine and no registry); see README.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
name=${KIND_CLUSTER_NAME:-ferrite}
image=ferrite:${FERRITE_TAG:-0.1.0}
kubectl() { command kubectl --context "kind-$name" "$@"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind/run.sh: $tool is not on PATH" >&2; exit 2; }
done

kind get clusters | grep -qx "$name" || kind create cluster --name "$name" --config "$here/kind-config.yaml" --wait 120s
# The stock components stop when their manifests leave the kubelet's staticPodPath.
docker exec "$name-control-plane" sh -c \
  'mkdir -p /etc/kubernetes/stock && for m in kube-controller-manager kube-scheduler; do
     [ -f /etc/kubernetes/manifests/$m.yaml ] && mv /etc/kubernetes/manifests/$m.yaml /etc/kubernetes/stock/; done; true'
until [ -z "$(kubectl -n kube-system get pods -l 'component in (kube-controller-manager,kube-scheduler)' -o name)" ]; do sleep 2; done

docker build -t "$image" "$root"
kind load docker-image "$image" --name "$name"
helm --kube-context "kind-$name" upgrade --install ferrite "$root/charts/ferrite" -n kube-system \
  --set image.repository="${image%%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never

settled() {
  for c in controller-manager scheduler; do
    kubectl -n kube-system rollout status "deployment/ferrite-$c" --timeout=300s
    holder=$(kubectl -n kube-system get lease "ferrite-$c" -o jsonpath='{.spec.holderIdentity}')
    pods=$(kubectl -n kube-system get pods -l "app.kubernetes.io/component=$c" -o jsonpath='{.items[*].spec.nodeName}')
    echo "ferrite-$c: leader $holder, pods on: $pods"
    [ -n "$holder" ] || { echo "no leader for ferrite-$c" >&2; exit 1; }
  done
}
settled

kubectl create deployment web --image=registry.k8s.io/pause:3.10 --replicas=3 --dry-run=client -o yaml | kubectl apply -f -
kubectl rollout status deployment/web --timeout=300s

# Every replica gone: nothing in the cluster recreates them. What `ferrite bootstrap recover`
# does on a local node, by hand: the chart again, and a temporary Ferrite control plane (this
# checkout's binary, the kind admin kubeconfig, the chart's Lease names, no serving port) until
# the Deployments are back; it releases its Leases when stopped and the pods take over.
kubectl -n kube-system delete deployment ferrite-controller-manager ferrite-scheduler --wait=true
kubectl -n kube-system delete pods,replicasets -l app.kubernetes.io/instance=ferrite --grace-period=0 --force || true
helm --kube-context "kind-$name" upgrade --install ferrite "$root/charts/ferrite" -n kube-system \
  --set image.repository="${image%%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never
(cd "$root" && cargo build --bin ferrite --quiet)
kubeconfig=$(mktemp); trap 'rm -f "$kubeconfig"' EXIT
kind get kubeconfig --name "$name" >"$kubeconfig"
"$root/target/debug/ferrite" controller-manager --kubeconfig="$kubeconfig" --secure-port=0 \
  --use-service-account-credentials=true >/dev/null 2>&1 & cm=$!
"$root/target/debug/ferrite" scheduler --kubeconfig="$kubeconfig" --secure-port=0 >/dev/null 2>&1 & sched=$!
for c in controller-manager scheduler; do kubectl -n kube-system rollout status "deployment/ferrite-$c" --timeout=300s; done
kill -TERM "$cm" "$sched"; wait "$cm" "$sched" || true
settled
echo "kind/run.sh: Ferrite hosts itself on kind-$name"
