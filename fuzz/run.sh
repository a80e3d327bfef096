#!/usr/bin/env bash
# Run fuzz targets one after another, each for FUZZ_SECONDS (default 30):
#   fuzz/run.sh [target ...]       (default: every target)
# Seeds are made first when a corpus is missing. A crash, hang or
# undocumented exception stops the run with a non-zero status, its input
# in fuzz/artifacts/<target>/. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SECONDS_EACH=${FUZZ_SECONDS:-30}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(file chunk transposed footer options tfrecord example)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for t in "${TARGETS[@]}"; do
  [ -d "fuzz/corpus/$t" ] || "$PYTHON" fuzz/make_seeds.py
  mkdir -p "fuzz/artifacts/$t"
  echo "== fuzz_$t for ${SECONDS_EACH}s"
  "$PYTHON" "fuzz/fuzz_$t.py" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" "fuzz/corpus/$t" 2>&1 \
    | grep -v -e '^INFO: Instrumenting' -e '^WARNING: Failed to find function' -e '	NEW ' -e '	REDUCE ' -e '	pulse '
done
