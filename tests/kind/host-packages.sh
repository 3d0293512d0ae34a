#!/usr/bin/env bash
# The Debian packages a kind cluster through podman needs here, when missing: what the local
# cluster and the image builds need (tests/localcluster/host-packages.sh: podman, debootstrap,
# iptables, ...) and podman's dnsname CNI plugin, which lets the nodes resolve each other's
# names (kubeadm join and the kubelets reach the control plane by name).
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/../localcluster/host-packages.sh"
package=golang-github-containernetworking-plugin-dnsname
dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" && exit 0
echo "installing Debian packages: $package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "$package" >&2
