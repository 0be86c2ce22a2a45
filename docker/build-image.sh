#!/usr/bin/env bash
# Builds the clustorio image on a machine without a container registry (this project's CI):
#  1. the base image (debian:bookworm-slim, as the Dockerfile names it) from debootstrap, only
#     when no image has that tag (or when it is one this script made from an older recipe, or
#     REBUILD_BASE=1). A real debian:bookworm-slim, pulled from a registry, is used as it is;
#  2. the binary on the host (cargo build --release; a no-op when it is up to date);
#  3. the image from docker/Dockerfile with BUILDER=<base> PREBUILT=1 (the builder stage copies
#     the host's binary instead of compiling: no Rust image can be pulled here, and compiling
#     a second time inside Docker would double CI time on 2 cores), tagged as the egg's image.
# Usage: docker/build-image.sh [tag]     (default: the image egg/egg-clustorio.json names)
# With a registry, `docker build -f docker/Dockerfile -t <tag> .` compiles in rust:1-bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."

EGG_IMAGE=$(sed -n 's/^ *"clustorio": "\(.*\)",\{0,1\}$/\1/p' egg/egg-clustorio.json | head -n1)
IMAGE=${1:-$EGG_IMAGE}
[ -n "$IMAGE" ] || { echo "no image tag given and none found in egg/egg-clustorio.json" >&2; exit 1; }
BASE=debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=tini,ca-certificates,curl,xz-utils,tzdata,iproute2
# Changing how the base is made? Change this too, so cached bases made the old way are rebuilt.
RECIPE="bookworm minbase $PACKAGES; no docs, man pages or locales; v2"
START=$SECONDS

made_by=$(docker image inspect -f '{{index .Config.Labels "clustorio.base"}}' "$BASE" 2>/dev/null || echo "(missing)")
[ "$made_by" = "<no value>" ] && made_by=""
if [ "$made_by" = "(missing)" ] || [ "${REBUILD_BASE:-0}" = 1 ] \
        || { [ -n "$made_by" ] && [ "$made_by" != "$RECIPE" ]; }; then
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap: a minimal Debian bookworm for $BASE (takes a few minutes)"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root/rootfs" "$MIRROR" >/dev/null
    r=$root/rootfs
    # Slim like the official image: no docs (copyright files stay), man pages or translations,
    # now and for anything installed later.
    find "$r/usr/share/doc" -depth -mindepth 1 ! -name copyright ! -type d -delete
    find "$r/usr/share/doc" -depth -mindepth 1 -type d -empty -delete
    rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* "$r"/usr/share/lintian \
        "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
        "$r"/var/cache/debconf/*-old "$r"/var/log/*.log "$r"/var/log/apt/*
    cat > "$r/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    tar -C "$r" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL clustorio.base=\"$RECIPE\"" \
        --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$root"
    trap - EXIT
    echo "made $BASE ($(docker image ls "$BASE" --format '{{.Size}}'), $((SECONDS - START)) s)"
fi

cargo build --release --bin clustorio
# A build context of just what PREBUILT=1 uses: the image's layers stay cached until the binary or
# the entrypoint changes (not on every edit of a test or a README).
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/target/release" "$ctx/entrypoint"
cp -p target/release/clustorio "$ctx/target/release/"
cp -p entrypoint/entrypoint.sh "$ctx/entrypoint/"
docker build -q -f docker/Dockerfile --build-arg "BUILDER=$BASE" --build-arg PREBUILT=1 -t "$IMAGE" "$ctx" >/dev/null
# The legacy builder keeps the build stage as an untagged image: drop ours (labelled) once they
# are old enough not to belong to a build running right now.
docker image prune -f --filter label=clustorio.stage=build --filter until=10m >/dev/null
echo "$IMAGE $(docker image ls "$IMAGE" --format '{{.Size}}') (built in $((SECONDS - START)) s)"
