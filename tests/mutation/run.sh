#!/usr/bin/env bash
# Mutation testing of the engine core, span decoding, text and features; see docs/testing.md.
#
#   tests/mutation/run.sh                          # every module of MODULES below
#   tests/mutation/run.sh 'engine.batching.*'      # only the mutants whose names match these globs
#
# Needs mutmut (pip install -e '.[mutation]'). It copies the project's files (tracked and new, not
# ignored) into $MUTATION_DIR (default /tmp/seqpan-mutation), puts tests/mutation/setup.cfg there
# and runs `mutmut run` in that folder, so the work tree is never touched. The folder is kept: a
# rerun after a change tests only the mutants of changed functions. Ends with the score per module
# (tests/mutation/score.py); `cd $MUTATION_DIR && mutmut show NAME` shows one mutant's diff.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${MUTATION_DIR:-${TMPDIR:-/tmp}/seqpan-mutation}
bin=${SEQPAN_VENV:-$repo/.venv}/bin
MODULES=(
    'engine.engine.*' 'engine.requests.*' 'engine.batching.*' 'engine.batcher.*' 'engine.spans.*'
    'reference.localizer.x_decode_span__mutmut_*' 'engine.data.text.*' 'engine.data.features.*'
)
globs=("$@")
[ ${#globs[@]} -gt 0 ] || globs=("${MODULES[@]}")

mkdir -p "$work"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r ls -d 2>/dev/null |
    tar -cf - -T -) | tar -xf - -C "$work"
cp "$here/setup.cfg" "$work/setup.cfg"
cd "$work"
# one thread a worker: mutmut runs one worker per core
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 SEQPAN_FUZZ_SCALE=0
"$bin/mutmut" run --max-children "${MUTATION_WORKERS:-2}" "${globs[@]}" || true
"$bin/python" "$here/score.py" "${globs[@]}"
