#!/usr/bin/env bash
# Installs what the test suite needs, idempotently, on a Debian 12 machine that
# has only the Rust toolchain, Python 3.11 with pip and Node:
#
#   - a Python venv at ${PIXELPORT_CACHE:-$HOME/.cache/pixelport}/venv with
#     tests/python/requirements.txt installed (skipped when the stamp file in
#     the venv holds the sha256 of requirements.txt);
#   - s3s-fs 0.14.1 (the reference S3 server), via `cargo install`, only when
#     no s3s-fs reporting 0.14.1 is found;
#   - the build's Debian packages through scripts/install-build-deps.sh (libdav1d-dev,
#     libheif-dev, pkg-config, nasm), and the tests' own, only when missing: chromium and
#     chromium-driver for the admin UI's browser tests, pebble (a real ACME server) and
#     openssl (test certificates) for the tunnel and edge tests;
#   - tests/browser/node_modules through `npm ci` (playwright-core, pinned in its
#     package-lock.json; it drives /usr/bin/chromium and downloads no browser), skipped
#     when the stamp in node_modules holds the sha256 of package-lock.json.
#
# Downloads go only through pip, npm, cargo and apt-get.
# Env: PIXELPORT_CACHE, PIXELPORT_REQUIREMENTS (another requirements file),
#      PYTHON (interpreter for the venv), S3S_FS_BIN (an s3s-fs to use),
#      CARGO_HOME.
# Writes $PIXELPORT_CACHE/test-deps.env (VENV=..., S3S_FS_BIN=...) at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PIXELPORT_CACHE:-$HOME/.cache/pixelport}"
VENV="$CACHE/venv"
REQUIREMENTS="${PIXELPORT_REQUIREMENTS:-$ROOT/tests/python/requirements.txt}"
S3S_FS_VERSION="0.14.1"
CARGO_BIN_DIR="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin" # where cargo install puts it

log() { printf '[setup-test-deps] %s\n' "$*"; }
die() { printf '[setup-test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE"

# --------------------------------------------------------------------------
# Debian packages: the build's, plus what only the tests need (Chromium for the
# admin UI's browser tests; wrk for the edge's client-key-cap test, which was missing on a
# fresh machine; rclone for the versioned-bucket copy; cjxl from libjxl-tools and djxl to
# make and check the JPEG XL samples from the shared photographs; rsvg-convert from
# librsvg2-bin for the SVG reference renderings; heif-enc from libheif-examples for the HEIC
# samples), through the project's
# one apt installer. Each is checked with dpkg -s first; `apt-get update` runs only when
# something is missing.
# --------------------------------------------------------------------------
bash "$ROOT/scripts/install-build-deps.sh" chromium chromium-driver pebble openssl wrk rclone \
    libjxl-tools librsvg2-bin libheif-examples

# --------------------------------------------------------------------------
# Python venv
# --------------------------------------------------------------------------
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
[ -n "$PYTHON" ] || die "python3 not found"

venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys, pip' >/dev/null 2>&1
}

if venv_ok; then
    log "venv: reusing $VENV ($("$VENV/bin/python" --version 2>&1))"
else
    if [ -e "$VENV" ]; then
        log "venv: $VENV is broken or incomplete; recreating it"
        rm -rf "$VENV"
    fi
    log "venv: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's own python3 needs python3-venv (ensurepip) for this.
        rm -rf "$VENV"
        py_minor="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        log "venv: creation failed; installing python${py_minor}-venv and retrying"
        bash "$ROOT/scripts/install-build-deps.sh" "python${py_minor}-venv"
        "$PYTHON" -m venv "$VENV"
    fi
    venv_ok || die "venv at $VENV has no working python/pip"
fi

[ -f "$REQUIREMENTS" ] || die "missing $REQUIREMENTS (the Python test suite's pins)"
STAMP="$VENV/.requirements.sha256"
want_hash="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
have_hash="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want_hash" = "$have_hash" ]; then
    log "pip: requirements unchanged (sha256 ${want_hash:0:12}); skipping pip install"
else
    log "pip: installing $REQUIREMENTS into $VENV"
    rm -f "$STAMP"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
    printf '%s\n' "$want_hash" >"$STAMP"
    log "pip: done; stamp ${want_hash:0:12} written to $STAMP"
fi

# --------------------------------------------------------------------------
# Node packages of the browser tests (tests/browser: playwright-core)
# --------------------------------------------------------------------------
BROWSER_DIR="$ROOT/tests/browser"
LOCK="$BROWSER_DIR/package-lock.json"
[ -f "$LOCK" ] || die "missing $LOCK (the browser tests' pins)"
command -v npm >/dev/null 2>&1 || die "npm not found (the browser tests need Node)"
NPM_STAMP="$BROWSER_DIR/node_modules/.package-lock.sha256"
want_lock="$(sha256sum "$LOCK" | cut -d' ' -f1)"
have_lock="$(cat "$NPM_STAMP" 2>/dev/null || true)"
if [ -d "$BROWSER_DIR/node_modules" ] && [ "$want_lock" = "$have_lock" ]; then
    log "npm: package-lock.json unchanged (sha256 ${want_lock:0:12}); skipping npm ci"
else
    log "npm: npm ci in $BROWSER_DIR"
    (cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$want_lock" >"$NPM_STAMP"
    log "npm: done; stamp ${want_lock:0:12} written to $NPM_STAMP"
fi

# --------------------------------------------------------------------------
# s3s-fs (reference S3 server used by the Python tests and the benchmark)
# --------------------------------------------------------------------------
s3s_fs_has_version() {
    [ -n "$1" ] && [ -x "$1" ] && "$1" --version 2>/dev/null | grep -qx "s3s-fs $S3S_FS_VERSION"
}

find_s3s_fs() {
    local c
    for c in "${S3S_FS_BIN:-}" "$CARGO_BIN_DIR/s3s-fs" "$(command -v s3s-fs 2>/dev/null || true)"; do
        if s3s_fs_has_version "$c"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

if found="$(find_s3s_fs)"; then
    log "s3s-fs: $found already reports $S3S_FS_VERSION"
else
    log "s3s-fs: $S3S_FS_VERSION not found; cargo install (a few minutes on a cold cache)"
    cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked
    found="$(find_s3s_fs)" || die "s3s-fs $S3S_FS_VERSION still not found after cargo install (looked in $CARGO_BIN_DIR and PATH)"
    log "s3s-fs: installed $found"
fi

# For scripts/test.sh (and anyone else): where things ended up.
ENV_FILE="$CACHE/test-deps.env"
tmp="$(mktemp "$CACHE/.test-deps.env.XXXXXX")"
printf 'VENV=%q\nS3S_FS_BIN=%q\n' "$VENV" "$found" >"$tmp"
mv -f "$tmp" "$ENV_FILE"
log "ready: VENV=$VENV S3S_FS_BIN=$found (written to $ENV_FILE)"
