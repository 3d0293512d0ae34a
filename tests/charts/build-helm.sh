#!/usr/bin/env bash
# Builds helm from the pinned Go module in tests/localcluster/go/helm (the way build-bins.sh
# builds the local cluster's binaries), into a cache outside the repository keyed by what pins
# it: go.mod, go.sum and the ldflags. Rebuilt only when those change. Prints the binary's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$here/../localcluster/go/helm"
cache="${TRAINKUBE_CACHE_DIR:-$HOME/.cache/trainkube}"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath" GOTOOLCHAIN=local
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"

mod_version() { awk -v m="$1" '$1 == m {print $2}' "$dir/go.mod"; }
helm_version="$(mod_version helm.sh/helm/v3)"
kube_minor="$(mod_version k8s.io/client-go | cut -d. -f2)"  # client-go v0.N is Kubernetes 1.N

# As helm's own Makefile sets them: the version `helm version` prints, and the Kubernetes
# version `helm template` and `helm lint` assume (.Capabilities.KubeVersion) without a cluster.
ldflags="-X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitCommit=module-$helm_version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
done

stamp="$( (cd "$dir" && cat go.mod go.sum; echo "$ldflags") | sha256sum | cut -c1-16)"
out="$cache/bin/helm-$stamp"
if [[ -f "$out/.complete" ]]; then echo "$out/helm"; exit 0; fi
mkdir -p "$cache/bin"
# Binaries of an older pin are no longer referenced: drop them.
find "$cache/bin" -maxdepth 1 -name "helm-*" ! -path "$out" -exec rm -rf {} + 2>/dev/null || true
rm -rf "$out" && mkdir -p "$out"
start=$SECONDS
echo "building helm $helm_version..." >&2
(cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$out/helm" helm.sh/helm/v3/cmd/helm)
echo "built helm in $((SECONDS - start)) s" >&2
touch "$out/.complete"
echo "$out/helm"
