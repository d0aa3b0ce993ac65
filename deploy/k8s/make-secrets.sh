#!/usr/bin/env bash
# The Secrets deploy/k8s's manifests mount, as one YAML file to `kubectl apply -f` (nothing is
# sent to a cluster here; no key or token is ever written into the repository's tracked files).
#
# Usage: deploy/k8s/make-secrets.sh [--namespace NS] [--workers N] [--worker-set NAME]
#                                   [--pki DIR] [--out FILE]
#   --namespace NS     where dstrain runs (default dstrain, as base/kustomization.yaml says)
#   --workers N        worker certificates for pods NAME-0 .. NAME-(N-1) (default 2: the
#                      overlays' replicas); issue as many as the StatefulSet may scale to
#   --worker-set NAME  the worker StatefulSet's name (default dstrain-worker)
#   --pki DIR          the certificates and tokens (default out/k8s/pki); kept, reused, and
#                      never overwritten, so running again with more --workers adds certificates
#   --out FILE         the YAML (default out/k8s/secrets.yaml, mode 0600)
#
# What it makes in DIR (deploy/local/make_pki.sh makes the CA, the worker certificates and the
# admin token; this script adds the two things a cluster needs beyond a laptop):
#   ca.pem, ca.key                   a throwaway CA (30 days; put your own CA's files here first
#                                    to use it: existing files are used as they are)
#   coordinator-k8s.pem, .key        the coordinator's certificate for the names clients dial: the
#                                    Service dstrain-coordinator (short, .NS, .NS.svc,
#                                    .NS.svc.cluster.local), and localhost / 127.0.0.1 for the
#                                    health probe and `kubectl port-forward`
#   worker-NAME-i.pem, .key          common name worker:NAME-i, the pod's name (= its worker id);
#                                    also names 127.0.0.1, which the health probe dials
#   admin.token                      an admin bearer token, for you (port-forward, README)
#   cli.token                        a viewer,submitter token (principal k8s-cli) for the
#                                    dstrain-cli pod
#   tokens                           the coordinator's --tokens file: both tokens' SHA-256 hashes
#
# and the Secrets (each labelled app.kubernetes.io/name: dstrain), with the keys the manifests
# read:
#   dstrain-ca               ca.pem                      coordinator, workers, CLI pod
#   dstrain-coordinator-tls  tls.crt, tls.key (type kubernetes.io/tls)        coordinator
#   dstrain-worker-tls       worker-NAME-i.pem, worker-NAME-i.key for each i  workers
#   dstrain-tokens           tokens                      coordinator
#   dstrain-cli-token        token                       CLI pod
# preceded by the Namespace itself, so one `kubectl apply -f FILE` prepares an empty cluster.
#
# Needs openssl and kubectl (`kubectl create ... --dry-run=client -o yaml` only renders).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
make_pki="$here/../local/make_pki.sh"

namespace=dstrain
workers=2
worker_set=dstrain-worker
pki=out/k8s/pki
out=out/k8s/secrets.yaml
usage() {
  sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while (($#)); do
  case $1 in
    --namespace) namespace=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --worker-set) worker_set=${2:?}; shift 2 ;;
    --pki) pki=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "make-secrets.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
if [[ ! $namespace =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
  echo "make-secrets.sh: --namespace '$namespace' is not a Kubernetes namespace name" >&2
  exit 2
fi
if [[ ! $workers =~ ^[0-9]+$ ]] || ((workers < 1 || workers > 1000)); then
  echo "make-secrets.sh: --workers must be 1 to 1000, got '$workers'" >&2
  exit 2
fi
# Worker ids are [a-z][a-z0-9-]{0,62} (docs/security.md); the pod names must be ids.
if [[ ! $worker_set-$((workers - 1)) =~ ^[a-z][a-z0-9-]{0,62}$ ]]; then
  echo "make-secrets.sh: pod names $worker_set-N are not valid worker ids" >&2
  exit 2
fi
for tool in openssl kubectl; do
  command -v "$tool" > /dev/null || { echo "make-secrets.sh: $tool is required" >&2; exit 1; }
done

umask 077
ids=()
for ((i = 0; i < workers; i++)); do ids+=("$worker_set-$i"); done
"$make_pki" "$pki" "${ids[@]}"

# The coordinator's certificate for the cluster (make_pki.sh's coordinator.pem names only
# localhost and 127.0.0.1, which the workers do not dial).
service=dstrain-coordinator
if [[ ! -f $pki/coordinator-k8s.pem ]]; then
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$pki/coordinator-k8s.key" -out "$pki/coordinator-k8s.csr" \
    -subj "/CN=$service.$namespace.svc" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local,DNS:localhost,IP:127.0.0.1" \
    > "$pki/coordinator-k8s.ext"
  openssl x509 -req -in "$pki/coordinator-k8s.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -extfile "$pki/coordinator-k8s.ext" \
    -out "$pki/coordinator-k8s.pem" 2>/dev/null
  rm -f "$pki/coordinator-k8s.csr" "$pki/coordinator-k8s.ext"
fi
if ! openssl x509 -in "$pki/coordinator-k8s.pem" -noout -ext subjectAltName 2>/dev/null |
    grep -q "DNS:$service.$namespace.svc"; then
  echo "make-secrets.sh: $pki/coordinator-k8s.pem does not name $service.$namespace.svc;" \
    "move it away to issue a new one" >&2
  exit 1
fi

# The CLI pod's token: viewer and submitter, not admin.
if [[ ! -f $pki/cli.token ]]; then
  token="dst_$(openssl rand -hex 32)"
  printf '%s\n' "$token" > "$pki/cli.token"
  printf '%s k8s-cli viewer,submitter\n' "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" \
    >> "$pki/tokens"
fi

worker_files=()
for id in "${ids[@]}"; do
  worker_files+=("--from-file=worker-$id.pem=$pki/worker-$id.pem"
    "--from-file=worker-$id.key=$pki/worker-$id.key")
done
render() {  # kubectl create ... arguments: one object as YAML, labelled
  kubectl create "$@" --namespace "$namespace" --dry-run=client -o yaml |
    kubectl label --local -f - -o yaml app.kubernetes.io/name=dstrain \
      app.kubernetes.io/part-of=dstrain
}
mkdir -p "$(dirname "$out")"
{
  kubectl create namespace "$namespace" --dry-run=client -o yaml
  echo "---"
  render secret generic dstrain-ca --from-file=ca.pem="$pki/ca.pem"
  echo "---"
  render secret tls dstrain-coordinator-tls --cert="$pki/coordinator-k8s.pem" \
    --key="$pki/coordinator-k8s.key"
  echo "---"
  render secret generic dstrain-worker-tls "${worker_files[@]}"
  echo "---"
  render secret generic dstrain-tokens --from-file=tokens="$pki/tokens"
  echo "---"
  render secret generic dstrain-cli-token --from-file=token="$pki/cli.token"
} > "$out.tmp"
mv "$out.tmp" "$out"
cat >&2 << EOF
make-secrets.sh: wrote $out (namespace $namespace, worker certificates for ${ids[0]} .. ${ids[-1]}).
  kubectl apply -f $out
  kubectl apply -k deploy/k8s/overlays/cpu
It holds private keys and tokens: keep it out of version control. Your admin token: $pki/admin.token
EOF
