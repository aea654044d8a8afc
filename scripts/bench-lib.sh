# Sourced by the benchmark scripts (bench-s3.sh, bench-cache.sh, bench-images-http.sh):
# process, port and readiness helpers, and a Pixelport daemon on the embedded store.
# wait_ready and start_pixelport use the caller's LOGS directory and its log and die functions.
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

# pixelport_config S3_KEYS IMAGES_KEYS EXTRA_TABLES: a config on stdout for the embedded
# store in PP_DATA, listeners on 127.0.0.1:PP_S3, PP_IMG and PP_ADMIN, the S3 keys AK and SK
# in REGION (us-east-1 when unset) and warn-level text logs. S3_KEYS and IMAGES_KEYS are more
# lines of [s3] and [images]; EXTRA_TABLES follow the rest (e.g. "[cache]" and its keys).
pixelport_config() {
    cat <<EOF
[server]
data_dir = "$PP_DATA"
log_format = "text"
log_level = "warn"
[s3]
listen = "127.0.0.1:$PP_S3"
access_key = "$AK"
secret_key = "$SK"
region = "${REGION:-us-east-1}"
$1
[images]
listen = "127.0.0.1:$PP_IMG"
$2
[admin]
listen = "127.0.0.1:$PP_ADMIN"
[store]
kind = "embedded"
$3
EOF
}

# start_pixelport BIN CONFIG: `BIN serve --config CONFIG` in the background (RUST_LOG from
# BENCH_RUST_LOG, warn by default; output in $LOGS/pixelport.log), its pid added to PIDS,
# then up to 60 s for the admin listener's /health to answer 200.
start_pixelport() {
    RUST_LOG="${BENCH_RUST_LOG:-warn}" "$1" serve --config "$2" \
        >"$LOGS/pixelport.log" 2>&1 </dev/null &
    PIDS+=($!)
    wait_ready pixelport "$!" "$PP_ADMIN" /health '^200$' 60
}

# upload_photos BUCKET DIR NAME...: creates BUCKET on 127.0.0.1:PP_S3 and PUTs each DIR/NAME
# as key NAME, with boto3 from $PYTHON and the keys AK and SK; prints each size on stderr.
upload_photos() {
    AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" AWS_DEFAULT_REGION="${REGION:-us-east-1}" \
        AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        "$PYTHON" - "http://127.0.0.1:$PP_S3" "$@" <<'PY' >&2
import sys, boto3
from botocore.config import Config
endpoint, bucket, folder, *names = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint,
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
s3.create_bucket(Bucket=bucket)
for name in names:
    with open(f"{folder}/{name}", "rb") as f:
        s3.put_object(Bucket=bucket, Key=name, Body=f.read())
    size = s3.head_object(Bucket=bucket, Key=name)["ContentLength"]
    print(f"uploaded s3://{bucket}/{name} ({size} bytes)")
PY
}
