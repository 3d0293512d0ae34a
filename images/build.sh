#!/usr/bin/env bash
# Builds trainkube's images here, with podman and without any registry (`make images`):
#
#   images/build.sh [IMAGE...]      IMAGE: operator, trainer-cpu, trainer-cuda
#
# The images default to $IMAGES, else "operator trainer-cpu" (what the local cluster runs).
# Their Debian base images are made with debootstrap, once, into the cache folder
# CACHE=${TRAINKUBE_CACHE_DIR:-~/.cache/trainkube}/images, and imported into podman. torch
# comes from $TORCH_INDEX_URL (PyPI's by default: its Linux torch is the CUDA build), through
# a local mirror downloaded once. Each image is tagged with the name the operator uses
# (ghcr.io/trainkube/...:VERSION, VERSION from pyproject.toml) and saved as a docker-archive,
# CACHE/NAME.tar, for `ctr -n k8s.io images import` or `kind load image-archive`; an archive
# is written again only when its image changed. Progress goes to stderr; stdout gets the
# archive paths, one per line, and nothing else.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="${TRAINKUBE_CACHE_DIR:-$HOME/.cache/trainkube}/images"
podman="$repo/images/podman.sh"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml" | head -n 1)
torch_index=${TORCH_INDEX_URL:-https://pypi.org/simple}
read -r -a images <<<"${*:-${IMAGES:-operator trainer-cpu}}"

# The Debian bases: the runtime gets Python and CA certificates; the builder also compilers
# and Python's headers. A change to a list (or to BASE_RECIPE, for a change to how the rootfs
# is made) makes that base again.
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
runtime_packages=(python3 libpython3.11-stdlib ca-certificates)
builder_packages=("${runtime_packages[@]}" python3-dev python3-venv g++)
BASE_RECIPE=2

log() { echo "images/build.sh: $*" >&2; }

# base_image NAME PACKAGE...: prints the local image of that Debian base, made when missing.
base_image() {
  local name=$1
  shift
  local key image rootfs tarball
  key=$(printf '%s\n' "$suite" "$BASE_RECIPE" "$@" | sha256sum | cut -c1-12)
  image="localhost/trainkube/debian-$name:$key"
  tarball="$cache/base/$name-$key.tar"
  if "$podman" image exists "$image"; then
    echo "$image"
    return
  fi
  mkdir -p "$cache/base" "$cache/debs"
  if [[ ! -f $tarball ]]; then
    log "making the $name base ($suite: $*) with debootstrap"
    rootfs="$cache/base/$name-$key.rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" \
      --cache-dir="$cache/debs" "$suite" "$rootfs" "$mirror" >&2
    # What an image needs no copy of: apt's lists and downloads, documentation (but the
    # copyright files), translated messages, and the host's resolver and name, which a
    # container gets at run time.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
      "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/man/* \
      "$rootfs"/usr/share/info/* "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
      -exec rm -rf {} +
    find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
    find "$rootfs/usr/share/doc" -depth -type d -empty -delete
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
    # Earlier bases of this name: their lists are gone.
    find "$cache/base" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$key.tar" -delete
  fi
  log "importing $tarball as $image"
  "$podman" import --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $suite: $*" "$tarball" "$image" >&2
  # An earlier base of this name loses its tag (the final prune removes it once unused).
  "$podman" images --format '{{.Repository}}:{{.Tag}}' "localhost/trainkube/debian-$name" |
    grep -vxF "$image" | xargs -r "$podman" untag >&2
  echo "$image"
}

# pip inside the builds trusts what pip here trusts (a network may intercept TLS with a CA of
# its own): a pip.conf and that CA bundle, mounted for the build only, like pip's cache
# (CACHE/pip). A proxy may strip the headers pip's HTTP cache needs, so torch and its CUDA
# libraries (gigabytes) are downloaded once into a wheelhouse (CACHE/wheelhouse) that is also
# a package index of its own, file://.../simple, the trainer builds' TORCH_INDEX_URL.
ca_bundle=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
mkdir -p "$cache/pip" "$cache/wheelhouse" "$cache/pip-config"
cp "$ca_bundle" "$cache/pip-config/ca.crt"
printf '%s\n' '[global]' 'cert = /root/.config/pip/ca.crt' >"$cache/pip-config/pip.conf"
mounts=(
  --volume "$cache/pip-config:/root/.config/pip:ro"
  --volume "$cache/pip:/root/.cache/pip"
  --volume "$cache/wheelhouse:/root/.cache/wheelhouse:ro"
)
wheelhouse_index=file:///root/.cache/wheelhouse/simple

# prefetch_torch BUILDER_IMAGE: downloads the pinned torch and what it needs into the
# wheelhouse and writes its index (PEP 503: simple/PROJECT/index.html), once per pin and
# index URL (.stamp says which; the wheels of other pins are dropped).
prefetch_torch() {
  local builder=$1 stamp wheel file project
  local wheelhouse=$cache/wheelhouse
  python3 "$repo/images/requirements.py" "$repo/pyproject.toml" "$cache/pins"
  stamp=$(printf '%s\n' "$(cat "$cache/pins/torch.txt")" "$torch_index" | sha256sum | cut -c1-12)
  if [[ -f $wheelhouse/.stamp && "$(cat "$wheelhouse/.stamp")" == "$stamp" ]]; then
    return
  fi
  if [[ -f $wheelhouse/.stamp ]]; then
    find "$wheelhouse" -mindepth 1 -delete
  fi
  log "downloading $(cat "$cache/pins/torch.txt") from $torch_index into $wheelhouse"
  # shellcheck disable=SC2016 # $1 is the container's shell's: the index URL passed after it
  "$podman" run --rm --network host --volume "$cache/pip-config:/root/.config/pip:ro" \
    --volume "$wheelhouse:/wheelhouse" --volume "$cache/pins:/pins:ro" "$builder" \
    sh -c 'python3 -m venv /tmp/venv && /tmp/venv/bin/pip download --quiet \
      --dest /wheelhouse --index-url "$1" -r /pins/torch.txt' sh "$torch_index" >&2
  rm -rf "$wheelhouse/simple"
  for wheel in "$wheelhouse"/*.whl; do
    file=${wheel##*/}
    project=$(tr 'A-Z_.' 'a-z--' <<<"${file%%-*}")
    mkdir -p "$wheelhouse/simple/$project"
    printf '<a href="../../%s">%s</a>\n' "$file" "$file" >>"$wheelhouse/simple/$project/index.html"
  done
  echo "$stamp" >"$wheelhouse/.stamp"
}

# build NAME TAG CONTAINERFILE [BUILD-ARG...]: builds one image. Its builder stage `project`
# gets a tag of its own first, so that pruning dangling images never drops the layers the next
# build reuses. A Containerfile whose last stage is `FROM runtime-deps` (the trainer) has that
# stage built as an image of its own, again only when its inputs changed (the dependency
# stage, the runtime base, the build arguments or the Containerfile: CACHE/NAME.deps records
# them), and the last stage is built from a copy of the Containerfile that starts from that
# image: a code change then costs seconds instead of a 40 s check of the venv's COPY.
build() {
  local name=$1 tag=$2 file=$3
  shift 3
  local flags=(--network host --layers "${mounts[@]}")
  for arg in "$@"; do flags+=(--build-arg "$arg"); done
  log "building $tag ($file)"
  "$podman" build "${flags[@]}" --file "$repo/$file" --target project \
    --tag "localhost/trainkube/cache/$name-project:latest" "$repo" >&2
  if ! grep -qx 'FROM runtime-deps' "$repo/$file"; then
    "$podman" build "${flags[@]}" --file "$repo/$file" --tag "$tag" "$repo" >&2
    return
  fi
  local deps runtime="localhost/trainkube/cache/$name-runtime:latest"
  "$podman" build "${flags[@]}" --file "$repo/$file" --target deps \
    --tag "localhost/trainkube/cache/$name-deps:latest" "$repo" >&2
  deps=$({
    "$podman" image inspect --format '{{.Id}}' "localhost/trainkube/cache/$name-deps:latest" \
      "$runtime_base"
    printf '%s\n' "$@"
    cat "$repo/$file"
  } | sha256sum | cut -c1-64)
  if ! "$podman" image exists "$runtime" || [[ "$(cat "$cache/$name.deps" 2>/dev/null)" != "$deps" ]]; then
    log "building the runtime with the dependencies, $runtime"
    rm -f "$cache/$name.deps"
    "$podman" build "${flags[@]}" --file "$repo/$file" --target runtime-deps --tag "$runtime" \
      "$repo" >&2
    echo "$deps" >"$cache/$name.deps"
  fi
  sed "s|^FROM runtime-deps\$|FROM $runtime|" "$repo/$file" >"$cache/$name.Containerfile"
  "$podman" build "${flags[@]}" --file "$cache/$name.Containerfile" --tag "$tag" "$repo" >&2
}

# save NAME TAG: writes the image's archive when its image ID changed; prints the path.
save() {
  local name=$1 tag=$2 id archive
  id=$("$podman" image inspect --format '{{.Id}}' "$tag")
  archive="$cache/$name.tar"
  if [[ -f $archive && "$(cat "$archive.id" 2>/dev/null)" == "$id" ]]; then
    log "$archive is up to date ($tag)"
  else
    log "saving $tag to $archive"
    local start=$SECONDS
    rm -f "$archive.id"
    "$podman" save --format docker-archive --output "$archive.partial" "$tag" >&2
    mv "$archive.partial" "$archive"
    echo "$id" >"$archive.id"
    log "saved $archive in $((SECONDS - start)) s"
  fi
  echo "$archive"
}

for name in "${images[@]}"; do
  case $name in
    operator | trainer-cpu | trainer-cuda) ;;
    *)
      log "unknown image '$name' (operator, trainer-cpu, trainer-cuda)"
      exit 2
      ;;
  esac
done

bash "$repo/tests/localcluster/host-packages.sh"
runtime_base=$(base_image runtime "${runtime_packages[@]}")
builder_base=$(base_image builder "${builder_packages[@]}")
case " ${images[*]} " in
  *" trainer-"*) prefetch_torch "$builder_base" ;;
esac
common=("BASE_IMAGE=$runtime_base" "BUILDER_IMAGE=$builder_base" "VERSION=$version")

archives=()
for name in "${images[@]}"; do
  start=$SECONDS
  case $name in
    operator)
      tag=ghcr.io/trainkube/operator:$version
      build "$name" "$tag" images/operator.Containerfile "${common[@]}"
      ;;
    trainer-cpu)
      tag=ghcr.io/trainkube/trainer-cpu:$version
      build "$name" "$tag" images/trainer.Containerfile "${common[@]}" \
        ACCELERATOR=cpu "TORCH_INDEX_URL=$wheelhouse_index"
      ;;
    trainer-cuda)
      tag=ghcr.io/trainkube/trainer:$version
      build "$name" "$tag" images/trainer.Containerfile "${common[@]}" \
        ACCELERATOR=cuda "TORCH_INDEX_URL=$wheelhouse_index"
      ;;
  esac
  log "built $tag in $((SECONDS - start)) s"
  archives+=("$(save "$name" "$tag")")
done

# Intermediate images of earlier builds (the dependency stages keep their tags).
"$podman" image prune --force >/dev/null
printf '%s\n' "${archives[@]}"
