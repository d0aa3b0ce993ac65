#!/usr/bin/env bash
# Runs k8s_manifests_test.py (its docstring says what it checks) with Debian's python3 and
# python3-yaml; the tools it needs come from tools/install_deploy_tools.sh.
set -euo pipefail
exec /usr/bin/python3 "$TEST_SRCDIR/$TEST_WORKSPACE/tests/deploy/k8s_manifests_test.py" -v
