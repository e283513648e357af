#!/usr/bin/env bash
# Data-parallel run of run_mindformer.py on this machine with MindSpore's launcher (msrun), one process per rank:
#
#   scripts/run_distribute.sh N CONFIG [run_mindformer.py arguments ...]
#   scripts/run_distribute.sh 2 configs/clip/run_clip_demo_synthetic.yaml --run_mode train
#
# Adds --use_parallel True; runner_config.batch_size is per rank (global batch = N x batch_size). Picks a free
# master port (MASTER_PORT overrides it). Each rank logs to $LOG_DIR/worker_<rank>.log (default
# ./output/msrun_log), msrun's scheduler to scheduler.log, msrun itself to msrun.log. The console shows rank 0's
# output only (rank 0 alone prints the result), without MindSpore's own [INFO]/[WARNING] lines (GLOG_v=3 unless
# set; --verbose shows everything msrun prints). Exits with msrun's status; when it failed, the ranks that died
# (killed, crashed) and those whose logs hold an error are named, and the last line is the error itself.
# Several hosts: run msrun on each (README, "Distributed training").
set -euo pipefail

usage() { echo "usage: $0 N CONFIG [run_mindformer.py arguments ...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
WORKERS=$1; CONFIG=$2; shift 2
VERBOSE=0
ARGS=()
for arg in "$@"; do   # --verbose is this script's (run_mindformer.py has none)
    if [ "$arg" = "--verbose" ]; then VERBOSE=1; else ARGS+=("$arg"); fi
done
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || { echo "$0: N must be a positive number of ranks, got '$WORKERS'" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "$0: config file not found: $CONFIG" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
# msrun starts the ranks with the `python` first on PATH: make it the one that runs this script's environment
export PATH="$(dirname "$PYTHON"):$PATH"
MSRUN=$(command -v msrun) || { echo "$0: msrun not found (it comes with MindSpore >= 2.3)" >&2; exit 2; }
LOG_DIR=${LOG_DIR:-./output/msrun_log}
MASTER_PORT=${MASTER_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

# MindSpore's C++ log lines, and msrun's own, on the console only with --verbose (always in the log files)
NOISE='^\[(DEBUG|INFO|WARNING)\] |^Start (scheduler|worker) process|tail_worker_log|^\[[A-Z]+\] ME\('
[ "$VERBOSE" -eq 1 ] && NOISE='^$^'
[ "$VERBOSE" -eq 1 ] || export GLOG_v="${GLOG_v:-3}"

mkdir -p "$LOG_DIR"
set +e
"$MSRUN" --worker_num "$WORKERS" --local_worker_num "$WORKERS" --master_port "$MASTER_PORT" --log_dir "$LOG_DIR" \
    --join True --tail_worker_log 0 "$ROOT/run_mindformer.py" --config "$CONFIG" --use_parallel True \
    ${ARGS[@]+"${ARGS[@]}"} 2>&1 | tee "$LOG_DIR/msrun.log" | grep --line-buffered -v -E "$NOISE"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "$0: the distributed job failed (exit $status); logs in $LOG_DIR" >&2
    # workers msrun saw die (a kill, a crash): their rank from the pid each rank logs at start
    sed -n 's/.*Worker process \([0-9]*\) exit with exception. Error code: \(-\{0,1\}[0-9]*\).*/\1 \2/p' \
        "$LOG_DIR/msrun.log" | sort -u | while read -r pid code; do
        rank=$(grep -h -o "data-parallel rank [0-9]* of [0-9]* (pid $pid," "$LOG_DIR"/worker_*.log 2>/dev/null \
               | head -n 1 | sed 's/data-parallel rank \([0-9]*\).*/\1/')
        how="exit code $code"
        [ "${code#-}" != "$code" ] && how="killed by signal ${code#-}"
        echo "$0: rank ${rank:-?} (pid $pid) died: $how; see $LOG_DIR/worker_${rank:-N}.log" >&2
    done
    # ranks that reported an error; the same error on every rank is said once, as the last line
    errors=()
    for log in "$LOG_DIR"/worker_*.log; do
        [ -f "$log" ] || continue
        rank=${log##*worker_}; rank=${rank%.log}
        line=$(grep -E "run_mindformer.py: error:|^[A-Za-z.]*(Error|Exception): " "$log" | tail -n 1 || true)
        [ -z "$line" ] || errors+=("$rank"$'\t'"${line#run_mindformer.py: error: }")
    done
    if [ "${#errors[@]}" -gt 0 ]; then
        distinct=$(printf '%s\n' "${errors[@]}" | cut -f2- | sort -u | wc -l)
        if [ "$distinct" -eq 1 ]; then
            ranks=$(printf '%s\n' "${errors[@]}" | cut -f1 | sort -n | paste -sd, -)
            echo "$0: error: ${errors[0]#*$'\t'} (rank ${ranks})" >&2
        else
            for entry in "${errors[@]}"; do echo "$0: error: rank ${entry%%$'\t'*}: ${entry#*$'\t'}" >&2; done
        fi
    fi
fi
exit "$status"
