#!/usr/bin/env bash
# Installs the Debian 12 packages that building Pixelport needs, idempotently (each is
# checked with dpkg -s; `apt-get update` runs only when something must be installed):
#
#   - libdav1d-dev, pkg-config: AVIF decoding links Debian's libdav1d (found by pkg-config)
#     through the `dav1d` crate; building dav1d from source would cost minutes per build;
#   - nasm: the SIMD code of mozjpeg (JPEG) and rav1e (AVIF encoding); without it both build
#     silently without SIMD and run several times slower;
#   - libheif-dev: HEIC/HEIF sources link Debian's libheif (the `heif` feature, on by
#     default; `cargo build --no-default-features` builds without it).
#
# More package names given as arguments are installed the same way: the test setup
# (chromium, chromium-driver) and the cache benchmark (nginx, wrk) use this script as the
# project's one apt installer.
#
# Downloads go only through apt-get. Needs root or sudo.
set -euo pipefail

BUILD_PACKAGES=(libdav1d-dev libheif-dev pkg-config nasm "$@")

log() { printf '[install-build-deps] %s\n' "$*"; }
die() { printf '[install-build-deps] ERROR: %s\n' "$*" >&2; exit 1; }

installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

missing=()
for pkg in "${BUILD_PACKAGES[@]}"; do
    if installed "$pkg"; then
        log "apt: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
    sudo=(sudo)
fi
log "apt: running apt-get update"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
log "apt: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
