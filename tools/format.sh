#!/usr/bin/env bash
# Formats every C++ and CUDA source in the tree with clang-format (.clang-format: Google, 100
# columns). `tools/format.sh --check` changes nothing and exits 1 if a file would change.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.h' '*.cc' '*.cu' '*.cuh' \
  | grep -v '^third_party/')
if [[ "${1:-}" == "--check" ]]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then echo "needs formatting: $f"; bad=1; fi
  done
  exit $bad
fi
clang-format --style=file -i "${files[@]}"
