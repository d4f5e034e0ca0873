#!/usr/bin/env bash
# Compiles (no linking: there is no node.lib here) every native source for
# x86_64 Windows with mingw-w64, so the Windows code path cannot rot unseen
# on a Linux-only CI. Installs nothing; .ci/windows-cross-compile.sh does.
#
# Environment:
#   NODE_INCLUDE_DIR  Node's headers with uv/win.h (default /usr/include/node)
set -euo pipefail

cd "$(dirname "$0")/.."

die() {
  echo "cross-compile-windows: $*" >&2
  exit 1
}

command -v x86_64-w64-mingw32-g++ >/dev/null 2>&1 ||
  die "x86_64-w64-mingw32-g++ not found; install it (Debian: apt-get install g++-mingw-w64-x86-64)"

# The posix-threads flavour, where there is one: GCC < 13 with the win32
# thread model has no std::mutex, which napi.h needs (MSVC has it anyway).
CXX=x86_64-w64-mingw32-g++
if command -v x86_64-w64-mingw32-g++-posix >/dev/null 2>&1; then
  CXX=x86_64-w64-mingw32-g++-posix
fi

NODE_INCLUDE_DIR=${NODE_INCLUDE_DIR:-/usr/include/node}
for h in node_api.h uv.h uv/win.h uv/tree.h; do
  [ -f "$NODE_INCLUDE_DIR/$h" ] ||
    die "$NODE_INCLUDE_DIR/$h missing; point NODE_INCLUDE_DIR at Node's full headers (they include libuv's Windows ones)"
done

NAPI_INCLUDE_DIR=$(node -p "require('node-addon-api').include_dir") ||
  die "node-addon-api not found; run pnpm install first"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

FLAGS=(
  -std=c++17 -Wall -Wextra -Werror
  -DNAPI_VERSION=8
  -DNAPI_DISABLE_CPP_EXCEPTIONS
  -DNODE_ADDON_API_DISABLE_DEPRECATED
  -DNODE_API_NO_EXTERNAL_BUFFERS_ALLOWED
  -D_WIN32_WINNT=0x0A00
  -I"$NODE_INCLUDE_DIR"
  -I"$NAPI_INCLUDE_DIR"
)

for src in native/*.cc; do
  "$CXX" "${FLAGS[@]}" -c "$src" -o "$OUT/$(basename "$src" .cc).o"
  echo "compiled $src (x86_64 Windows, $CXX)"
done
echo OK
