#!/usr/bin/env bash
# podman with the settings the image builds need on the development VMs (see
# ../shared/notes/real-node-facts.md, "Images without a registry"): runc, cgroupfs, and default
# ulimits the VM can grant (it lacks CAP_SYS_RESOURCE, so podman's defaults fail with
# "error setting rlimit type 7"). The settings live in a containers.conf in the cache folder,
# found through CONTAINERS_CONF; nothing under /etc changes. Usage: images/podman.sh ARGS...
set -euo pipefail

cache_dir="${TRAINKUBE_CACHE_DIR:-$HOME/.cache/trainkube}/images"
conf="$cache_dir/containers.conf"
mkdir -p "$cache_dir"

wanted='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"'

# Written only when it differs, through a rename, so concurrent calls never read half a file.
if [[ ! -f $conf || "$(cat "$conf")" != "$wanted" ]]; then
  printf '%s\n' "$wanted" >"$conf.$$"
  mv -f "$conf.$$" "$conf"
fi

export CONTAINERS_CONF="$conf"
exec podman "$@"
