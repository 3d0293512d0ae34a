#!/usr/bin/env bash
# Builds the local cluster's binaries from the pinned Go modules in go/, into a cache outside
# the repository: the control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) and the real CPU node (kubelet, kube-proxy, containerd with its
# runc shim and ctr, the CNI plugins bridge/host-local/loopback/portmap, CoreDNS, the sandbox
# "pause" program and the test image's probe program). Each module is rebuilt only when its
# go.mod/go.sum/sources, build tags or ldflags change. Prints the directory that holds the
# binaries (the CNI plugins are in its cni/ folder).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TRAINKUBE_CACHE_DIR:-$HOME/.cache/trainkube}"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath" GOTOOLCHAIN=local

kube_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go/kube/go.mod")"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
build_date="2026-01-01T00:00:00Z"

# A module's binaries are keyed by what pins them: go.mod, go.sum, its sources and the ldflags.
stamp_of() { (cd "$1" && cat go.mod go.sum ./*.go 2>/dev/null; echo "$ldflags${tags:+ tags=$tags}") | sha256sum | cut -c1-16; }
mod_version() { awk -v m="$2" '$1 == m {print $2}' "$here/go/$1/go.mod"; }

build_module() { # name, packages... ; uses $ldflags and $tags
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
    (cd "$dir" && go build -tags "$tags" -ldflags "-s -w $ldflags" -o "$out/$(basename "$pkg")" "$pkg")
  done
  echo "built $name in $((SECONDS - start)) s" >&2
  touch "$out/.complete"
  echo "$out"
}

tags="" ldflags=""
etcd_dir="$(build_module etcd trainkube.local/localcluster/etcd)"
ldflags=""
for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=$kube_minor"
  ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=$build_date -X $v.gitCommit=module-$kube_version"
done
kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
kube_dir="$(build_module kube "${kube_cmds[@]/#/k8s.io/kubernetes/cmd/}")"
ldflags=""
kwok_dir="$(build_module kwok sigs.k8s.io/kwok/cmd/kwok)"

# The real CPU node. containerd's btrfs snapshotter needs cgo headers: left out (no_btrfs).
tags="no_btrfs"
ctrd=github.com/containerd/containerd/v2
ldflags="-X $ctrd/version.Version=$(mod_version containerd $ctrd) -X $ctrd/version.Package=$ctrd"
containerd_dir="$(build_module containerd $ctrd/cmd/containerd $ctrd/cmd/containerd-shim-runc-v2 $ctrd/cmd/ctr)"
tags=""
cni=github.com/containernetworking/plugins
ldflags="-X $cni/pkg/utils/buildversion.BuildVersion=$(mod_version cni $cni)"
cni_dir="$(build_module cni $cni/plugins/main/bridge $cni/plugins/ipam/host-local \
  $cni/plugins/main/loopback $cni/plugins/meta/portmap)"
ldflags="-X github.com/coredns/coredns/coremain.GitCommit=module-$(mod_version coredns github.com/coredns/coredns)"
coredns_dir="$(build_module coredns github.com/coredns/coredns)"
ldflags=""
pause_dir="$(build_module pause trainkube.local/localcluster/pause)"
probe_dir="$(build_module probe trainkube.local/localcluster/probe)"
# helm, for the chart's tests and installs (its own script: it also sets helm's version ldflags).
helm_binary="$(bash "$here/../charts/build-helm.sh")"

# One directory of links so callers need a single PATH entry.
bin="$cache/bin/current"
mkdir -p "$bin"
ln -sfn "$etcd_dir/etcd" "$bin/etcd"
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do ln -sfn "$kube_dir/$b" "$bin/$b"; done
ln -sfn "$kwok_dir/kwok" "$bin/kwok"
for b in kubelet kube-proxy; do ln -sfn "$kube_dir/$b" "$bin/$b"; done
for b in containerd containerd-shim-runc-v2 ctr; do ln -sfn "$containerd_dir/$b" "$bin/$b"; done
ln -sfn "$coredns_dir/coredns" "$bin/coredns"
ln -sfn "$pause_dir/pause" "$bin/pause"
ln -sfn "$probe_dir/probe" "$bin/probe"
ln -sfn "$helm_binary" "$bin/helm"
# containerd looks its shim up on PATH, and the CNI plugins are one folder of their own.
ln -sfn "$cni_dir" "$bin/cni"
echo "$bin"
