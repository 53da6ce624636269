#!/usr/bin/env bash
# Builds the pinned stock components from the Go module proxy into a cache outside the repository:
#   ${FERRITE_CACHE:-~/.cache/ferrite}/<component>-<version>/bin/
# Idempotent: a binary that is present and reports the pinned version is not rebuilt.
# Usage: e2e/stock/build.sh [kubernetes|etcd|kwok|helm|containerd|pause ...]
#        (default: kubernetes etcd kwok helm; `node` = containerd pause, for a real local node)
#        e2e/stock/build.sh --print-bin kubectl                             (path only)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${FERRITE_CACHE:-$HOME/.cache/ferrite}
export GOTOOLCHAIN=local GOFLAGS=-trimpath CGO_ENABLED=0

log() { printf '[stock] %s\n' "$*" >&2; }

# Runs a command with its chatter kept in a log; shows the log only when it fails.
quiet() {
  local out; out=$(mktemp)
  if ! "$@" >"$out" 2>&1; then cat "$out" >&2; rm -f "$out"; return 1; fi
  rm -f "$out"
}

# A throwaway wrapper module: `go build` of a module that has replace directives of its own only
# works from a main module that states them again.
wrapper() { # dir module-path
  rm -rf "$1" && mkdir -p "$1" && printf 'module ferrite.local/%s\n\ngo 1.26\n' "$2" >"$1/go.mod"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
  local dir=$cache/kubernetes-$v
  if all_present "$dir/bin" "${bins[@]}" && reports "Client Version: $v" "$dir/bin/kubectl" version --client \
    && reports "Kubernetes $v" "$dir/bin/kube-apiserver" --version; then log "kubernetes $v cached"; return; fi
  log "building kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl)"
  local w=$cache/src/kubernetes-$v minor=${v#v1.}
  minor=${minor%%.*}
  wrapper "$w" kubernetes
  (
    cd "$w"
    go mod edit -require="k8s.io/kubernetes@$v"
    # k8s.io/kubernetes replaces every staging module with ./staging/src/k8s.io/<name>; point each at
    # the matching published v0.<minor>.<patch> tag instead.
    local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$v" 2>/dev/null | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
      go mod edit -replace="$m=$m@v0.${v#v1.}"
    done
    local pkgs=(); for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@$v"); done
    quiet go get "${pkgs[@]}"
    local pkgv=k8s.io/component-base/version
    local ld="-s -w -X $pkgv.gitVersion=$v -X $pkgv.gitMajor=1 -X $pkgv.gitMinor=$minor -X $pkgv.gitTreeState=clean -X $pkgv.buildDate=1970-01-01T00:00:00Z"
    ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    mkdir -p "$dir/bin"
    for b in "${bins[@]}"; do
      log "  go build $b"
      go build -ldflags "$ld" -o "$dir/bin/$b" "k8s.io/kubernetes/cmd/$b"
    done
  )
  reports "Client Version: $v" "$dir/bin/kubectl" version --client || { log "kubectl does not report $v"; exit 1; }
}

# reports <text> <command...>: the command's output contains text. (Output is captured first:
# `cmd | grep -q` under pipefail fails when grep exits early and cmd gets SIGPIPE.)
reports() { local want=$1 out; shift; out=$("$@" 2>&1) || true; [[ $out == *"$want"* ]]; }

all_present() { local d=$1; shift; for b in "$@"; do [ -x "$d/$b" ] || return 1; done; }

# go_tool <name> <version> <module> <package> <binary> <version-check-command...>
go_tool() {
  local name=$1 v=$2 mod=$3 pkg=$4 bin=$5; shift 5
  local dir=$cache/$name-$v
  if [ -x "$dir/bin/$bin" ] && reports "${v#v}" "$dir/bin/$bin" "$@"; then log "$name $v cached"; return; fi
  log "building $name $v"
  local w=$cache/src/$name-$v
  wrapper "$w" "$name"
  (
    cd "$w"
    go mod edit -require="$mod@$v"
    quiet go get "$pkg@$v"
    mkdir -p "$dir/bin"
    go build -ldflags "-s -w ${LDX:-}" -o "$dir/bin/$bin" "$pkg"
  )
  reports "${v#v}" "$dir/bin/$bin" "$@" || { log "$bin does not report $v"; exit 1; }
}

build_etcd() { go_tool etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 etcd --version; }
build_kwok() {
  LDX="-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" go_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok kwok --version
  # kwok's own stage files (shipped in its module), next to the binary: the test bed passes them
  # with -c. Nodes: initialize + heartbeat with lease; pods: ready, complete (Job pods), delete.
  local src; src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  [ -d "$src" ] || (cd "$cache/src/kwok-$KWOK_VERSION" && go mod download sigs.k8s.io/kwok)
  local st=$cache/kwok-$KWOK_VERSION/stages
  mkdir -p "$st"
  cp "$src/node/fast/node-initialize.yaml" "$src/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
    "$src/pod/fast/pod-ready.yaml" "$src/pod/fast/pod-complete.yaml" "$src/pod/fast/pod-delete.yaml" "$st/"
  chmod 0644 "$st"/*.yaml
}
build_helm() { LDX="-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" go_tool helm "$HELM_VERSION" helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm helm version --short; }
# containerd with its client (ctr, for image import) and the runc shim the CRI plugin starts; one
# wrapper module, all three stamped with the pinned version (unstamped they report "+unknown").
build_containerd() {
  local v=$CONTAINERD_VERSION mod=github.com/containerd/containerd/v2 bins=(containerd ctr containerd-shim-runc-v2)
  local dir=$cache/containerd-$v
  if all_present "$dir/bin" "${bins[@]}" && reports "${v#v}" "$dir/bin/containerd" --version \
    && reports "${v#v}" "$dir/bin/ctr" --version; then log "containerd $v cached"; return; fi
  log "building containerd $v (containerd, ctr, containerd-shim-runc-v2)"
  local w=$cache/src/containerd-$v
  wrapper "$w" containerd
  (
    cd "$w"
    go mod edit -require="$mod@$v"
    local pkgs=(); for b in "${bins[@]}"; do pkgs+=("$mod/cmd/$b@$v"); done
    quiet go get "${pkgs[@]}"
    mkdir -p "$dir/bin"
    for b in "${bins[@]}"; do
      log "  go build $b"
      go build -ldflags "-s -w -X $mod/version.Version=$v" -o "$dir/bin/$b" "$mod/cmd/$b"
    done
  )
  reports "${v#v}" "$dir/bin/containerd" --version || { log "containerd does not report $v"; exit 1; }
}

# The pod sandbox ("pause") binary from the project's own source (bootstrap/pause), static, for the
# local node's sandbox image. Rebuilt every time: go's build cache makes an unchanged one instant.
build_pause() {
  local src; src=$(cd "$here/../../bootstrap/pause" && pwd)
  mkdir -p "$cache/pause/bin"
  (cd "$src" && go build -ldflags "-s -w" -o "$cache/pause/bin/pause" .)
  log "pause built"
}

# --print-bin NAME: where a stock binary lives (nothing is built).
if [ "${1:-}" = --print-bin ]; then
  case ${2:?name} in
    etcd) echo "$cache/etcd-$ETCD_VERSION/bin/etcd" ;;
    kwok) echo "$cache/kwok-$KWOK_VERSION/bin/kwok" ;;
    helm) echo "$cache/helm-$HELM_VERSION/bin/helm" ;;
    containerd|ctr|containerd-shim-runc-v2) echo "$cache/containerd-$CONTAINERD_VERSION/bin/$2" ;;
    pause) echo "$cache/pause/bin/pause" ;;
    *) echo "$cache/kubernetes-$KUBERNETES_VERSION/bin/$2" ;;
  esac
  exit 0
fi

what=("$@"); [ ${#what[@]} -gt 0 ] || what=(kubernetes etcd kwok helm)
build_node() { build_containerd; build_pause; }
start=$(date +%s)
for c in "${what[@]}"; do "build_$c"; done
log "done in $(( $(date +%s) - start ))s; cache $(du -sh "$cache" 2>/dev/null | cut -f1)"
