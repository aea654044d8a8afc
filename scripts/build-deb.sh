#!/usr/bin/env bash
# Builds the Debian package: target/debian/pixelport_<version>-1_<arch>.deb (the path is
# printed last). Works from a clean checkout; installs cargo-deb (pinned) when missing, and
# the build's Debian packages through scripts/install-build-deps.sh.
#
#   bash scripts/build-deb.sh                 release build, then the package
#   bash scripts/build-deb.sh --profile dev   the dev build (what the tests package: same
#                                             files, a bigger unoptimised binary)
#   bash scripts/build-deb.sh --no-build      package what the profile's binary is now
#
# Env: CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_DEB_VERSION=3.8.0
PROFILE=release
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "usage: $0 [--profile release|dev] [--no-build]" >&2; exit 2 ;;
    esac
done
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$PROFILE" in
    dev | debug) PROFILE=dev; OUT_DIR=debug ;;
    *) OUT_DIR="$PROFILE" ;;
esac

have_cargo_deb() {
    cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"
}
if ! have_cargo_deb; then
    echo "[build-deb] installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked --version "$CARGO_DEB_VERSION" cargo-deb
fi

if [ "$BUILD" = 1 ]; then
    bash "$ROOT/scripts/install-build-deps.sh"
    cargo build --locked --profile "$PROFILE"
fi
BIN="$TARGET_DIR/$OUT_DIR/pixelport"
[ -x "$BIN" ] || { echo "[build-deb] no binary at $BIN" >&2; exit 1; }

# The man-style help: every command's --help, from the binary being packaged.
GEN="$ROOT/packaging/debian/generated"
mkdir -p "$GEN"
{
    echo "PIXELPORT(1)"
    echo
    "$BIN" --help
    for cmd in serve check-config keygen sign fsck hash-password cache edge tunnel; do
        echo
        echo "================================================================"
        echo "pixelport $cmd"
        echo "================================================================"
        "$BIN" "$cmd" --help
    done
} > "$GEN/pixelport.txt"

ARGS=(--no-build --locked)
if [ "$PROFILE" != release ]; then
    ARGS+=(--profile "$PROFILE")
fi
cargo deb "${ARGS[@]}" 2>&1 | tee "$GEN/cargo-deb.log"
DEB="$(tail -n1 "$GEN/cargo-deb.log")"
echo "$DEB"
