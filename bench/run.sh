#!/usr/bin/env bash
# scimgate benchmark: one command, loopback only, about 2 minutes once built.
#
# Every proxy runs with one worker and is measured with its access log off and on, as deployed:
# nginx `proxy_pass` (access_log off; access_log <file> combined), a bare hyper proxy
# (examples/bare_proxy.rs: scimgate's HTTP stack with no pipeline, the framework floor), and
# scimgate (1 runtime worker thread, local JWKS, one matching rule) with its access line off
# (`log.level = "warn"`) and on (the default: its JSON line on stdout, redirected to a file), and
# with its token cache off (`token_cache_size = 0`) over 5000 rotating RS256 and ES256 tokens.
# Each scenario has its own process, so its peak RSS is its own. `wrk -t1 -c32 -d5s` runs every
# scenario once per round, three rounds in alternating order, and the medians are reported: req/s,
# p50, p99, CPU µs per request of the proxy process (user and system, from /proc/<pid>/stat), peak
# RSS, non-2xx count, ratios to nginx (with the same logging) within each round, and the issue 19
# targets. examples/verify_cost.rs measures, in the same run, the RS256 and ES256 signature
# verification alone against the token-cache miss path. Writes bench/results.md (or $BENCH_RESULTS).
set -euo pipefail
trap 'echo "bench/run.sh: a command failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${BENCH_DURATION:-5s}
REPS=${BENCH_REPS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
TOKENS=${BENCH_TOKENS:-5000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results.md}
PROFILE=${BENCH_PROFILE:-0}

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
[ "$PROFILE" = 1 ] && ! command -v perf >/dev/null && missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt)"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
EXAMPLES=(--example mint --example bare_proxy --example verify_cost)
cargo build --release ${BENCH_LOCKED---locked} --quiet --bin scimgate "${EXAMPLES[@]}"
BIN=$TARGET/release/scimgate
if [ "$PROFILE" = 1 ]; then
  # Symbols for perf: the release profile strips them.
  cargo build --profile profiling ${BENCH_LOCKED---locked} --quiet --bin scimgate
  BIN=$TARGET/profiling/scimgate
fi

WORK=$(mktemp -d /tmp/scimgate-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as an unprivileged user
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}

BACKEND=$(free_port)
echo "minting $TOKENS RS256 and $TOKENS ES256 tokens"
"$TARGET/release/examples/mint" "$WORK" "$TOKENS" "http://127.0.0.1:$BACKEND"
head -n1 "$WORK/tokens-rs256.txt" > "$WORK/one.txt"
chmod 644 "$WORK/jwks.json"

nginx_conf() { # name, body
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/$1/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body; proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fcgi; uwsgi_temp_path $WORK/$1/uwsgi; scgi_temp_path $WORK/$1/scgi;
  keepalive_requests 1000000;
  $2
}
CONF
}
# The two nginx proxies differ only in access_log: off, or nginx's default `combined` format
# written to a file.
proxy_conf() { # port, access_log
  echo "upstream b { server 127.0.0.1:$BACKEND; keepalive 64; } server { listen 127.0.0.1:$1; access_log $2; location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
}
NG_OFF=$(free_port); NG_ON=$(free_port)
nginx_conf backend "server { listen 127.0.0.1:$BACKEND; location = /jwks.json { default_type application/json; root $WORK; } location / { return 200 'ok'; } }"
nginx_conf ng-off "$(proxy_conf "$NG_OFF" off)"
nginx_conf ng-on "$(proxy_conf "$NG_ON" "$WORK/ng-on/access.log combined")"
for name in backend ng-off ng-on; do
  nginx -p "$WORK/$name" -c "$WORK/$name/nginx.conf" & PIDS+=($!)
done
wait_port "$BACKEND"; wait_port "$NG_OFF"; wait_port "$NG_ON"
BARE=$(free_port)
"$TARGET/release/examples/bare_proxy" "$BARE" "127.0.0.1:$BACKEND" & PIDS+=($!)
BARE_PID=$!
wait_port "$BARE"

printf 'bench-key-%s' "$RANDOM$RANDOM" > "$WORK/key"; chmod 600 "$WORK/key"
# gateway NAME LOG_SECTION CACHE_SIZE TOKEN_FILE -> starts scimgate, sets GW_PID and GW_PORT.
# Its stdout (the access lines) goes to NAME/access.log, opened for append so it can be emptied
# between runs.
gateway() {
  local name=$1 log=$2 cache=$3 token=$4 port admin
  port=$(free_port); admin=$(free_port)
  mkdir -p "$WORK/$name"
  cat > "$WORK/$name/scimgate.toml" <<CONF
[server]
listen = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$admin"
$log
[runtime]
worker_threads = 1
[upstream]
url = "http://127.0.0.1:$BACKEND"
[jwt]
jwks_url = "http://127.0.0.1:$BACKEND/jwks.json"
issuer = "http://127.0.0.1:$BACKEND"
audience = ["scimgate"]
algorithms = ["RS256", "ES256"]
token_cache_size = $cache
[[rules]]
name = "bench"
claim = "groups"
value = "bench"
service_account = "sa"
[service_accounts.sa]
scheme = "Bearer"
api_key_file = "$WORK/key"
CONF
  "$BIN" serve --config "$WORK/$name/scimgate.toml" >> "$WORK/$name/access.log" 2> "$WORK/$name/stderr.log" &
  GW_PID=$!; PIDS+=($GW_PID); GW_PORT=$port
  wait_port "$port"
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.05
  done
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(head -n1 "$token")" "http://127.0.0.1:$port/Users")
  [ "$status" = 200 ] || { echo "scimgate ($name) smoke request answered $status"; cat "$WORK/$name/stderr.log"; exit 1; }
}
gateway gw-off $'[log]\nlevel = "warn"' 10000 "$WORK/one.txt"; GW_OFF=$GW_PID; GW_OFF_PORT=$GW_PORT
gateway gw-on "" 10000 "$WORK/one.txt"; GW_ON=$GW_PID; GW_ON_PORT=$GW_PORT
gateway gw-rs "" 0 "$WORK/tokens-rs256.txt"; GW_RS=$GW_PID; GW_RS_PORT=$GW_PORT
gateway gw-es "" 0 "$WORK/tokens-es256.txt"; GW_ES=$GW_PID; GW_ES_PORT=$GW_PORT
for _ in $(seq 1 100); do grep -q '"message":"request"' "$WORK/gw-on/access.log" && break; sleep 0.05; done
grep -q '"message":"request"' "$WORK/gw-on/access.log" || { echo "scimgate wrote no access line"; exit 1; }

cat > "$WORK/tokens.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local i = math.random(#tokens)
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/Users", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }  # user, system
CLK=$(getconf CLK_TCK)
nginx_worker() { pgrep -P "$(cat "$WORK/$1/nginx.pid")" | head -n1; }
peak_rss() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# run NAME URL PID TOKENS_FILE LOG REP -> appends "name|rps|p50|p99|user_us|sys_us|non2xx|rep"
run() {
  local name=$1 url=$2 pid=$3 tokens=$4 log=$5 rep=$6
  local u0 s0 u1 s1 out rps reqs p50 p99 errs user sys sock
  read -r u0 s0 < <(cpu_ticks "$pid")
  out=$(TOKENS_FILE=$tokens wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/tokens.lua" "$url")
  # scimgate writes its queued lines within 20 ms: let them land before reading the CPU.
  sleep 0.1
  read -r u1 s1 < <(cpu_ticks "$pid")
  # Empty the log (both writers append) so the disk holds one run's lines at most.
  [ -n "$log" ] && : > "$log"
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $5}' <<<"$out"); errs=${errs:-0}
  sock=$(awk '/Socket errors/ {print $0}' <<<"$out")
  [ -n "$sock" ] && errs="$errs ($sock)"
  user=$(awk -v t=$((u1 - u0)) -v r="$reqs" -v c="$CLK" 'BEGIN { printf "%.2f", t * 1e6 / c / r }')
  sys=$(awk -v t=$((s1 - s0)) -v r="$reqs" -v c="$CLK" 'BEGIN { printf "%.2f", t * 1e6 / c / r }')
  echo "$name|$rps|$p50|$p99|$user|$sys|$errs|$rep" >> "$WORK/raw.txt"
  printf '  round %s, %s: %s req/s, p50 %s, p99 %s, CPU/req %s us user + %s us sys, non-2xx %s\n' \
    "$rep" "$name" "$rps" "$p50" "$p99" "$user" "$sys" "$errs"
}

# Rounds, not blocks: every scenario runs once per round, so each ratio to nginx compares runs
# seconds apart. This VM's speed drifts by 10-20 % over a minute; three nginx runs followed by
# three scimgate runs would fold that drift into the ratios. Even rounds run the scenarios in
# reverse, so no scenario always follows nginx by the same gap.
# Fields: key|name|url|pid|tokens|log file|baseline key (the nginx row its ratios are against)
SCENARIOS=(
  "ng-off|nginx proxy_pass, access_log off|http://127.0.0.1:$NG_OFF/Users|$(nginx_worker ng-off)|$WORK/one.txt||ng-off"
  "ng-on|nginx proxy_pass, access_log combined to a file|http://127.0.0.1:$NG_ON/Users|$(nginx_worker ng-on)|$WORK/one.txt|$WORK/ng-on/access.log|ng-on"
  "bare|bare hyper proxy (no auth, no log)|http://127.0.0.1:$BARE/Users|$BARE_PID|$WORK/one.txt||ng-off"
  "gw-off|scimgate, one RS256 token, access line off|http://127.0.0.1:$GW_OFF_PORT/Users|$GW_OFF|$WORK/one.txt|$WORK/gw-off/access.log|ng-off"
  "gw-on|scimgate, one RS256 token, access line on|http://127.0.0.1:$GW_ON_PORT/Users|$GW_ON|$WORK/one.txt|$WORK/gw-on/access.log|ng-on"
  "gw-rs|scimgate, token cache off, $TOKENS RS256 tokens, line on|http://127.0.0.1:$GW_RS_PORT/Users|$GW_RS|$WORK/tokens-rs256.txt|$WORK/gw-rs/access.log|ng-on"
  "gw-es|scimgate, token cache off, $TOKENS ES256 tokens, line on|http://127.0.0.1:$GW_ES_PORT/Users|$GW_ES|$WORK/tokens-es256.txt|$WORK/gw-es/access.log|ng-on"
)
echo "running: wrk -t1 -c$CONNS -d$DURATION, $REPS rounds of every scenario"
for rep in $(seq 1 "$REPS"); do
  order=$(seq 0 $((${#SCENARIOS[@]} - 1)))
  [ $((rep % 2)) = 0 ] && order=$(seq $((${#SCENARIOS[@]} - 1)) -1 0)
  for i in $order; do
    IFS='|' read -r key name url pid tokens log _ <<<"${SCENARIOS[$i]}"
    run "$key" "$url" "$pid" "$tokens" "$log" "$rep"
  done
done
: > "$WORK/rss.txt"
for scenario in "${SCENARIOS[@]}"; do
  IFS='|' read -r key _ _ pid _ _ _ <<<"$scenario"
  echo "$key|$(peak_rss "$pid")" >> "$WORK/rss.txt"
done
for name in gw-off gw-on gw-rs gw-es; do
  if [ -s "$WORK/$name/stderr.log" ]; then echo "scimgate ($name) stderr:"; head -n 20 "$WORK/$name/stderr.log"; fi
done

# The crypto alone against the whole miss path, same keys and tokens, while nothing else runs.
echo "measuring signature verification alone and the token-cache miss path (examples/verify_cost.rs)"
"$TARGET/release/examples/verify_cost" "$WORK" "${BENCH_VERIFY_ROUNDS:-5}" > "$WORK/verify.txt"

# Optional (BENCH_PROFILE=1): where scimgate's CPU goes, by perf's cpu-clock sampling (this VM
# has no hardware counters) over one run of each scimgate scenario, on the profiling build.
: > "$WORK/profile.txt"
if [ "$PROFILE" = 1 ]; then
  for scenario in "${SCENARIOS[@]}"; do
    IFS='|' read -r key name url pid tokens _ _ <<<"$scenario"
    case $key in gw-*) ;; *) continue ;; esac
    perf record -q -e cpu-clock -F 2999 -p "$pid" -o "$WORK/perf-$key.data" -- sleep 4 2>/dev/null &
    TOKENS_FILE=$tokens wrk -t1 -c"$CONNS" -d4s -s "$WORK/tokens.lua" "$url" >/dev/null
    wait $!
    {
      echo "### $name"
      echo
      perf report -i "$WORK/perf-$key.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep '%' | sed -e 's/ *- *- *$//' -e 's/ *$//' > "$WORK/perf-$key.txt" || true
      awk '/\[k\]/ {gsub("%", "", $1); k += $1} /\[\.\]/ {gsub("%", "", $1); u += $1}
        END {printf "Kernel %.0f %% of the samples, user space %.0f %%. The user-space symbols with the most self time:\n", k, u}' \
        "$WORK/perf-$key.txt"
      echo
      echo '```'
      # (grep ends early when head has its lines: not a failure)
      grep '\[\.\]' "$WORK/perf-$key.txt" | head -n 20 | cut -c1-150 || true
      echo '```'
      echo
    } >> "$WORK/profile.txt"
  done
  cat "$WORK/profile.txt"
fi

# Optional (BENCH_INSTRUCTIONS=1): user-space instructions per forwarded request, counted by
# callgrind over a short wrk run. Exact to about 0.1 % between runs where the timings above move
# by 10-20 %, so it is the figure to compare two builds by. Valgrind has no SHA extensions, so the
# token digest costs ~10k instructions here that SHA-NI hardware does in a fraction of that.
: > "$WORK/instructions.txt"
instructions() { # NAME PORT READY_URL CMD... -> appends "name|instructions per request"
  local name=$1 port=$2 ready=$3; shift 3
  local out="$WORK/callgrind-$port"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.%p" "$@" > "$out.log" 2>&1 &
  local vg=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null "$ready" && break; sleep 0.1; done
  local url="http://127.0.0.1:$port/Users"
  TOKENS_FILE=$WORK/one.txt wrk -t1 -c8 -d2s -s "$WORK/tokens.lua" "$url" >/dev/null
  callgrind_control -i on "$vg" >/dev/null
  local reqs
  reqs=$(TOKENS_FILE=$WORK/one.txt wrk -t1 -c8 -d3s -s "$WORK/tokens.lua" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -i off "$vg" >/dev/null
  callgrind_control -d "$vg" >/dev/null
  kill "$vg"; wait "$vg" 2>/dev/null || true
  local total
  total=$(for f in "$out".*[0-9]; do callgrind_annotate "$f" 2>/dev/null; done |
    awk '/PROGRAM TOTALS/ {gsub(",", "", $1); t += $1} END {print t + 0}')
  echo "$name|$((total / reqs))" >> "$WORK/instructions.txt"
  echo "  $name: $((total / reqs)) instructions per request ($reqs requests)"
}
if [ "${BENCH_INSTRUCTIONS:-0}" = 1 ]; then
  command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
  echo "counting instructions per request (callgrind)"
  CG_PROXY=$(free_port); CG_GATEWAY=$(free_port); CG_ADMIN=$(free_port)
  instructions "bare hyper proxy" "$CG_PROXY" "http://127.0.0.1:$CG_PROXY/" \
    "$TARGET/release/examples/bare_proxy" "$CG_PROXY" "127.0.0.1:$BACKEND"
  sed -e "s/^listen = \"127.0.0.1:$GW_OFF_PORT\"/listen = \"127.0.0.1:$CG_GATEWAY\"/" \
    -e "/^\[admin\]/{n;s/.*/listen = \"127.0.0.1:$CG_ADMIN\"/}" \
    "$WORK/gw-off/scimgate.toml" > "$WORK/callgrind.toml"
  instructions "scimgate, one token, access line off" "$CG_GATEWAY" "http://127.0.0.1:$CG_ADMIN/readyz" \
    "$BIN" serve --config "$WORK/callgrind.toml"
fi

python3 "$ROOT/bench/report.py" "$WORK" "$RESULTS" "$DURATION" "$REPS" "$CONNS" "$TOKENS" \
  "$(printf '%s\n' "${SCENARIOS[@]}")"
