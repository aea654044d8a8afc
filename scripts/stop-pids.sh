# Sourced by the benchmark scripts: `stop_pids PID...` sends SIGTERM to each process, waits
# up to 5 s for each to exit, then SIGKILLs and reaps what is left.
# shellcheck shell=bash

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
