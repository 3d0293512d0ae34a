#!/usr/bin/env bash
# Builds what a kind cluster needs beyond the local cluster's binaries, from pinned Go modules in
# tests/kind/go (as tests/localcluster/build-bins.sh builds those): kind itself, and kubeadm
# (the node image's kubelet and kubectl come from tests/localcluster/go/kube, same version).
# Cached outside the repository, keyed by go.mod, go.sum and the ldflags; rebuilt only when
# those change. Prints the folder that holds `kind` and `kubeadm`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TRAINKUBE_CACHE_DIR:-$HOME/.cache/trainkube}"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath" GOTOOLCHAIN=local
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"

# The version go.mod pins for module $2 of go/$1 (`require M V` or a line of a require block).
mod_version() {
  awk -v m="$2" '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "$here/go/$1/go.mod"
}

# build NAME PACKAGE: one binary of the module go/NAME, with $ldflags; prints its folder.
build() {
  local name=$1 pkg=$2 dir="$here/go/$1" stamp out start=$SECONDS
  stamp="$( (cd "$dir" && cat go.mod go.sum; echo "$ldflags") | sha256sum | cut -c1-16)"
  out="$cache/bin/kind-$name-$stamp"
  if [[ ! -f "$out/.complete" ]]; then
    mkdir -p "$cache/bin"
    find "$cache/bin" -maxdepth 1 -name "kind-$name-*" ! -path "$out" -exec rm -rf {} + 2>/dev/null || true
    rm -rf "$out" && mkdir -p "$out"
    echo "building $name..." >&2
    (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$out/$name" "$pkg")
    echo "built $name in $((SECONDS - start)) s" >&2
    touch "$out/.complete"
  fi
  echo "$out"
}

ldflags=""
kind_dir="$(build kind sigs.k8s.io/kind)"

# The same version stamps as the local cluster's Kubernetes binaries: kubeadm compares its
# version with the kubelet's and the control plane's.
kube_version="$(mod_version kubeadm k8s.io/kubernetes)"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
ldflags=""
for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=$kube_minor"
  ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=2026-01-01T00:00:00Z"
  ldflags+=" -X $v.gitCommit=module-$kube_version"
done
kubeadm_dir="$(build kubeadm k8s.io/kubernetes/cmd/kubeadm)"

bin="$cache/bin/kind-current"
mkdir -p "$bin"
ln -sfn "$kind_dir/kind" "$bin/kind"
ln -sfn "$kubeadm_dir/kubeadm" "$bin/kubeadm"
echo "$bin"
