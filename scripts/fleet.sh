#!/usr/bin/env bash
# A fleet on one machine, on 127.0.0.1 only: a real redis-server, the sandbox EHR
# (`portico sandbox`), N gateways (`portico serve --config`, default 3) sharing that Redis
# with one encryption key and one cursor key file, and nginx as a round-robin load
# balancer in front of them — what deploy/kubernetes/ runs, without Kubernetes.
#
#   scripts/fleet.sh                      # start, print where to sign in; Ctrl-C stops all
#   scripts/fleet.sh --replicas 5 --port 9000
#   scripts/fleet.sh --detach             # start, write the state file, exit (for tests)
#   scripts/fleet.sh --stop               # stop a detached fleet
#   scripts/fleet.sh --restart-gateways   # detached fleet: restart every gateway, one at a
#                                         # time, re-reading its config and key files
#                                         # (--only I: gateway I alone, 1-based)
#   scripts/fleet.sh --redis stop|start   # detached fleet: kill Redis / start it again on
#                                         # its port (empty: nothing is persisted)
#
# Flags: --replicas N (3), --port P (the balancer, 8080), --patients N (sandbox, 50),
# --binary PATH (default: `cargo build -p portico`, then
# ${CARGO_TARGET_DIR:-target}/debug/portico), --state FILE (target/fleet.state),
# --nginx PATH (nginx on PATH, else /usr/sbin/nginx), --redis-server PATH (redis-server).
#
# Every gateway has the same public_url (the balancer's URL), so a login may start on one
# replica and finish on another; the sandbox's system and portal client secrets are read
# from its banner (its log) and given to the gateways in their environment, not in their
# config files. Debian's redis-server and nginx come from scripts/install-deps.sh; no system
# service is used. Logs, configs and keys live in a temporary directory (printed), removed
# when the fleet stops.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

replicas=3
lb_port=8080
patients=50
binary=
state=target/fleet.state
detach=0
action=start
redis_action=
only=
nginx_bin=${NGINX:-}
redis_bin=${PORTICO_REDIS_SERVER:-redis-server}

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "fleet: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --replicas) replicas=$2; shift 2 ;;
        --port) lb_port=$2; shift 2 ;;
        --patients) patients=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --state) state=$2; shift 2 ;;
        --nginx) nginx_bin=$2; shift 2 ;;
        --redis-server) redis_bin=$2; shift 2 ;;
        --detach) detach=1; shift ;;
        --stop) action=stop; shift ;;
        --restart-gateways) action=restart; shift ;;
        --only) only=$2; shift 2 ;;
        --redis) action=redis; redis_action=${2:-}; shift 2 || die "--redis needs stop or start" ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ $replicas =~ ^[1-9][0-9]?$ ]] || die "--replicas must be 1 to 99, not '$replicas'"
[[ $lb_port =~ ^[0-9]+$ ]] && ((lb_port > 0 && lb_port < 65536)) || die "--port must be a port number"
case "$state" in /*) ;; *) state="$root/$state" ;; esac

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port_free() {
    python3 -c 'import socket, sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# Whether process $1 runs (an exited child not yet waited for is a zombie: its command
# line is empty, and `kill -0` would still succeed).
alive() {
    [[ -n $1 && -n $({ tr -d '\0' <"/proc/$1/cmdline"; } 2>/dev/null) ]]
}

# Waits until `curl` gets a 2xx from $1 (at most $2 seconds) while process $3 lives.
wait_http() {
    local url=$1 seconds=$2 pid=$3 name=$4 i
    for ((i = 0; i < seconds * 10; i++)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
        alive "$pid" || { echo "fleet: $name exited; its log:" >&2; tail -n 30 "$work/$name.log" >&2; return 1; }
        sleep 0.1
    done
    echo "fleet: $name did not answer $url within ${seconds}s; its log:" >&2
    tail -n 30 "$work/$name.log" >&2
    return 1
}

# Whether process $1 is alive and is the one we started (its command line names $2).
ours() {
    [[ -n $1 ]] && { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qF -- "$2"
}

# SIGTERM, up to 10 s, then SIGKILL; only if the process is still the one we started.
stop_pid() {
    local pid=$1 marker=$2 i
    ours "$pid" "$marker" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        ours "$pid" "$marker" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Starts a command in the background with its output in $work/<name>.log, in a session
# of its own: a detached fleet outlives this script, and Ctrl-C reaches only this script,
# which then stops the fleet in order (balancer, gateways, sandbox, Redis). Sets $started.
start_bg() {
    local name=$1; shift
    setsid "$@" </dev/null >>"$work/$name.log" 2>&1 &
    started=$!
}

write_state() {
    mkdir -p "$(dirname "$state")"
    local tmp="$state.tmp"
    {
        echo "# A detached Portico fleet (scripts/fleet.sh). Stop it with: scripts/fleet.sh --stop --state $state"
        echo "WORK=$work"
        echo "BINARY=$binary"
        echo "LB_PORT=$lb_port"
        echo "EHR_PORT=$ehr_port"
        echo "REDIS_PORT=$redis_port"
        echo "GW_PORTS=\"${gw_ports[*]}\""
        echo "REDIS_PID=$redis_pid"
        echo "SANDBOX_PID=$sandbox_pid"
        echo "GW_PIDS=\"${gw_pids[*]}\""
        echo "NGINX_PID=$nginx_pid"
        echo "PUBLIC_URL=http://127.0.0.1:$lb_port"
        echo "CURSOR_KEY_FILE=$work/cursor-keys"
    } >"$tmp"
    mv -f "$tmp" "$state"
}

load_state() {
    [[ -r $state ]] || die "no detached fleet: $state does not exist"
    # shellcheck disable=SC1090
    source "$state"
    work=$WORK binary=$BINARY lb_port=$LB_PORT ehr_port=$EHR_PORT redis_port=$REDIS_PORT
    read -r -a gw_ports <<<"$GW_PORTS"
    read -r -a gw_pids <<<"$GW_PIDS"
    redis_pid=$REDIS_PID sandbox_pid=$SANDBOX_PID nginx_pid=$NGINX_PID
}

start_redis() {
    mkdir -p "$work/redis"
    start_bg redis "$redis_bin" --port "$redis_port" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --dir "$work/redis"
    redis_pid=$started
    local i
    for ((i = 0; i < 100; i++)); do
        if redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG; then return 0; fi
        alive "$redis_pid" || { tail -n 20 "$work/redis.log" >&2; die "redis-server exited"; }
        sleep 0.1
    done
    die "redis-server did not answer PING on $redis_port"
}

# The system and portal clients' secrets, from the sandbox's banner.
read_secrets() {
    local i
    for ((i = 0; i < 100; i++)); do
        system_secret=$(sed -n 's/^ *portico-system *secret \([^ ]*\).*/\1/p' "$work/sandbox.log" | head -n1)
        portal_secret=$(sed -n 's/^ *portico-portal *secret \([^ ]*\).*/\1/p' "$work/sandbox.log" | head -n1)
        [[ -n $system_secret && -n $portal_secret ]] && return 0
        sleep 0.1
    done
    die "the sandbox banner named no client secrets (see $work/sandbox.log)"
}

gateway_config() {
    local i=$1 port=$2
    cat >"$work/gw-$i.toml" <<EOF
# Replica $i of the fleet (scripts/fleet.sh).
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$lb_port"

[log]
format = "text"
level = "info,tower_http=warn"

[ehr]
profile = "generic-r4"

[portal]
payment_processor = "sandbox"

[upstream]
base_url = "http://127.0.0.1:$ehr_port/fhir"

[upstream.auth]
type = "client_credentials"
token_url = "http://127.0.0.1:$ehr_port/auth/token"
client_id = "portico-system"
client_secret_env = "PORTICO_UPSTREAM_CLIENT_SECRET"
scope = "system/*.read system/*.write"

[auth]
issuer = "http://127.0.0.1:$ehr_port/auth"

[audit]
path = "$work/gw-$i-audit.jsonl"
instance = "fleet-$i"

[facade]
cursor_key_file = "$work/cursor-keys"

[login]
client_id = "portico-portal"
client_secret_env = "PORTICO_PORTAL_CLIENT_SECRET"

[redis]
url = "redis://127.0.0.1:$redis_port/0"
key_prefix = "portico:"
encryption_key_file = "$work/redis-key"
EOF
}

# Starts gateway $1 (1-based) on its port and waits until /readyz answers 200.
start_gateway() {
    local i=$1 port=${gw_ports[$1 - 1]}
    start_bg "gw-$i" env PORTICO_UPSTREAM_CLIENT_SECRET="$system_secret" \
        PORTICO_PORTAL_CLIENT_SECRET="$portal_secret" \
        "$binary" serve --config "$work/gw-$i.toml"
    gw_pids[$i - 1]=$started
}

wait_gateway() {
    local i=$1
    wait_http "http://127.0.0.1:${gw_ports[$i - 1]}/readyz" 60 "${gw_pids[$i - 1]}" "gw-$i"
}

start_nginx() {
    mkdir -p "$work/nginx"
    {
        echo "worker_processes 1;   # one worker: one round-robin rotation over the replicas"
        echo "pid $work/nginx/nginx.pid;"
        echo "error_log $work/nginx/error.log warn;"
        echo "events { worker_connections 1024; }"
        echo "http {"
        echo "    log_format fleet '\$request_method \$request_uri \$status upstream=\$upstream_addr';"
        echo "    access_log $work/nginx/access.log fleet;"
        for t in client_body proxy fastcgi uwsgi scgi; do
            echo "    ${t}_temp_path $work/nginx/$t;"
        done
        echo "    upstream portico {"
        for port in "${gw_ports[@]}"; do
            echo "        server 127.0.0.1:$port;"
        done
        echo "        keepalive 16;"
        echo "    }"
        echo "    server {"
        echo "        listen 127.0.0.1:$lb_port;"
        echo "        client_max_body_size 2m;"
        echo "        location / {"
        echo "            proxy_pass http://portico;"
        echo "            proxy_http_version 1.1;"
        echo "            proxy_set_header Connection \"\";"
        echo "            proxy_set_header Host \$http_host;"
        echo "            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
        echo "            proxy_read_timeout 60s;"
        echo "        }"
        echo "    }"
        echo "}"
    } >"$work/nginx.conf"
    start_bg nginx "$nginx_bin" -c "$work/nginx.conf" -p "$work/nginx" -g 'daemon off;'
    nginx_pid=$started
    wait_http "http://127.0.0.1:$lb_port/healthz" 20 "$nginx_pid" nginx
}

stop_all() {
    # Front to back: the balancer, the gateways, the sandbox, Redis.
    stop_pid "${nginx_pid:-}" "$work/nginx.conf"
    local i stoppers=()
    for ((i = 1; i <= ${#gw_pids[@]}; i++)); do
        stop_pid "${gw_pids[$i - 1]:-}" "$work/gw-$i.toml" &
        stoppers+=($!)
    done
    # Only these: a bare `wait` would also wait for the fleet's own processes.
    ((${#stoppers[@]} == 0)) || wait "${stoppers[@]}"
    stop_pid "${sandbox_pid:-}" "sandbox --port $ehr_port"
    stop_pid "${redis_pid:-}" "127.0.0.1:$redis_port"
}

case "$action" in
    stop)
        load_state
        stop_all
        rm -rf -- "$work"
        rm -f -- "$state"
        echo "fleet: stopped (balancer :$lb_port)"
        exit 0
        ;;
    restart)
        load_state
        detach=1
        read_secrets
        for ((i = 1; i <= ${#gw_ports[@]}; i++)); do
            [[ -z $only || $only == "$i" ]] || continue
            stop_pid "${gw_pids[$i - 1]}" "$work/gw-$i.toml"
            start_gateway "$i"
            wait_gateway "$i" || die "gateway $i did not come back"
            write_state
        done
        echo "fleet: restarted ${only:+gateway $only of }${#gw_ports[@]} gateways"
        exit 0
        ;;
    redis)
        load_state
        detach=1
        case "$redis_action" in
            stop) stop_pid "$redis_pid" "127.0.0.1:$redis_port"; echo "fleet: redis stopped" ;;
            start)
                ours "$redis_pid" "127.0.0.1:$redis_port" && die "redis is running (pid $redis_pid)"
                start_redis
                write_state
                echo "fleet: redis started on :$redis_port (empty)"
                ;;
            *) die "--redis takes stop or start" ;;
        esac
        exit 0
        ;;
esac

# ---- start
if ((detach)) && [[ -e $state ]]; then
    die "$state exists: a detached fleet may be running (scripts/fleet.sh --stop --state $state)"
fi
port_free "$lb_port" || die "port $lb_port is in use (choose another with --port)"
if [[ -z $nginx_bin ]]; then
    nginx_bin=$(command -v nginx || true)
    [[ -n $nginx_bin ]] || nginx_bin=/usr/sbin/nginx
fi
for tool in "$redis_bin" "$nginx_bin" redis-cli curl python3; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "'$tool' is not installed (scripts/install-deps.sh installs redis-server and nginx-light)"
done
if [[ -z $binary ]]; then
    cargo build -p portico
    binary="${CARGO_TARGET_DIR:-target}/debug/portico"
fi
case "$binary" in /*) ;; *) binary="$root/$binary" ;; esac
[[ -x $binary ]] || die "no portico binary at $binary"

work=$(mktemp -d "${TMPDIR:-/tmp}/portico-fleet.XXXXXX")
# nginx's workers run as another user when started by root: they must reach their temp
# directories (the key files themselves stay 0600).
chmod 755 "$work"
# A copy of the binary: a rebuild while the fleet runs does not change what a restarted
# gateway runs.
cp "$binary" "$work/portico"
binary="$work/portico"
redis_port=$(free_port)
ehr_port=$(free_port)
gw_ports=()
gw_pids=()
for ((i = 1; i <= replicas; i++)); do gw_ports+=("$(free_port)"); done
redis_pid= sandbox_pid= nginx_pid=

cleanup() {
    local code=$?
    trap - EXIT INT TERM HUP
    if ((!detach || code != 0)); then
        echo
        echo "fleet: stopping"
        stop_all
        if ((code != 0)); then
            echo "fleet: logs kept in $work" >&2
        else
            rm -rf -- "$work"
        fi
        # Only a detached start writes (and so owns) the state file.
        if ((detach)); then rm -f -- "$state"; fi
    fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# One encryption key for what Redis holds and one cursor key file, shared by every replica.
openssl rand -hex 32 >"$work/redis-key"
openssl rand -hex 32 >"$work/cursor-keys"
chmod 600 "$work/redis-key" "$work/cursor-keys"

start_redis
start_bg sandbox "$binary" sandbox --port "$ehr_port" --patients "$patients" \
    --audience "http://127.0.0.1:$lb_port/fhir"
sandbox_pid=$started
wait_http "http://127.0.0.1:$ehr_port/fhir/metadata" 120 "$sandbox_pid" sandbox
read_secrets
for ((i = 1; i <= replicas; i++)); do
    gateway_config "$i" "${gw_ports[$i - 1]}"
    start_gateway "$i"
done
for ((i = 1; i <= replicas; i++)); do
    wait_gateway "$i"
done
start_nginx
if ((detach)); then write_state; fi

lb="http://127.0.0.1:$lb_port"
portal_line="open $lb/ and sign in (the sandbox shows a page to pick a patient)"
if [[ $(curl -s -o /dev/null -w '%{http_code}' "$lb/") == 404 ]]; then
    # A build without the portal's pages: the login still works, and lands on the API.
    portal_line="open $lb/auth/login?return_to=/api/v1/me and sign in (this build has no portal pages at /)"
fi
cat <<EOF

Portico fleet on 127.0.0.1 ($replicas replicas behind nginx, round-robin)

  $portal_line
  balancer            $lb            (the public_url of every replica)
  gateways            $(for p in "${gw_ports[@]}"; do printf 'http://127.0.0.1:%s  ' "$p"; done)
  sandbox EHR         http://127.0.0.1:$ehr_port/fhir   (patients: http://127.0.0.1:$ehr_port/auth/patients)
  redis               127.0.0.1:$redis_port   (shared sessions, logins, idempotency, locks, cache generations)
  logs and configs    $work

$(sed -n '/^Demo patients/,/^$/p' "$work/sandbox.log")

Try:
  python3 scripts/portal-walkthrough.py --gateway $lb --patient pat-1
  python3 scripts/smart-login.py --ehr http://127.0.0.1:$ehr_port --fhir $lb/fhir --patient pat-2
EOF
if ((detach)); then
    echo "  scripts/fleet.sh --stop --state $state      # stops it"
    echo
    echo "fleet: detached; state in $state"
    exit 0
fi
echo "Ctrl-C stops everything."
# Until Ctrl-C: a clean stop. If a process of the fleet dies meanwhile, say so and stop
# the rest (keeping the logs).
trap 'exit 0' INT TERM HUP
while true; do
    for pid in "$redis_pid" "$sandbox_pid" "${gw_pids[@]}" "$nginx_pid"; do
        if ! alive "$pid"; then
            echo "fleet: process $pid exited; see the logs in $work" >&2
            exit 1
        fi
    done
    sleep 1
done
