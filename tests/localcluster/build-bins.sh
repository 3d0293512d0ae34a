#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the pinned Go modules in go/, into a cache outside the
# repository. Each module is rebuilt only when its go.mod/go.sum/sources change.
# Prints the directory that holds the binaries.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TRAINKUBE_CACHE_DIR:-$HOME/.cache/trainkube}"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath" GOTOOLCHAIN=local

kube_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go/kube/go.mod")"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
build_date="2026-01-01T00:00:00Z"

# A module's binaries are keyed by what pins them: go.mod, go.sum, its sources and the ldflags.
stamp_of() { (cd "$1" && cat go.mod go.sum ./*.go 2>/dev/null; echo "$ldflags") | sha256sum | cut -c1-16; }

build_module() { # name, output names... ; uses ldflags from $ldflags
  local name="$1"; shift
  local dir="$here/go/$name" stamp out
  stamp="$(stamp_of "$dir")"
  out="$cache/bin/$name-$stamp"
  # Binaries of an older pin are no longer referenced: drop them.
  find "$cache/bin" -maxdepth 1 -name "$name-*" ! -path "$out" -exec rm -rf {} + 2>/dev/null || true
  if [[ -f "$out/.complete" ]]; then echo "$out"; return; fi
  rm -rf "$out" && mkdir -p "$out"
  local pkg start=$SECONDS
  for pkg in "$@"; do
    echo "building $(basename "$pkg") ($name module)..." >&2
    (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$out/$(basename "$pkg")" "$pkg")
  done
  echo "built $name in $((SECONDS - start)) s" >&2
  touch "$out/.complete"
  echo "$out"
}

ldflags=""
etcd_dir="$(build_module etcd trainkube.local/localcluster/etcd)"
ldflags=""
for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=$kube_minor"
  ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=$build_date -X $v.gitCommit=module-$kube_version"
done
kube_dir="$(build_module kube k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)"
ldflags=""
kwok_dir="$(build_module kwok sigs.k8s.io/kwok/cmd/kwok)"

# One directory of links so callers need a single PATH entry.
bin="$cache/bin/current"
mkdir -p "$bin"
ln -sfn "$etcd_dir/etcd" "$bin/etcd"
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do ln -sfn "$kube_dir/$b" "$bin/$b"; done
ln -sfn "$kwok_dir/kwok" "$bin/kwok"
echo "$bin"
