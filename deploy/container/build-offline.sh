#!/usr/bin/env bash
# Builds the dstrain image without a registry, a Dockerfile build or a container daemon: a
# Debian bookworm root file system made by mmdebstrap with runtime-packages.txt, plus the
# binaries of a local bazel-bin, committed as an image by buildah. The same image the
# Containerfile's runtime stage makes (user 10001, /data, tini as the entrypoint).
#
# Usage: deploy/container/build-offline.sh [--bin DIR] [--tag NAME:TAG] [--archive FILE]
#                                          [--no-check] [--no-smoke]
#   --bin DIR       where the binaries are (default bazel-bin), built with --config=nocuda:
#                     bazel build --config=nocuda //coordinator/server:dstrain-coordinator \
#                       //worker/agent:dstrain-worker //client/cli:dstrain \
#                       //deploy/container:dstrain-health-probe
#                   A binary linked against CUDA is refused (a CUDA image: README.md).
#   --tag NAME:TAG  the image (default dstrain:latest, what deploy/k8s's images: names)
#   --archive FILE  also write it as an OCI archive (default out/container/dstrain.oci.tar),
#                   for a cluster without a registry: `kind load image-archive FILE`,
#                   `k3s ctr images import FILE`, `podman load -i FILE`
#   --no-check      skip running the binaries inside the image
#   --no-smoke      skip smoke.sh: a TLS coordinator and worker, the health probe and a 2-rank
#                   job trained to a checkpoint, all inside the image (about a minute)
# Needs root (mmdebstrap and buildah unpack files owned by other users), the packages mmdebstrap
# and buildah (`apt-get install mmdebstrap buildah`), and the Debian mirror the host's apt uses.
# Buildah's storage is the host's default (/var/lib/containers); STORAGE_DRIVER=vfs where
# overlay mounts are not allowed (inside another container). Prints what it built and ran.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=bazel-bin
tag=dstrain:latest
archive=out/container/dstrain.oci.tar
check=1
smoke=1
while (($#)); do
  case $1 in
    --bin) bin=${2:?}; shift 2 ;;
    --tag) tag=${2:?}; shift 2 ;;
    --archive) archive=${2:?}; shift 2 ;;
    --no-check) check=0; smoke=0; shift ;;
    --no-smoke) smoke=0; shift ;;
    *) sed -n '7,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
if [[ $(id -u) -ne 0 ]]; then
  echo "build-offline.sh: run as root (mmdebstrap and buildah unpack other users' files)" >&2
  exit 1
fi
for tool in mmdebstrap buildah; do
  command -v "$tool" > /dev/null ||
    { echo "build-offline.sh: $tool is missing: apt-get install mmdebstrap buildah" >&2; exit 1; }
done

declare -A binaries=(
  [dstrain]=client/cli/dstrain
  [dstrain-coordinator]=coordinator/server/dstrain-coordinator
  [dstrain-worker]=worker/agent/dstrain-worker
  [dstrain-health-probe]=deploy/container/dstrain-health-probe
)
for name in "${!binaries[@]}"; do
  path="$bin/${binaries[$name]}"
  [[ -x $path ]] || { echo "build-offline.sh: no $path: build it first (--help)" >&2; exit 1; }
  if ldd "$path" | grep -q -E "libcuda|libcudart|libnccl|libcublas"; then
    echo "build-offline.sh: $path links CUDA: build with --config=nocuda for this image" >&2
    exit 1
  fi
done

work=$(mktemp -d /tmp/dstrain-image.XXXXXX)
ctr=""
cleanup() {
  [[ -n $ctr ]] && buildah rm "$ctr" > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

packages=$(sed 's/#.*//' deploy/container/runtime-packages.txt | xargs | tr ' ' ',')
echo "build-offline.sh: debootstrapping bookworm with $packages" >&2
mkdir -p "$work/bin"
for name in "${!binaries[@]}"; do install -m 0755 "$bin/${binaries[$name]}" "$work/bin/$name"; done
# essential: Debian's Essential set (a shell, coreutils, dpkg) plus the runtime packages and
# what they depend on; no apt, no documentation.
mmdebstrap --variant=essential --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='echo "dstrain:x:10001:10001:dstrain:/var/lib/dstrain:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "dstrain:x:10001:" >> "$1/etc/group"' \
  --customize-hook='mkdir -p "$1/var/lib/dstrain" "$1/data" && chown 10001:10001 "$1/var/lib/dstrain" "$1/data"' \
  --customize-hook="copy-in $work/bin/dstrain $work/bin/dstrain-coordinator $work/bin/dstrain-worker $work/bin/dstrain-health-probe /usr/local/bin" \
  --customize-hook='rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"*' \
  bookworm "$work/rootfs.tar"

ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" /
buildah config --user 10001:10001 --workingdir /var/lib/dstrain \
  --entrypoint '["/usr/bin/tini", "--"]' --cmd '["dstrain", "help"]' \
  --label org.opencontainers.image.title=dstrain \
  --label "org.opencontainers.image.description=dstrain coordinator, worker agent, CLI/trainer (CPU)" \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$ctr"

if ((check)); then
  run() { buildah run --isolation chroot "$ctr" -- "$@"; }
  echo "build-offline.sh: checking the image" >&2
  # Every library resolves inside the image.
  if run /usr/bin/ldd /usr/local/bin/dstrain /usr/local/bin/dstrain-coordinator \
      /usr/local/bin/dstrain-worker /usr/local/bin/dstrain-health-probe | grep "not found"; then
    echo "build-offline.sh: libraries missing in the image: add their packages to" \
      "runtime-packages.txt" >&2
    exit 1
  fi
  run /usr/bin/tini --version
  out=$(run /usr/local/bin/dstrain help)
  head -n 1 <<< "$out"
  # The daemons print their usage and exit 2 without arguments.
  for daemon in dstrain-coordinator dstrain-worker dstrain-health-probe; do
    code=0
    out=$(run "/usr/local/bin/$daemon" 2>&1) || code=$?
    if [[ $code != 2 ]] || ! grep -q usage <<< "$out"; then
      echo "build-offline.sh: $daemon in the image exited $code: $out" >&2
      exit 1
    fi
    echo "$daemon: exit 2 with its usage: $(head -n 1 <<< "$out")"
  done
  run /usr/bin/id
fi
if ((smoke)); then
  # As the pods run: user 10001, TLS material it can read, a writable /data.
  deploy/local/make_pki.sh "$work/pki" smoke-1 > /dev/null
  mkdir -p "$work/data"
  cp deploy/local/demo/tinyshakespeare.txt "$work/data/"
  chown -R 10001:10001 "$work/pki" "$work/data"
  echo "build-offline.sh: smoke test inside the image (deploy/container/smoke.sh)" >&2
  buildah run --isolation chroot -v "$work/pki:/pki:ro" -v "$work/data:/data" \
    -v "$PWD/deploy/container/smoke.sh:/smoke.sh:ro" "$ctr" -- /bin/sh /smoke.sh
fi

buildah commit --quiet --rm "$ctr" "$tag" > /dev/null
ctr=""
mkdir -p "$(dirname "$archive")"
rm -f "$archive"
buildah push --quiet "$tag" "oci-archive:$archive:$tag"
echo "build-offline.sh: built $tag ($(buildah images --format '{{.Size}}' "$tag" | head -n1))," \
  "archive $archive ($(du -h "$archive" | cut -f1))" >&2
