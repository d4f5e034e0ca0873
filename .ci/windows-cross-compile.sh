#!/usr/bin/env bash
# CI step: make sure mingw-w64 is there, then compile the native addon's
# sources for Windows. Catches Windows-only breakage without a Windows runner.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v x86_64-w64-mingw32-g++ >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq g++-mingw-w64-x86-64
fi

bash "$root/packages/transport/scripts/cross-compile-windows.sh"
