#!/usr/bin/env bash
# Build Orchard.app (and Orchard-<version>.dmg) on macOS from one command:
#   packaging/build_macos.sh [PYTHON]
# Signing and notarization run only when their credentials are in the environment:
#   ORCHARD_SIGN_IDENTITY  "Developer ID Application: Name (TEAMID)"  -> codesign app + dmg
#   ORCHARD_NOTARY_PROFILE a keychain profile made once with
#                          `xcrun notarytool store-credentials PROFILE --apple-id ... --team-id ...`
#   or APPLE_ID + APPLE_TEAM_ID + APPLE_APP_PASSWORD (an app-specific password)
#                          -> notarytool submit --wait, then stapler staple
# ORCHARD_VERSION sets CFBundleShortVersionString (default: pyproject's version).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -s)" = Darwin ] || { echo "build_macos: run this on macOS (Linux: build_linux.sh)" >&2; exit 2; }
PY="${1:-${PYTHON:-.venv/bin/python}}"
"$PY" -c "import PyInstaller" 2>/dev/null \
  || { echo "build_macos: PyInstaller is missing: $PY -m pip install 'pyinstaller>=6.10'" >&2; exit 2; }
VERSION="${ORCHARD_VERSION:-$("$PY" -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}"
export ORCHARD_VERSION="$VERSION"
DIST=dist
APP="$DIST/Orchard.app"
DMG="$DIST/Orchard-$VERSION.dmg"

# Icon: packaging/macos/Orchard.icns, made from resources/icons/orchard.png (1024 px) if absent.
ICNS=packaging/macos/Orchard.icns
PNG=resources/icons/orchard.png
if [ ! -f "$ICNS" ] && [ -f "$PNG" ]; then
  SET=$(mktemp -d)/Orchard.iconset; mkdir -p "$SET"
  for s in 16 32 128 256 512; do
    sips -z $s $s "$PNG" --out "$SET/icon_${s}x${s}.png" >/dev/null
    sips -z $((s*2)) $((s*2)) "$PNG" --out "$SET/icon_${s}x${s}@2x.png" >/dev/null
  done
  iconutil -c icns "$SET" -o "$ICNS"
fi

start=$(date +%s)
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath build/pyinstaller packaging/orchard.spec
find "$APP" -name mlx.metallib | grep -q . \
  || { echo "build_macos: mlx.metallib is not in $APP; MLX cannot use Metal" >&2; exit 1; }
"$APP/Contents/MacOS/Orchard" --selftest

if [ -n "${ORCHARD_SIGN_IDENTITY:-}" ]; then
  # Hardened runtime is required for notarization; the entitlements let Python's
  # ctypes/libffi and the bundled (separately signed) libraries load.
  codesign --force --deep --options runtime --timestamp \
    --entitlements packaging/macos/entitlements.plist \
    --sign "$ORCHARD_SIGN_IDENTITY" "$APP"
  codesign --verify --deep --strict --verbose=2 "$APP"
fi

STAGE=$(mktemp -d)
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
rm -f "$DMG"
hdiutil create -volname "Orchard $VERSION" -srcfolder "$STAGE" -ov -format UDZO "$DMG"
rm -rf "$STAGE"

if [ -n "${ORCHARD_SIGN_IDENTITY:-}" ]; then
  codesign --force --timestamp --sign "$ORCHARD_SIGN_IDENTITY" "$DMG"
  if [ -n "${ORCHARD_NOTARY_PROFILE:-}" ]; then
    xcrun notarytool submit "$DMG" --keychain-profile "$ORCHARD_NOTARY_PROFILE" --wait
  elif [ -n "${APPLE_ID:-}" ] && [ -n "${APPLE_TEAM_ID:-}" ] && [ -n "${APPLE_APP_PASSWORD:-}" ]; then
    xcrun notarytool submit "$DMG" --apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" \
      --password "$APPLE_APP_PASSWORD" --wait
  else
    echo "build_macos: signed but not notarized (no notary credentials in the environment)"
  fi
  if [ -n "${ORCHARD_NOTARY_PROFILE:-}${APPLE_ID:-}" ]; then
    xcrun stapler staple "$DMG"
    spctl --assess --type open --context context:primary-signature --verbose "$DMG"
  fi
else
  echo "build_macos: unsigned build (set ORCHARD_SIGN_IDENTITY to sign)"
fi
echo "build_macos: $APP and $DMG built in $(( $(date +%s) - start )) s"
