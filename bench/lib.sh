# shellcheck shell=bash
# Shared by bench/run and bench/profile. Source it; do not run it.
#
# Provides: bench_tools_ready (installs nginx, wrk, redis, perf from Debian when root, else names
# what is missing), bench_build, start_stack (redis, fake upstream, nginx, broker with the memory
# store, broker with Redis; each on a free loopback port), restart_brokers (fresh state),
# pin_layout one|split, and the readings
# proc_ticks, rss_kib, redis_commands, upstream_stats. Every process started here is killed (by its
# pid) when the sourcing script exits.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

BENCH_DIR="$REPO_ROOT/bench"
RELEASE="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"
# CPU 0 runs the load generator, the upstream and Redis; the proxy runs there too (layout one) or
# alone on CPU 1 (layout split).
LOAD_CPU=0
PROXY_CPU_SPLIT=1
PIDS=()
WORK=""

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n "$WORK" && -z "${KEEP_WORK:-}" ]] && rm -rf "$WORK"
    return 0
}

# bench_tools_ready [perf]: every command the harness runs, installed from Debian when we are root.
bench_tools_ready() {
    local -A package=([nginx]=nginx [wrk]=wrk [redis-server]=redis-server [redis-cli]=redis-tools
        [taskset]=util-linux [python3]=python3 [perf]=linux-perf)
    local wanted=(nginx wrk redis-server redis-cli taskset python3 cargo) missing=() cmd
    [[ "${1:-}" == perf ]] && wanted+=(perf)
    for cmd in "${wanted[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    ((${#missing[@]})) || return 0
    local packages=()
    for cmd in "${missing[@]}"; do
        [[ -n "${package[$cmd]:-}" ]] || die "missing $cmd (install it and re-run)"
        packages+=("${package[$cmd]}")
    done
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing the Debian packages ${packages[*]} (for ${missing[*]})"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null
        require_tools "${missing[@]}"
        return 0
    fi
    die "missing ${missing[*]}: install the Debian packages ${packages[*]} (sudo apt-get install -y ${packages[*]}), or run as root so this script installs them"
}

bench_build() {
    echo "building session-broker, fake-upstream and mcp-load (release)"
    cargo build --release --bin session-broker --bin fake-upstream --bin mcp-load -q \
        || die "cargo build --release failed"
    BROKER="$RELEASE/session-broker"
    FAKE="$RELEASE/fake-upstream"
    LOAD="$RELEASE/mcp-load"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port, name
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "$2 never listened on 127.0.0.1:$1 (logs in $WORK)"
}

# start_stack: sets URL_direct URL_nginx URL_memory URL_redis, PID_of_<target> (the proxy's pids,
# space separated), PID_upstream, PID_redisd, REDIS_PORT, UPSTREAM_PORT. The brokers' ports stay
# the same across restart_brokers.
start_stack() {
    WORK=$(mktemp -d /tmp/msb-bench.XXXXXX)
    trap bench_cleanup EXIT
    export RUST_LOG=${RUST_LOG:-warn}
    export BROKER_SIGNING_KEY=bench-signing-key-0123456789abcdef0123456789
    REDIS_PORT=$(free_port)
    taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    PIDS+=($!) PID_redisd=$!
    wait_port "$REDIS_PORT" redis-server

    UPSTREAM_PORT=$(free_port)
    local sse=()
    [[ "${REPLY_MODE:-sse}" == sse ]] && sse=(--sse)
    taskset -c "$LOAD_CPU" "$FAKE" --listen "127.0.0.1:$UPSTREAM_PORT" "${sse[@]}" >"$WORK/upstream.log" 2>&1 &
    PIDS+=($!) PID_upstream=$!
    wait_port "$UPSTREAM_PORT" fake-upstream
    URL_direct="http://127.0.0.1:$UPSTREAM_PORT/mcp"
    PID_of_direct=""

    local nginx_port
    nginx_port=$(free_port)
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  upstream mcp { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$nginx_port;
    location / { proxy_pass http://mcp; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering off; } } }
CONF
    nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx/stdout.log" 2>&1 &
    local master=$! worker="" _
    PIDS+=("$master")
    wait_port "$nginx_port" nginx
    for _ in $(seq 100); do
        worker=$(pgrep -P "$master" | tr '\n' ' ') && [[ -n "$worker" ]] && break
        sleep 0.05
    done
    [[ -n "$worker" ]] || die "nginx started no worker (logs in $WORK/nginx)"
    PID_of_nginx="$master $worker"
    URL_nginx="http://127.0.0.1:$nginx_port/mcp"

    MEMORY_PORT=$(free_port)
    REDIS_BROKER_PORT=$(free_port)
    URL_memory="http://127.0.0.1:$MEMORY_PORT/mcp"
    URL_redis="http://127.0.0.1:$REDIS_BROKER_PORT/mcp"
    start_brokers
}

# start_brokers: the broker with each store, on one thread each (BROKER_THREADS, default 1: its
# --worker-threads), on their fixed ports.
# BROKER_ENV: extra VAR=value words for the brokers' environment only (an allocator tunable, say),
# so that nginx, the upstream and the load generators run as always.
start_brokers() {
    local common=(--upstream "$URL_direct" --admin-listen off --drain-timeout 1s --worker-threads "${BROKER_THREADS:-1}")
    local extra=()
    read -r -a extra <<<"${BROKER_ENV:-}"
    env "${extra[@]}" "$BROKER" --listen "127.0.0.1:$MEMORY_PORT" "${common[@]}" \
        >>"$WORK/broker-memory.log" 2>&1 &
    PIDS+=($!) PID_of_memory=$!
    env "${extra[@]}" "$BROKER" --listen "127.0.0.1:$REDIS_BROKER_PORT" "${common[@]}" \
        --redis-url "redis://127.0.0.1:$REDIS_PORT/0" >>"$WORK/broker-redis.log" 2>&1 &
    PIDS+=($!) PID_of_redis=$!
    wait_port "$MEMORY_PORT" "broker (memory)"
    wait_port "$REDIS_BROKER_PORT" "broker (redis)"
}

# restart_brokers: both brokers stopped (by pid) and started again on an empty Redis, so that what a
# workload leaves in the store (one MCP-session link per connector turn, today) does not weigh on
# the next; the caller pins them again.
restart_brokers() {
    local pid kept=()
    kill "$PID_of_memory" "$PID_of_redis"
    wait "$PID_of_memory" "$PID_of_redis" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        [[ "$pid" == "$PID_of_memory" || "$pid" == "$PID_of_redis" ]] || kept+=("$pid")
    done
    PIDS=("${kept[@]}")
    redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
    start_brokers
}

# pin_layout one|split: the proxies (every thread) on CPU 0 with everything else, or alone on CPU 1.
pin_layout() {
    local cpu=$LOAD_CPU pid
    [[ "$1" == split ]] && cpu=$PROXY_CPU_SPLIT
    # shellcheck disable=SC2086
    for pid in $PID_of_nginx $PID_of_memory $PID_of_redis; do
        taskset -a -cp "$cpu" "$pid" >/dev/null
    done
}

# proc_ticks PID...: user + system CPU time of the processes (all threads), in clock ticks.
proc_ticks() {
    local pid total=0 fields
    for pid in "$@"; do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat") # skip "pid (comm) ", comm may hold spaces
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$total"
}

# rss_kib PID: resident memory in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# redis_commands: "reads=N total=N evalsha=N get=N ..." so far: reads is total_reads_processed (one
# per request a client sent, plus one per connection closed: two per redis-cli call like this one),
# the rest are INFO commandstats calls (commands run by scripts included).
redis_commands() {
    redis-cli -p "$REDIS_PORT" INFO all | tr -d '\r' | awk -F'[:=,]' '
        /^total_reads_processed:/ { reads = $2 }
        /^cmdstat_/ { name = substr($1, 9); total += $3; out = out " " name "=" $3 }
        END { print "reads=" reads " total=" total out }'
}

# upstream_stats: the fake upstream's request counts, one JSON object.
upstream_stats() {
    exec 3<>"/dev/tcp/127.0.0.1/$UPSTREAM_PORT"
    printf 'GET /stats HTTP/1.0\r\nHost: x\r\n\r\n' >&3
    tail -n1 <&3
    exec 3<&-
}

# threads PID: how many threads the process runs (the broker: one tokio worker + blocking pool).
threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
