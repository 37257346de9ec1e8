#!/usr/bin/env bash
# The real-time chunking sweep of the README: record two tasks, train a 16-action teacher (plain
# flow matching, as users' teachers are), distil a student with --max-delay, then sim-eval every
# chunking method at 0/100/200/300 ms of simulated inference latency. Each stage is skipped when its
# output exists, so a cut-off run resumes. Usage: scripts/rtc_sweep.sh [WORKDIR] (default runs/rtc);
# TEACHER_MAX_DELAY=8 trains the teacher with committed prefixes too (default 0: plain).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/rtc}
TEACHER_MAX_DELAY=${TEACHER_MAX_DELAY:-0}
SNAPFLOW=.venv/bin/snapflow
TASKS=(reach-detour reach)
mkdir -p "$WORK"

for task in "${TASKS[@]}"; do
  [ -d "$WORK/bags/$task" ] || $SNAPFLOW sim-record --task "$task" --episodes 40 --seed 0 \
    --output "$WORK/bags/$task" --bag-config "$WORK/bag_dataset.yaml"
done
BAGS=("${TASKS[@]/#/$WORK/bags/}")

# 16 actions (0.8 s at 20 Hz) leave room for a committed prefix of up to 300 ms (6 steps).
[ -d "$WORK/teacher/policy" ] || $SNAPFLOW train-teacher --bags "${BAGS[@]}" --bag-config "$WORK/bag_dataset.yaml" \
  --output "$WORK/teacher" --chunk-size 16 --steps 3000 --max-delay "$TEACHER_MAX_DELAY"
[ -d "$WORK/student/policy" ] || $SNAPFLOW distill "$WORK/teacher/policy" --bags "${BAGS[@]}" \
  --bag-config "$WORK/bag_dataset.yaml" --output "$WORK/student" --steps 2000 --max-delay 8

# The chunk timer every 4 steps (200 ms); past 200 ms of latency the next chunk starts on arrival.
$SNAPFLOW sim-eval --teacher "$WORK/teacher/policy" --student "$WORK/student/policy" --tasks "${TASKS[@]}" \
  --episodes 20 --seed 1000 --replan-every 4 --chunking plain blend rtc --latency-ms 0 100 200 300 \
  --json "$WORK/report.json" --plot "$WORK/success_vs_latency.svg"
