#!/usr/bin/env bash
# GPU check: the cuda-marked tests, `seqpan bench` at real shapes, the pytest-benchmark block suite,
# bench/kernel_timing.py / bench/localizer_timing.py when present, and bench/video_timing.py (I3D
# extraction); about 8 minutes on an H100.
#
#   bench/gpu_check.sh [OUT_DIR]      (default: $OUT, else bench-out/gpu-check)
#
# Runs from the repository checkout with python3 (PYTHONPATH=., nothing installed). Writes under
# OUT_DIR: check.log (everything printed), results.json/.md and latency.png (seqpan bench),
# blocks.json (pytest-benchmark), kernel_timing.json, localizer_timing.json, video_timing.json. Prints a short table
# last. Every step has a time limit and the whole run a budget (GPU_CHECK_SECONDS, default 420);
# exits 1 if any step failed or timed out.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
out=${1:-${OUT:-bench-out/gpu-check}}
mkdir -p "$out" || exit 1
log=$out/check.log
: >"$log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
budget=${GPU_CHECK_SECONDS:-420}
reserve=15 # seconds kept for the final report
summary=()
failed=0

# step NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S, what the budget has left), log it,
# and add a line to the summary.
step() {
	local name=$1 limit=$2 left rc verdict start=$SECONDS
	shift 2
	left=$((budget - reserve - SECONDS))
	if ((left < 10)); then
		summary+=("$(printf '%-20s %-22s' "$name" "skipped (budget)")")
		failed=1
		return
	fi
	((limit > left)) && limit=$left
	echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
	timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
	rc=${PIPESTATUS[0]}
	case $rc in
	0) verdict=ok ;;
	124 | 137) verdict="timed out" ;;
	*) verdict="failed (exit $rc)" ;;
	esac
	((rc == 0)) || failed=1
	summary+=("$(printf '%-20s %-22s %5ss' "$name" "$verdict" $((SECONDS - start)))")
}

step environment 30 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv &&
	python3 -c "import sys, torch, triton; print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__); assert torch.cuda.is_available(), \"torch sees no CUDA GPU\""'
if [[ ${summary[0]} != *" ok "* ]]; then
	echo "no usable CUDA GPU: stopping" | tee -a "$log"
	exit 1
fi

step cuda-tests 120 python3 -m pytest -m cuda tests -q -p no:cacheprovider
# the bench stops starting new groups after its own budget, so that its hard limit is rarely hit
bench_budget=$((budget - reserve - SECONDS - 30))
((bench_budget > 140)) && bench_budget=140
((bench_budget < 1)) && bench_budget=1
step seqpan-bench 170 python3 -m engine.cli bench --device cuda --workloads charades,activitynet,tacos \
	--precisions bf16,fp32 --batch-sizes 1,8,64,256,1024 --repeats 30 --warmup 5 --concurrency 1,8,32 \
	--time-budget "$bench_budget" --out "$out"
step block-benchmarks 45 python3 -m pytest bench -q -p no:cacheprovider --benchmark-json "$out/blocks.json" \
	--benchmark-max-time=0.1 --benchmark-min-rounds=10 --benchmark-columns=median,iqr,rounds
if [[ -f bench/kernel_timing.py ]]; then
	# --no-compile: compiling each block's reference would not fit the budget (run it alone for that)
	# Triton compiles every kernel variant first (~10 s each): bf16 only here, with the default blocks
	# and with every block capped at 32 (fewer spills: bench/results/kernel-resources-sm90.md)
	step kernel-timing 90 python3 -m bench.kernel_timing --no-compile --dtypes bf16 --iters 50 --block-caps 32 \
		--out "$out/kernel_timing.json"
fi
if [[ -f bench/localizer_timing.py ]]; then
	step localizer-timing 30 python3 -m bench.localizer_timing --dtype bf16 --iters 30 \
		--out "$out/localizer_timing.json"
fi
# I3D feature extraction (frames/s): batch 1 (the original's way) vs batched, fp32/bf16, with and
# without CUDA graphs; the end-to-end video rows need av and cv2, absent there (recorded as skipped)
step video-timing 60 python3 -m bench.video_timing --device cuda --precisions fp32,bf16 --batch-sizes 1,8,32 \
	--window 16 --windows 32 --repeats 3 --cuda-graphs both --video-frames 240 --out "$out/video_timing.json"

{
	echo
	if [[ -f $out/results.json ]]; then
		# a bench stopped at its limit leaves results.json only: render the full report from it
		[[ -f $out/results.md ]] || python3 -m bench.report "$out/results.json" >"$out/results.md"
		python3 -m bench.report "$out/results.json" --headline
	else
		echo "no results.json: seqpan bench wrote nothing"
	fi
	echo
	printf '%s\n' "${summary[@]}"
	echo "total ${SECONDS}s; full output under $out"
} 2>&1 | tee -a "$log"
exit "$failed"
