#!/usr/bin/env bash
# Installs the Debian packages the local cluster's real node and the image builds need, when
# missing: podman (builds and saves the images), debootstrap (their Debian base), runc (the
# node's OCI runtime), iptables and conntrack (kube-proxy, kubelet and the CNI plugins).
# Everything else is built from pinned Go modules (build-bins.sh). Needs root, as the node does.
set -euo pipefail
packages=(podman debootstrap runc iptables conntrack nfacct)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
