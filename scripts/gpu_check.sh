#!/usr/bin/env bash
# The GPU check of issue 14 ("real size: GPU path ready"), one script for the day a GPU machine is
# lent: per family (pi05, then pi0, then smolvla) at the published size,
#   make      snapflow make-lerobot (random weights)         bench     torch latency (bench-lerobot)
#   distill   3 SnapFlow steps on the GPU                     export    decomposed ONNX (--fp16)
#   validate  parity of the export against its checkpoint     ort       onnxruntime latency per provider
# each timed, with the GPU memory peak sampled from nvidia-smi, under one budget; the first three
# for every family, then the last three for every family.
#
#   scripts/gpu_check.sh                 on the GPU machine (set up first, ~8 minutes in all)
#   scripts/gpu_check.sh --dry-run       the same plumbing on this CPU at tiny size (a few minutes)
#   scripts/gpu_check.sh --fetch-wheels  (here, with network) download requirements/gpu-image.txt
#                                        into .gpu-wheels/, which the lent machine (no network) needs
#
# Writes into $OUT (default: runs/gpu_check): gpu_table.json (rewritten after every step, so a run
# cut short leaves a valid partial report), gpu_table.md and gpu_check.log (the end of each step's
# output); three files, within what the device tool brings back. Big files go to GPU_CHECK_WORK.
#
# Environment (default on a GPU / with --dry-run):
#   GPU_CHECK_DEVICE     cuda / cpu                GPU_CHECK_SIZE      full / tiny
#   GPU_CHECK_DTYPE      bfloat16 / float32 (pi0, pi05; SmolVLA is float32)
#   GPU_CHECK_FAMILIES   "pi05 pi0 smolvla"
#   GPU_CHECK_STEPS      "make bench distill export validate ort" (each needs the one it builds on)
#   GPU_CHECK_PROVIDERS  "cuda tensorrt" / "cpu"   GPU_CHECK_FP16      1 (export --fp16; 0: fp32)
#   GPU_CHECK_BUDGET_S   480                       GPU_CHECK_REPEATS   30 / 5
#   GPU_CHECK_WORK       /tmp/snapflow-gpu-check   GPU_CHECK_GPU       0 (the GPU sampled)
#   GPU_CHECK_SETUP      auto: on a GPU without .venv but with .gpu-wheels/ (the lent machine), its
#                        image's python3 plus those wheels; else .venv (SNAPFLOW_ORT=gpu
#                        scripts/setup.sh on a GPU; on the CPU an existing .venv as it is);
#                        or "image" / "venv" to choose
# Exit status: 0 when every step that ran succeeded, 1 when one failed, 2 when setup failed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SNAPFLOW_VENV:-$repo/.venv}
lock=$repo/requirements/lock.txt
wheels=$repo/.gpu-wheels

die() { echo "gpu_check: error: $*" >&2; exit 2; }

fetch_wheels() {
    local pins=() name pattern pin pip=("python3" -m pip)
    [[ -x $venv/bin/python ]] && pip=("$venv/bin/python" -m pip)
    while read -r name; do
        [[ -z $name || $name == \#* ]] && continue
        pattern=$(sed 's/[-_.]/[-_.]/g' <<<"$name")
        pin=$(grep -i -m1 -E "^${pattern}==" "$lock") || die "$name (requirements/gpu-image.txt) is not in requirements/lock.txt"
        pins+=("$pin")
    done <"$repo/requirements/gpu-image.txt"
    rm -rf "$wheels" && mkdir -p "$wheels"
    # The lent machine: CPython 3.12 on x86_64 manylinux; --no-deps: the image has the rest.
    "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$wheels" "${pins[@]}" || die "downloading the wheels failed"
    # Ignored by git, so it travels only when the device call names it in `carry`.
    local exclude
    exclude=$(cd "$repo" && git rev-parse --git-path info/exclude)
    [[ $exclude == /* ]] || exclude=$repo/$exclude
    mkdir -p "$(dirname "$exclude")"
    grep -qxF '/.gpu-wheels/' "$exclude" 2>/dev/null || echo '/.gpu-wheels/' >>"$exclude"
    echo "gpu_check: $(ls "$wheels" | wc -l) wheels, $(du -sh "$wheels" | cut -f1), in $wheels (carry: [\".gpu-wheels\"])"
}

# The lent machine has no network: its python3 (torch, onnx, ...) plus the carried wheels, with
# snapflow_ros and snapflow_distill linked from the working tree as an editable install would.
setup_image() {
    local site=$1
    compgen -G "$wheels/*.whl" >/dev/null || die "no wheels in $wheels: run scripts/gpu_check.sh --fetch-wheels here first"
    rm -rf "$site" && mkdir -p "$site"
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    ln -sfn "$repo/snapflow_ros" "$site/snapflow_ros"
    ln -sfn "$repo/distill" "$site/snapflow_distill"
    # What the steps import, so that a missing or mismatched package fails here, by name.
    PYTHONPATH=$site python3 -c 'import onnx, onnxscript, onnxruntime, snapflow_ros.cli.main, snapflow_distill
import lerobot.policies.pi05, lerobot.policies.pi0, lerobot.policies.smolvla, lerobot.datasets.lerobot_dataset'
}

case ${1:-} in
    --fetch-wheels) fetch_wheels; exit 0 ;;
    --setup-image) setup_image "$2"; exit 0 ;;  # internal: run as a recorded step
    --dry-run) dry=1 ;;
    "") dry=0 ;;
    *) die "unknown argument ${1}; usage: scripts/gpu_check.sh [--dry-run | --fetch-wheels]" ;;
esac

if ((dry)); then
    device=${GPU_CHECK_DEVICE:-cpu} size=${GPU_CHECK_SIZE:-tiny} dtype=${GPU_CHECK_DTYPE:-float32}
else
    device=${GPU_CHECK_DEVICE:-cuda} size=${GPU_CHECK_SIZE:-full} dtype=${GPU_CHECK_DTYPE:-bfloat16}
fi
if [[ $device == cpu ]]; then default_providers=cpu default_repeats=5; else default_providers="cuda tensorrt" default_repeats=30; fi
providers=${GPU_CHECK_PROVIDERS:-$default_providers}
repeats=${GPU_CHECK_REPEATS:-$default_repeats}
families=${GPU_CHECK_FAMILIES:-pi05 pi0 smolvla}
steps=" ${GPU_CHECK_STEPS:-make bench distill export validate ort} "
budget=${GPU_CHECK_BUDGET_S:-480}
work=${GPU_CHECK_WORK:-/tmp/snapflow-gpu-check}
gpu=${GPU_CHECK_GPU:-0}
out=${OUT:-$repo/runs/gpu_check}
report=$out/gpu_table.json
deadline=$(($(date +%s) + budget))

mkdir -p "$out" "$work"
rm -f "$report" "$out/gpu_table.md" "$out/gpu_check.log"
# The step runner needs only the standard library: it runs before the environment exists.
runner() { python3 "$repo/snapflow_ros/runtime/gpu_check.py" "$@"; }
runner config --report "$report" device="$device" size="$size" dtype="$dtype" families="$families" \
    steps="${steps# }" providers="$providers" fp16="${GPU_CHECK_FP16:-1}" budget_s="$budget" repeats="$repeats" \
    dry_run="$dry"
step() {  # step FAMILY STEP [--result FILE --key KEY] -- COMMAND...
    local family=$1 name=$2
    shift 2
    runner step --report "$report" --family "$family" --step "$name" --log-dir "$work/logs" \
        --deadline "$deadline" --gpu "$gpu" "$@"
}

# --- setup ---------------------------------------------------------------------------------------
setup=${GPU_CHECK_SETUP:-auto}
if [[ $setup == auto ]]; then
    # The lent machine: a GPU, no venv (it does not travel) and the carried wheels.
    if [[ $device != cpu && ! -x $venv/bin/python && -d $wheels ]]; then setup=image; else setup=venv; fi
fi
case $setup in
    image)
        step setup image -- bash "${BASH_SOURCE[0]}" --setup-image "$work/site" || die "setup failed (see $out/gpu_check.log)"
        export PYTHONPATH=$work/site${PYTHONPATH:+:$PYTHONPATH}
        py=python3 ;;
    venv)
        if [[ $device != cpu ]]; then
            step setup venv -- env SNAPFLOW_ORT=gpu SNAPFLOW_VENV="$venv" "$repo/scripts/setup.sh" \
                || die "setup failed (see $out/gpu_check.log)"
        elif ! "$venv/bin/python" -c 'import snapflow_ros, lerobot, onnxruntime' 2>/dev/null; then
            step setup venv -- env SNAPFLOW_VENV="$venv" "$repo/scripts/setup.sh" || die "setup failed (see $out/gpu_check.log)"
        fi
        py=$venv/bin/python ;;
    *) die "GPU_CHECK_SETUP=$setup: expected auto, image or venv" ;;
esac
snapflow=("$py" -m snapflow_ros.cli.main)
env_flags=()
[[ $device == cpu ]] || env_flags=(--require-cuda)
step setup env -- "$py" -m snapflow_ros.runtime.gpu_check env --report "$report" "${env_flags[@]}" \
    || die "the environment is not usable on $device (see $out/gpu_check.log)"
usable=$("$py" -m snapflow_ros.runtime.gpu_check providers) || die "could not list onnxruntime's providers"
usable=" ${usable//$'\n'/ } "

# The synthetic task's data only shapes the checkpoint (features, normalisation) and feeds three
# training steps and a batch-1 benchmark: a few samples, not its default 4096.
data_flags=(--samples 64 --holdout 8)
export_flags=()
[[ ${GPU_CHECK_FP16:-1} == 1 ]] && export_flags=(--fp16)

# --- per family ------------------------------------------------------------------------------------
declare -A status=()
failed=0
# run FAMILY STEP NEEDS [--result FILE --key KEY] -- COMMAND...: only the wanted steps, and only once
# the step they build on succeeded.
run() {
    local family=$1 name=$2 needs=$3
    shift 3
    [[ $steps == *" ${name%%-*} "* ]] || return 0
    if [[ -n $needs && ${status[$family/$needs]:-} != ok ]]; then
        runner skip --report "$report" --family "$family" --step "$name" \
            --reason "needs $family/$needs (${status[$family/$needs]:-not run})"
        status[$family/$name]=skipped
        return 0
    fi
    local rc=0
    step "$family" "$name" "$@" || rc=$?
    case $rc in
        0) status[$family/$name]=ok ;;
        75) status[$family/$name]=skipped ;;   # too little budget left to start it
        124) status[$family/$name]=timeout ;;  # stopped at the end of the budget
        *) status[$family/$name]=failed ;;
    esac
    ((rc == 0)) || failed=1
}
skip() {  # skip FAMILY STEP REASON
    [[ $steps == *" ${2%%-*} "* ]] || return 0
    runner skip --report "$report" --family "$1" --step "$2" --reason "$3"
}

paths() {  # the family's dtype, its checkpoint (where bench-lerobot --workdir $work looks), student, export
    fdtype=$dtype
    [[ $1 == smolvla ]] && fdtype=float32  # LeRobot's SmolVLA has no dtype setting
    checkpoint=$work/$size-$fdtype/$1 student=$work/$1-run onnx=$work/$1-onnx
}
# Two passes, each pi05 first: the torch numbers of every family before any export, which takes
# the longest at full size and is the first to be cut by the budget.
for family in $families; do
    paths "$family"
    rm -rf "$checkpoint" "$student" "$onnx"
    run "$family" make "" -- "${snapflow[@]}" make-lerobot --family "$family" --size "$size" --dtype "$fdtype" \
        --output "$checkpoint" "${data_flags[@]}"
    run "$family" bench make --result "$work/bench_$family.json" --key torch -- \
        "${snapflow[@]}" bench-lerobot --size "$size" --dtype "$fdtype" --families "$family" --device "$device" \
        --workdir "$work" --repeats "$repeats" --json "$work/bench_$family.json" "${data_flags[@]}"
    run "$family" distill make --result "$student/metrics.jsonl" --key distill -- \
        "${snapflow[@]}" distill "$checkpoint" --steps 3 --batch-size 4 --device "$device" --output "$student" \
        --checkpoint-every 0 --log-every 1 "${data_flags[@]}"
    # Full-size checkpoints are many GB each: the student is all the second pass needs.
    [[ $device == cpu ]] || rm -rf "$checkpoint"
done
for family in $families; do
    paths "$family"
    run "$family" export distill -- "${snapflow[@]}" export "$student/policy" --output "$onnx" "${export_flags[@]}"
    if [[ $device != cpu && $usable != *" CUDAExecutionProvider "* ]]; then
        # The fp16 graphs of a full-size model on onnxruntime's CPU provider would not fit the budget.
        skip "$family" validate "onnxruntime has no usable GPU provider (usable:${usable% })"
    else
        run "$family" validate export --result "$work/validate_$family.json" --key validate -- \
            "${snapflow[@]}" validate "$onnx" --reference "$student/policy" --threshold 5e-2 \
            --json "$work/validate_$family.json"
    fi
    for provider in $providers; do
        case $provider in
            cuda) needed=CUDAExecutionProvider ;;
            tensorrt) needed=TensorrtExecutionProvider ;;
            cpu) needed=CPUExecutionProvider ;;
            *) die "GPU_CHECK_PROVIDERS: unknown provider $provider (cuda, tensorrt, cpu)" ;;
        esac
        if [[ $usable != *" $needed "* ]]; then
            skip "$family" "ort-$provider" "onnxruntime cannot use $needed here (usable:${usable% })"
            continue
        fi
        run "$family" "ort-$provider" export --result "$work/ort_${family}_$provider.json" --key "onnxruntime.$provider" -- \
            "$py" -m snapflow_ros.runtime.gpu_check ort-bench "$onnx" --provider "$provider" --repeats "$repeats" \
            --device-id "$gpu" --json "$work/ort_${family}_$provider.json"
    done
    [[ $device == cpu ]] || rm -rf "$student" "$onnx"
done

runner finish --report "$report"
echo "gpu_check: report in $report and $out/gpu_table.md"
cat "$out/gpu_table.md"
exit "$failed"
