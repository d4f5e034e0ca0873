#!/usr/bin/env bash
# The transport's tests (and framing's and rpc's, which drive the same
# addon) against an AddressSanitizer + UndefinedBehaviorSanitizer build of
# the native addon.
#
#   scripts/asan.sh              # build the sanitizer addon, run the transport's tests
#   scripts/asan.sh all          # ... and framing's and rpc's
#   scripts/asan.sh packages/transport/test/stream.test.ts   # only these tests
#   scripts/asan.sh --no-ts-build ...   # the packages' dist/ is fresh (CI, after npm test)
#
# The sanitizer build goes to packages/transport/build-asan/, never to
# build/Release (which the normal tests and everyone else use). Node itself
# is not instrumented: the ASan runtime is preloaded into every node process
# (LD_PRELOAD, inherited by the test workers and every child they spawn) and
# src/native.ts loads the sanitizer binary because AFUNIX_NATIVE_PATH names
# it. Leak detection is off: V8 and Node free much of their memory only at
# exit, or never, by design, and LeakSanitizer would report that at every
# process exit; use-after-free, overflows, double frees and UB are reported.
# Reports go to files (log_path), so that one from a child process the test
# did not watch is not lost either: the run fails if any file appears.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v gcc >/dev/null; then echo "asan.sh: needs gcc (Debian: apt-get install -y g++)" >&2; exit 2; fi
asan_rt=$(gcc -print-file-name=libasan.so)
if [ ! -e "$asan_rt" ]; then echo "asan.sh: no ASan runtime (Debian: apt-get install -y libasan8)" >&2; exit 2; fi
asan_rt=$(readlink -f "$asan_rt")

ts_build=1
if [ "${1:-}" = --no-ts-build ]; then ts_build=0; shift; fi

start=$(date +%s)
# 1. The packages' JavaScript (fixtures run the built dist/).
if [ $ts_build = 1 ]; then npx pnpm -r --filter './packages/*' run build >/dev/null; fi

# 2. The addon, from a copy of its sources, built with the sanitizers.
out=packages/transport/build-asan
rm -rf "$out"
mkdir -p "$out"
cp -r packages/transport/binding.gyp packages/transport/native "$out/"
# node-gyp finds Node's headers where npm's config says (nodedir), else next
# to this node binary, else it downloads them.
nodedir=$(npm config get nodedir 2>/dev/null || true)
prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
if { [ -z "$nodedir" ] || [ "$nodedir" = undefined ]; } && [ -e "$prefix/include/node/node_api.h" ]; then nodedir=$prefix; fi
gyp_args=(rebuild)
if [ -n "$nodedir" ] && [ "$nodedir" != undefined ]; then gyp_args+=("--nodedir=$nodedir"); fi
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
(
  cd "$out"
  CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" \
    node "$root/packages/transport/node_modules/node-gyp/bin/node-gyp.js" "${gyp_args[@]}" >build.log 2>&1 ||
    { cat build.log >&2; exit 1; }
)
addon=$root/$out/build/Release/afunix.node
built=$(date +%s)
echo "asan.sh: sanitizer addon built in $((built - start)) s: $addon"
if ! ldd "$addon" | grep libasan >/dev/null; then echo "asan.sh: $addon is not linked against libasan" >&2; exit 1; fi

# 3. The tests, with the runtime preloaded and the sanitizer addon loaded.
logs=$(mktemp -d /tmp/afunix-asan.XXXXXX)
export LD_PRELOAD=$asan_rt
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$logs/asan:allow_user_segv_handler=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
export AFUNIX_NATIVE_PATH=$addon

# The binding must really be the sanitizer build, or the run proves nothing.
( cd packages/transport && node --input-type=module -e '
  const { features, loadError } = await import("./dist/index.js");
  if (!features.native) { console.error("asan.sh: the sanitizer addon did not load:", loadError?.message); process.exit(1); }
  const maps = (await import("node:fs")).readFileSync("/proc/self/maps", "utf8");
  if (!maps.includes("build-asan/build/Release/afunix.node")) { console.error("asan.sh: the sanitizer addon is not the one loaded"); process.exit(1); }
  if (!maps.includes("libasan")) { console.error("asan.sh: the ASan runtime is not loaded"); process.exit(1); }
' )

tests=("$@")
# Default: the transport's suite. `all` adds framing's and rpc's (about
# five times as long: every child process pays ASan's start-up).
if [ ${#tests[@]} -eq 0 ]; then tests=(packages/transport/test); fi
if [ "${tests[*]}" = all ]; then tests=(packages/transport/test packages/framing/test packages/rpc/test); fi
status=0
# (The type tests have nothing to do with the addon: skipped here.)
npx vitest run --typecheck.enabled=false "${tests[@]}" || status=$?
end=$(date +%s)

reports=$(find "$logs" -type f | sort)
if [ -n "$reports" ]; then
  echo "asan.sh: sanitizer reports:" >&2
  for f in $reports; do echo "== $f" >&2; cat "$f" >&2; done
  status=1
else
  echo "asan.sh: no sanitizer reports"
fi
rm -rf "$logs"
echo "asan.sh: build $((built - start)) s, tests $((end - built)) s, exit $status"
exit $status
