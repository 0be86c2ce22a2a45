#!/bin/bash
# clustorio egg install script (runs in the install container, server files at /mnt/server).
# A slave needs the Factorio headless server; a master needs nothing. Re-running it never
# touches saves, instances, configuration or the versions installed beside it in
# factorio/<X.Y.Z>/ — only the install in factorio/ itself is replaced.
mkdir -p /mnt/server
cd /mnt/server || exit 1

fail() {
    echo "clustorio install FAILED: $*"
    exit 1
}

MODE=$(echo "${SERVER_MODE:-}" | tr '[:upper:]' '[:lower:]')
case "$MODE" in
    master|controller)
        echo "clustorio install: master mode, Factorio is not needed."
        echo "clustorio install: OK"
        exit 0 ;;
    slave|host) ;;
    *) fail "SERVER_MODE must be master or slave (got '${SERVER_MODE:-}')" ;;
esac

VERSION=${FACTORIO_VERSION:-stable}
if [ "$VERSION" != stable ] && [ "$VERSION" != latest ] \
        && ! [[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    fail "FACTORIO_VERSION must be stable, latest or a version number like 2.0.77 (got '$VERSION')"
fi
# Overridable for mirrors and tests: <base>/<version>/headless/linux64 redirects to the tarball.
DOWNLOAD_BASE=${FACTORIO_DOWNLOAD_URL:-https://factorio.com/get-download}
SHA256_URL=${FACTORIO_SHA256_URL:-https://factorio.com/download/sha256sums/}
URL="$DOWNLOAD_BASE/$VERSION/headless/linux64"

# The install image normally has curl and xz; add them when it does not (it runs as root).
need=()
command -v curl >/dev/null || need+=(curl ca-certificates)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
    echo "clustorio install: installing ${need[*]}"
    { command -v apt-get >/dev/null && apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } \
        || fail "the install container lacks ${need[*]} and cannot install them"
fi

WORK=$(mktemp -d /mnt/server/.install.XXXXXX) || fail "cannot write to /mnt/server"
trap 'rm -rf "$WORK"' EXIT

echo "clustorio install: downloading Factorio $VERSION (headless) from $URL"
FINAL_URL=$(curl -fSL --retry 3 --progress-bar -o "$WORK/factorio.tar.xz" -w '%{url_effective}' "$URL") \
    || fail "could not download Factorio $VERSION from $URL (does that version exist?)"
TARBALL=$(basename "${FINAL_URL%%\?*}")
echo "clustorio install: got $TARBALL ($(du -h "$WORK/factorio.tar.xz" | cut -f1))"

# factorio.com publishes SHA-256 sums of its releases; check when ours is listed.
if curl -fsSL --retry 2 -o "$WORK/sha256sums" "$SHA256_URL" 2>/dev/null \
        && grep -q " $TARBALL\$" "$WORK/sha256sums"; then
    EXPECTED=$(grep " $TARBALL\$" "$WORK/sha256sums" | head -n1 | cut -d' ' -f1)
    ACTUAL=$(sha256sum "$WORK/factorio.tar.xz" | cut -d' ' -f1)
    [ "$EXPECTED" = "$ACTUAL" ] || fail "checksum mismatch for $TARBALL (expected $EXPECTED, got $ACTUAL)"
    echo "clustorio install: checksum OK"
else
    echo "clustorio install: no published checksum for $TARBALL; skipping the check"
fi

tar -xJf "$WORK/factorio.tar.xz" -C "$WORK" || fail "the download is not a valid Factorio archive"
[ -x "$WORK/factorio/bin/x64/factorio" ] || fail "the archive has no factorio/bin/x64/factorio"
INSTALLED=$("$WORK/factorio/bin/x64/factorio" --version 2>/dev/null | head -n1)
[ -n "$INSTALLED" ] || fail "the downloaded Factorio does not run"

rm -rf factorio.old
[ -d factorio ] && mv factorio factorio.old
mv "$WORK/factorio" factorio || fail "cannot move Factorio into place"
# Versions a host installed beside this one (factorio/<X.Y.Z>/, README "Factorio versions")
# stay: only the install in factorio/ itself is replaced.
if [ -d factorio.old ]; then
    for kept in factorio.old/*; do
        name=${kept##*/}
        if [[ "$name" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] && [ -d "$kept" ] && [ ! -e "factorio/$name" ]; then
            mv "$kept" "factorio/$name" && echo "clustorio install: kept Factorio $name (factorio/$name)"
        fi
    done
fi
rm -rf factorio.old
# Owned like the server directory (a panel chowns it again at start; Docker compose does not).
chown -R "$(stat -c %u:%g .)" factorio 2>/dev/null || true
echo "clustorio install: installed $INSTALLED"
echo "clustorio install: OK"
