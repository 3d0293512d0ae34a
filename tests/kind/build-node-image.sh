#!/usr/bin/env bash
# Builds a kind node image here, with podman and without any registry, for the podman provider
# on machines where kind's published image cannot be pulled (tests/kind/README.md):
#
#   - a Debian (bookworm) rootfs with systemd and what kind's base image installs, made with
#     debootstrap and imported into podman (cached by its package list);
#   - kind v0.33's base-image files (entrypoint, systemd units, containerd and kubelet
#     settings), taken from the pinned kind module, with three changes this VM needs (no
#     CAP_SYS_RESOURCE): containerd.service sets no OOMScoreAdjust and raises no rlimits, and
#     containerd's CRI plugin keeps out of oom_score_adj (restrict_oom_score_adj);
#   - Kubernetes v1.36.3 (kubelet, kubectl from tests/localcluster/go/kube; kubeadm from
#     tests/kind/go/kubeadm), containerd v2.4.2 with its shim and ctr, the CNI plugins, runc
#     from Debian;
#   - the control plane's images, built here from the same binaries (kube-apiserver,
#     kube-controller-manager, kube-scheduler, kube-proxy, etcd, CoreDNS, the sandbox program)
#     under the names kubeadm uses, preloaded into the node's containerd.
#
# The image is tagged localhost/trainkube/kind-node:KUBE_VERSION-KEY, KEY a hash of every input,
# and built only when no image of that tag exists (older ones are removed). Its labels name the
# etcd and CoreDNS tags, which a cluster's kubeadm configuration must ask for. Progress goes to
# stderr; stdout gets the image's name and nothing else.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache="${TRAINKUBE_CACHE_DIR:-$HOME/.cache/trainkube}/kind"
podman="$repo/images/podman.sh"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
log() { echo "tests/kind/build-node-image.sh: $*" >&2; }
mkdir -p "$cache"

bins=$(bash "$repo/tests/localcluster/build-bins.sh")
kind_bins=$(bash "$repo/tests/kind/build-bins.sh")
mod_version() { # DIR MODULE: the version DIR/go.mod requires
  awk -v m="$2" '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "$1/go.mod"
}
kube_version=$(mod_version "$repo/tests/kind/go/kubeadm" k8s.io/kubernetes)
etcd_tag=$(mod_version "$repo/tests/localcluster/go/etcd" go.etcd.io/etcd/server/v3)
coredns_tag=$(mod_version "$repo/tests/localcluster/go/coredns" github.com/coredns/coredns)
kind_src=$(cd "$repo/tests/kind/go/kind" && GOFLAGS=-mod=readonly go mod download -json sigs.k8s.io/kind |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
base_files="$kind_src/images/base/files"

# rootfs NAME PACKAGE...: prints a podman image of a debootstrap minbase rootfs with PACKAGES,
# made once (its tarball is kept in the cache, keyed by the package list).
rootfs() {
  local name=$1 key image tarball dir
  shift
  key=$(printf '%s\n' "$suite" 1 "$@" | sha256sum | cut -c1-12)
  image="localhost/trainkube/kind-$name:$key"
  tarball="$cache/$name-$key.tar"
  if "$podman" image exists "$image"; then echo "$image"; return; fi
  if [[ ! -f $tarball ]]; then
    log "making the $name rootfs with debootstrap ($*)"
    dir="$cache/$name-$key.rootfs"
    rm -rf "$dir"
    mkdir -p "$cache/../images/debs"
    debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" \
      --cache-dir="$(cd "$cache/../images/debs" && pwd)" "$suite" "$dir" "$mirror" >&2
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/usr/share/man/* \
      "$dir"/usr/share/info/* "$dir"/etc/resolv.conf "$dir"/etc/hostname
    find "$dir/usr/share/doc" -type f ! -name copyright -delete
    tar --numeric-owner -C "$dir" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$dir"
    find "$cache" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$key.tar" -delete
  fi
  "$podman" import --message "debootstrap --variant=minbase $suite: $*" "$tarball" "$image" >&2
  "$podman" images --format '{{.Repository}}:{{.Tag}}' "localhost/trainkube/kind-$name" |
    grep -vxF "$image" | xargs -r "$podman" rmi >&2 || true
  echo "$image"
}

# What kind's base image installs (images/base/Dockerfile), less the storage tools (NFS, iSCSI,
# e2fsprogs) and curl, plus Debian's runc (the one that works here; see real-node-facts.md).
node_rootfs=$(rootfs node-rootfs systemd conntrack iptables nftables iproute2 ethtool \
  util-linux mount kmod libseccomp2 pigz fuse-overlayfs bash ca-certificates jq procps runc)
# kube-proxy (iptables mode) runs iptables-restore and conntrack.
proxy_rootfs=$(rootfs kube-proxy-rootfs iptables conntrack)

# The key: every input of the image.
key=$( {
  echo "$node_rootfs $proxy_rootfs $kube_version $etcd_tag $coredns_tag"
  readlink -f "$bins"/* "$bins"/cni/* "$kind_bins"/kubeadm
  cat "${BASH_SOURCE[0]}"
  find "$base_files" -type f -print0 | sort -z | xargs -0 cat
} | sha256sum | cut -c1-12)
node_image="localhost/trainkube/kind-node:$kube_version-$key"
if "$podman" image exists "$node_image"; then
  log "$node_image is up to date"
  echo "$node_image"
  exit 0
fi
start=$SECONDS
work="$cache/build"
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

# component IMAGE BASE BINARY [ENTRYPOINT]: a control-plane image with one binary in
# /usr/local/bin (kubeadm's static pods name the command; CoreDNS and the sandbox use the
# entrypoint).
component() {
  local image=$1 base=$2 binary=$3 entrypoint=${4:-} ctx
  ctx="$work/$(basename "$binary")"
  mkdir -p "$ctx"
  cp -L "$binary" "$ctx/"
  {
    echo "FROM $base"
    echo "COPY $(basename "$binary") /usr/local/bin/"
    echo "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    echo "LABEL org.opencontainers.image.description=\"built by trainkube tests/kind from its pinned Go module\""
    if [[ -n $entrypoint ]]; then echo "ENTRYPOINT [\"/usr/local/bin/$(basename "$binary")\"]"; fi
  } >"$ctx/Containerfile"
  "$podman" build --quiet --tag "$image" "$ctx" >/dev/null
  echo "$image"
}
log "building the control plane's images"
pause_image=localhost/trainkube/kind-pause:$key
images=(
  "$(component "registry.k8s.io/kube-apiserver:$kube_version" scratch "$bins/kube-apiserver")"
  "$(component "registry.k8s.io/kube-controller-manager:$kube_version" scratch "$bins/kube-controller-manager")"
  "$(component "registry.k8s.io/kube-scheduler:$kube_version" scratch "$bins/kube-scheduler")"
  "$(component "registry.k8s.io/kube-proxy:$kube_version" "$proxy_rootfs" "$bins/kube-proxy")"
  "$(component "registry.k8s.io/etcd:$etcd_tag" scratch "$bins/etcd")"
  "$(component "registry.k8s.io/coredns/coredns:$coredns_tag" scratch "$bins/coredns" entrypoint)"
  "$(component "$pause_image" scratch "$bins/pause" entrypoint)"
)
mkdir -p "$work/preload"
"$podman" save --quiet --multi-image-archive --format docker-archive \
  --output "$work/preload/images.tar" "${images[@]}"
"$podman" rmi "${images[@]}" >/dev/null

log "assembling the node's files"
ctx="$work/node"
mkdir -p "$ctx/files/usr/bin" "$ctx/files/usr/local/bin" "$ctx/files/opt/cni/bin" \
  "$ctx/files/kind/bin" "$ctx/files/etc/containerd" "$ctx/files/etc/systemd/system/kubelet.service.d"
# kind's files as its base image installs them (entrypoint, units, settings, helper scripts).
cp "$base_files/usr/local/bin/entrypoint" "$ctx/files/usr/local/bin/"
cp "$base_files"/kind/bin/*.sh "$ctx/files/kind/bin/"
cp -r "$base_files/etc/sysctl.d" "$base_files/etc/default" "$base_files/etc/crictl.yaml" "$ctx/files/etc/"
for unit in kubelet.slice kubelet.service undo-mount-hacks.service containerd.service; do
  cp "$base_files/etc/systemd/system/$unit" "$ctx/files/etc/systemd/system/"
done
cp "$base_files"/etc/systemd/system/kubelet.service.d/*.conf "$ctx/files/etc/systemd/system/kubelet.service.d/"
# No CAP_SYS_RESOURCE here: no oom_score_adj below 0, no rlimits above the hard limit.
sed -i -e '/^OOMScoreAdjust=/d' -e '/^LimitNOFILE=/d' -e '/^LimitNPROC=/d' \
  "$ctx/files/etc/systemd/system/containerd.service"
sed -e "s|^\( *sandbox_image = \).*|\1\"$pause_image\"|" \
  -e 's|restrict_oom_score_adj = false|restrict_oom_score_adj = true|' \
  "$base_files/etc/containerd/config.toml" >"$ctx/files/etc/containerd/config.toml"
grep -q "sandbox_image = \"$pause_image\"" "$ctx/files/etc/containerd/config.toml"
grep -q 'restrict_oom_score_adj = true' "$ctx/files/etc/containerd/config.toml"
# containerd's default OCI spec, less its rlimits, with kind's hook that gives each container
# the node's product files (as kind's base image makes it with `ctr oci spec` and jq).
"$bins/ctr" oci spec | python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec["process"].pop("rlimits", None)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
    {"path": "/kind/bin/mount-product-files.sh"})
json.dump(spec, sys.stdout, indent=2)' >"$ctx/files/etc/containerd/cri-base.json"
for b in kubelet kubectl; do cp -L "$bins/$b" "$ctx/files/usr/bin/"; done
cp -L "$kind_bins/kubeadm" "$ctx/files/usr/bin/"
for b in containerd containerd-shim-runc-v2 ctr; do cp -L "$bins/$b" "$ctx/files/usr/local/bin/"; done
cp -L "$bins"/cni/* "$ctx/files/opt/cni/bin/"
echo "$kube_version" >"$ctx/files/kind/version"

# The rootfs as kind's Dockerfile leaves it: systemd as init with only the units a node needs,
# then the control plane's images imported (not unpacked, pinned) into containerd's store.
cat >"$ctx/Containerfile" <<EOF
FROM $node_rootfs
COPY files/ /
RUN chmod 0755 /usr/local/bin/entrypoint /kind/bin/*.sh \\
 && rm -f /lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service \\
          /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
 && echo "ReadKMsg=no" >>/etc/systemd/journald.conf \\
 && ln -sf /usr/lib/systemd/systemd /sbin/init \\
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
 && systemctl mask systemd-binfmt.service \\
 && mkdir -p /etc/kubernetes/manifests
RUN (containerd >/tmp/containerd.log 2>&1 &) \\
 && for i in \$(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done \\
 && ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \\
      --all-platforms --no-unpack --digests /preload/images.tar \\
 && ctr --namespace=k8s.io images list -q \\
 && pkill containerd && sleep 1 && rm -rf /tmp/containerd.log /run/containerd /run/nri
ENV container=docker
STOPSIGNAL SIGRTMIN+3
LABEL io.trainkube.kind.etcd-tag="$etcd_tag" io.trainkube.kind.coredns-tag="$coredns_tag" \\
      io.trainkube.kind.kubernetes-version="$kube_version"
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
EOF
log "building $node_image"
"$podman" build --volume "$work/preload:/preload:ro" --tag "$node_image" "$ctx" >&2
"$podman" images --format '{{.Repository}}:{{.Tag}}' localhost/trainkube/kind-node |
  grep -vxF "$node_image" | xargs -r "$podman" rmi >&2 || true
"$podman" image prune --force >/dev/null
log "built $node_image in $((SECONDS - start)) s ($("$podman" image inspect --format '{{.Size}}' "$node_image") bytes)"
echo "$node_image"
