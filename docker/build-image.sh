#!/usr/bin/env bash
# Builds the clustorio image on a machine without a container registry:
#  1. the base image (debian:bookworm-slim, as the Dockerfile names it) from debootstrap, unless
#     an image with that tag exists already;
#  2. the binary on the host (cargo build --release);
#  3. the image from docker/Dockerfile with BUILDER=<base> PREBUILT=1, tagged as the egg's image.
# Usage: docker/build-image.sh [tag]     (default: the egg's image, ghcr.io/clustorio/clustorio:latest)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-ghcr.io/clustorio/clustorio:latest}
BASE=debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap: a minimal Debian bookworm for $BASE (takes a few minutes)"
    debootstrap --variant=minbase \
        --include=tini,ca-certificates,curl,xz-utils,tzdata,iproute2 \
        bookworm "$root/rootfs" "$MIRROR" >/dev/null
    rm -rf "$root"/rootfs/var/lib/apt/lists/* "$root"/rootfs/var/cache/apt/*.bin "$root"/rootfs/var/cache/apt/archives/*.deb
    tar -C "$root/rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    echo "made $BASE"
fi

cargo build --release --bin clustorio
docker build -q -f docker/Dockerfile --build-arg "BUILDER=$BASE" --build-arg PREBUILT=1 -t "$IMAGE" . >/dev/null
docker image ls "$IMAGE" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
