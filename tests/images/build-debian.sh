#!/usr/bin/env bash
# Builds dockdoc-test/debian-apps:1, a Debian userland with real server software (Flask/werkzeug,
# gunicorn, uvicorn, Django, nginx-light), from Debian's packages with debootstrap. No container
# registry is needed: the rootfs is imported with `docker import`. Needs root and debootstrap.
# Re-running is a no-op when the image already exists (pass --force to rebuild).
set -euo pipefail
IMAGE=${IMAGE:-dockdoc-test/debian-apps:1}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
PACKAGES=python3-flask,gunicorn,python3-uvicorn,python3-django,nginx-light,busybox

if [ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE already built"; exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-debian.sh: needs root (debootstrap)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "build-debian.sh: apt-get install debootstrap" >&2; exit 2; }

root=$(mktemp -d /tmp/dockdoc-debian.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >/dev/null
# Keep the image small: package caches and docs are not needed to run servers.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
# The apps the tests run (Flask, FastAPI-free ASGI, WSGI) live in the image, not in the tests' build context.
cp -r "$(dirname "$0")/apps" "$root/apps"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'WORKDIR /apps' \
  --change 'LABEL dockdoc.test-image=1' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
