# Sourced by the benchmark scripts (bench-s3.sh, bench-cache.sh): process, port and
# readiness helpers. wait_ready uses the caller's LOGS directory and its log and die functions.
# shellcheck shell=bash

# stop_pids PID...: SIGTERM to each process, up to 5 s for each to exit, then SIGKILL and reap.
stop_pids() {
    local pid i
    for pid in "$@"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# free_port: a free 127.0.0.1 port on stdout, never one handed out before in this run.
USED_PORTS=" "
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Prints the HTTP status code of GET http://127.0.0.1:PORT/PATH, or nothing.
http_status() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
        IFS=' ' read -r -t 5 _ code _ <&3 || exit 1
        echo "$code"
    ) 2>/dev/null || true
}

# wait_ready NAME PID PORT PATH WANT_CODE(regex) SECONDS
wait_ready() {
    local name=$1 pid=$2 port=$3 path=$4 want=$5 secs=$6 code i
    for i in $(seq 1 $((secs * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOGS/$name.log" >&2 || true
            die "$name exited during startup (log: $LOGS/$name.log)"
        fi
        code="$(http_status "$port" "$path")"
        if [ -n "$code" ] && [[ "$code" =~ $want ]]; then
            log "$name ready on 127.0.0.1:$port (GET $path -> $code after ~$((i / 10))s)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$LOGS/$name.log" >&2 || true
    die "$name not ready after ${secs}s (log: $LOGS/$name.log)"
}
