#!/usr/bin/env bash
# Prints alerts.yaml with your scrape job names in place of the defaults, dstrain-coordinator
# and dstrain-worker (the rules name them only in `up{job="..."}` selectors; README.md, "Scrape
# job names").
# Usage: deploy/prometheus/render.sh COORDINATOR_JOB WORKER_JOB [RULE_FILE] > my-alerts.yaml
#   e.g. with the Prometheus Operator monitors of deploy/k8s (the ServiceMonitor's job is the
#   Service's name, the PodMonitor's NAMESPACE/NAME):
#   deploy/prometheus/render.sh dstrain-coordinator-metrics dstrain/dstrain-worker > alerts.yaml
set -euo pipefail
if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 COORDINATOR_JOB WORKER_JOB [RULE_FILE]" >&2
  exit 2
fi
coordinator=$1 worker=$2
file=${3:-$(dirname "$0")/alerts.yaml}
for name in "$coordinator" "$worker"; do
  # Kept out: what would need escaping in a PromQL string or a sed replacement.
  if [[ -z $name || $name =~ [\"\\\&\|$'\n'] ]]; then
    echo "$0: job name '$name': must be non-empty, without \" \\ & | or newlines" >&2
    exit 2
  fi
done
sed -e "s|job=\"dstrain-coordinator\"|job=\"$coordinator\"|g" \
  -e "s|job=\"dstrain-worker\"|job=\"$worker\"|g" "$file"
