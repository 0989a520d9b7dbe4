#!/bin/sh
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, builds
# with warnings as errors, runs the C unit tests (plain and under ASan+UBSan), then the
# integration tests against a real reef-hub and real FUSE mounts.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)

./scripts/install-deps.sh

setup() { # dir, extra meson args...
	dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir"
}

setup build -Dwerror=true
setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dintegration=false

meson test -C build --suite unit --print-errorlogs
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --suite unit --print-errorlogs

REEF_BUILD="$ROOT/build" /usr/bin/python3 -m pytest -p no:cacheprovider -q -ra \
	--durations=10 tests/integration "$@"
