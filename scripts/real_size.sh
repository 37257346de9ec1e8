#!/usr/bin/env bash
# The full-size chain per family on this machine (CPU): make-lerobot --size full -> distill
# --steps 2 -> export --fp16 -> validate -> bench-lerobot --size full, each step timed with its
# peak RSS (GNU time). Results: runs/real-size/<family>/*.log and runs/real-size/summary.jsonl.
#
#   scripts/real_size.sh [FAMILY...]        default: smolvla pi05 pi0
# Environment: DTYPE (default bfloat16 for pi0/pi0.5; SmolVLA is float32), REPEATS (default 3).
# A teacher or student already written by an earlier (cut-off) run is reused, not rebuilt.
set -uo pipefail
cd "$(dirname "$0")/.."
snapflow=.venv/bin/snapflow
out=runs/real-size
mkdir -p "$out"
families=("$@")
[[ ${#families[@]} -gt 0 ]] || families=(smolvla pi05 pi0)

step() {  # step FAMILY NAME COMMAND...: run, log, append {family, step, rc, seconds, peak_rss_gb}
    local family=$1 name=$2; shift 2
    local log=$out/$family/$name.log
    mkdir -p "$out/$family"
    echo "real-size: $family $name: $*" >&2
    /usr/bin/time -v "$@" >"$log" 2>&1
    local rc=$?
    local rss seconds
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.2f", $2 / 1e6}' "$log")
    seconds=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$log")
    printf '{"family": "%s", "step": "%s", "rc": %d, "seconds": %s, "peak_rss_gb": %s}\n' \
        "$family" "$name" "$rc" "${seconds:-null}" "${rss:-null}" | tee -a "$out/summary.jsonl" >&2
    return $rc
}

for family in "${families[@]}"; do
    dtype=${DTYPE:-bfloat16}
    [[ $family == smolvla ]] && dtype=float32
    w=$out/$family
    [[ -f $w/teacher/model.safetensors ]] || step "$family" make $snapflow make-lerobot --family "$family" --size full --dtype "$dtype" --output "$w/teacher" || continue
    [[ -f $w/run/policy/model.safetensors ]] || step "$family" distill $snapflow distill "$w/teacher" --output "$w/run" --steps 2 --batch-size 1 \
        --samples 16 --holdout 4 --checkpoint-every 0 --log-every 1 --device cpu --gradient-checkpointing || continue
    step "$family" export $snapflow export "$w/run/policy" --output "$w/onnx" --fp16 || continue
    step "$family" validate $snapflow validate "$w/onnx" --reference "$w/run/policy" --threshold 5e-2 \
        --json "$w/validate.json" || true
    rm -rf "$w/onnx" "$w/run/policy"  # 7-8 GB each at full size; the numbers are in the logs
    # bench-lerobot measures the teacher built above (it builds one under WORKDIR/full-DTYPE/FAMILY).
    mkdir -p "$out/bench/full-$dtype"
    ln -sfn "$(realpath "$w/teacher")" "$out/bench/full-$dtype/$family"
    step "$family" bench $snapflow bench-lerobot --size full --dtype "$dtype" --families "$family" \
        --workdir "$out/bench" --repeats "${REPEATS:-3}" --device cpu --json "$w/bench.json" || true
done
