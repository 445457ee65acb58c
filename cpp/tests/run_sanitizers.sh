#!/usr/bin/env bash
# Builds the engine in Debug with AddressSanitizer + UndefinedBehaviorSanitizer (its own build folder,
# build/sanitize; the installed engine is untouched) and runs cpp/tests/stress.py against it with
# libasan preloaded into Python. Any memory error, undefined behaviour (signed overflow, ...), stack
# overflow (e.g. a recursion in a debug build) or broken invariant fails it.
#
#   cpp/tests/run_sanitizers.sh [python] [stress.py args...]     # python defaults to .venv/bin/python
#
# Needs g++ with libasan/libubsan, cmake and ninja (or make). pybind11 is taken from the Python if it
# has it, else installed into build/sanitize/pybind11 with pip.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-.venv/bin/python}"
shift || true
BUILD=build/sanitize
mkdir -p "$BUILD"

if ! PYBIND11_DIR="$("$PY" -m pybind11 --cmakedir 2>/dev/null)"; then
  "$PY" -m pip install -q --target "$BUILD/pybind11" "pybind11>=2.13"
  PYBIND11_DIR="$(PYTHONPATH="$BUILD/pybind11" "$PY" -m pybind11 --cmakedir)"
fi
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

start=$(date +%s)
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$FLAGS" -DCMAKE_MODULE_LINKER_FLAGS="$FLAGS" \
    -Dpybind11_DIR="$PYBIND11_DIR" -DPython_EXECUTABLE="$(command -v "$PY" || echo "$PY")" >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
MODULE="$(ls "$BUILD"/_mettagrid*.so)"
ldd "$MODULE" | grep libasan >/dev/null || { echo "error: $MODULE is not linked with libasan" >&2; exit 1; }
echo "sanitizer build: $MODULE ($(( $(date +%s) - start )) s)"

LIBASAN="$(${CXX:-g++} -print-file-name=libasan.so)"
# Python's own allocations are never freed at exit: leak detection would only report those.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
LD_PRELOAD="$LIBASAN" METTAGRID_ENGINE="$MODULE" "$PY" cpp/tests/stress.py "$@"
