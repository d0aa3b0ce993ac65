#!/usr/bin/env bash
# A throwaway certificate authority and credentials for a one-machine dstrain (docs/security.md,
# "Certificates and tokens"). Creates, under DIR, whatever is missing (nothing is overwritten):
#   ca.pem, ca.key                 the CA (EC P-256, valid 30 days)
#   coordinator.pem, .key          the coordinator's certificate (localhost, 127.0.0.1)
#   worker-ID.pem, .key            one per worker ID given: CN worker:ID, also served on the
#                                  worker's health port (localhost, 127.0.0.1)
#   admin.token                    a bearer token with role admin (0600)
#   tokens                         the coordinator's --tokens file: its SHA-256 hash (0600)
# Keys are unencrypted files readable by their owner only: for a laptop or a test, not for a
# cluster (use your own CA there). DSTRAIN_PKI_SANS adds subject alternative names to the
# certificates made now (comma-separated, e.g. "IP:10.99.0.1,DNS:coordinator.example"), for
# daemons reached at other addresses than loopback.
# Usage: deploy/local/make_pki.sh DIR [WORKER_ID ...]
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 DIR [WORKER_ID ...]" >&2
  exit 2
fi
dir=$1
shift
umask 077
mkdir -p "$dir"
days=30

leaf() {  # stem common-name
  local stem=$1 cn=$2
  [[ -f $dir/$stem.pem ]] && return 0
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/$stem.key" -out "$dir/$stem.csr" -subj "/CN=$cn" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1${DSTRAIN_PKI_SANS:+,$DSTRAIN_PKI_SANS}" \
    > "$dir/$stem.ext"
  openssl x509 -req -in "$dir/$stem.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$dir/$stem.ext" \
    -out "$dir/$stem.pem" 2>/dev/null
  rm -f "$dir/$stem.csr" "$dir/$stem.ext"
}

if [[ ! -f $dir/ca.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$days" -subj "/CN=dstrain local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
fi
leaf coordinator coordinator
for id in "$@"; do
  if [[ ! $id =~ ^[a-z][a-z0-9-]{0,62}$ ]]; then
    echo "$0: worker id '$id' must match [a-z][a-z0-9-]{0,62}" >&2
    exit 2
  fi
  leaf "worker-$id" "worker:$id"
done
if [[ ! -f $dir/admin.token ]]; then
  token="dst_$(openssl rand -hex 32)"
  printf '%s\n' "$token" > "$dir/admin.token"
  printf '%s admin admin\n' "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" >> "$dir/tokens"
fi
