#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, written by `trainkube crds`) into the chart's crds/
# folder, byte for byte, and removes any the generator no longer writes. Run it after
# `trainkube crds`; tests/charts/test_chart.py fails while the two folders differ.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="$root/crds" dst="$root/charts/trainkube/crds"
mkdir -p "$dst"
for f in "$dst"/*.yaml; do
  [[ -e "$f" && ! -e "$src/$(basename "$f")" ]] && rm -v "$f"
done
for f in "$src"/*.yaml; do
  cmp -s "$f" "$dst/$(basename "$f")" || cp -v "$f" "$dst/"
done
