#!/usr/bin/env bash
# Run fuzz targets one after another, each for FUZZ_SECONDS (default 30):
#   fuzz/run.sh [target ...]       (default: every target)
# Seeds are made first when a corpus is missing. A crash, hang or
# undocumented exception stops the run with a non-zero status, its input
# in fuzz/artifacts/<target>/. PYTHON picks the interpreter. FUZZ_SEED
# fixes libFuzzer's seed (default 0: a new one each run). With a fixed seed
# a run explores the same inputs in the same order, so a shorter run is a
# prefix of a longer one: CI fixes it, and a developer who ran the same
# seed for longer has already seen everything CI will. Such a run also
# starts from the seeds alone (what it finds goes to a scratch directory,
# not fuzz/corpus/), since a grown corpus would change the order.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SECONDS_EACH=${FUZZ_SECONDS:-30}
SEED=${FUZZ_SEED:-0}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(file chunk transposed footer options tfrecord example)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for t in "${TARGETS[@]}"; do
  [ -d "fuzz/corpus/$t" ] || "$PYTHON" fuzz/make_seeds.py
  mkdir -p "fuzz/artifacts/$t"
  corpus=("fuzz/corpus/$t")
  if [ "$SEED" != 0 ]; then
    scratch=$(mktemp -d)
    corpus=("$scratch" "fuzz/corpus/$t")
  fi
  echo "== fuzz_$t for ${SECONDS_EACH}s (seed $SEED)"
  "$PYTHON" "fuzz/fuzz_$t.py" -max_total_time="$SECONDS_EACH" -seed="$SEED" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" "${corpus[@]}" 2>&1 \
    | grep -v -e '^INFO: Instrumenting' -e '^WARNING: Failed to find function' -e '	NEW ' -e '	REDUCE ' -e '	pulse '
  [ "$SEED" = 0 ] || rm -rf "$scratch"
done
