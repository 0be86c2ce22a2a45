#!/bin/bash
# Container entrypoint in the style of the Pterodactyl yolks: run from tini (`tini -g --`), so
# SIGINT/SIGTERM reach clustorio through the whole process group.
# - works in /home/container (the server's volume),
# - exports INTERNAL_IP, defaults TZ, points TMPDIR at the volume (/tmp is a 100 MB tmpfs),
# - expands the panel's STARTUP ({{VAR}} -> the variable's value; Pelican sends it pre-expanded),
# - prints the command and runs it in place of this shell.
cd /home/container || exit 1

TZ=${TZ:-UTC}
INTERNAL_IP=$(ip route get 1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1); exit}')
TMPDIR=/home/container/.tmp
mkdir -p "$TMPDIR"
export TZ INTERNAL_IP TMPDIR

STARTUP=${STARTUP:-clustorio entrypoint}
# {{VAR}} -> ${VAR}, then let the shell substitute the values once.
MODIFIED_STARTUP=$(echo "${STARTUP}" | sed -e 's/{{/${/g' -e 's/}}/}/g')
MODIFIED_STARTUP=$(eval echo "${MODIFIED_STARTUP}")
echo ":/home/container\$ ${MODIFIED_STARTUP}"

# shellcheck disable=SC2086
exec ${MODIFIED_STARTUP}
