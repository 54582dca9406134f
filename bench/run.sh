#!/usr/bin/env bash
# scimgate benchmark: one command, loopback only, about 2 minutes.
#
# Starts an nginx backend (`return 200`, 1 worker), an nginx `proxy_pass` in front of it (1 worker),
# a bare hyper proxy (examples/bare_proxy.rs: scimgate's HTTP stack with no pipeline, the framework
# floor), and scimgate (1 runtime worker thread, local JWKS, one matching rule), then runs
# `wrk -t1 -c32 -d5s` against every scenario in turn, three rounds, and reports the median: req/s,
# p50, p99, CPU µs per request of the proxy process (user + system, from /proc/<pid>/stat), peak
# RSS, non-2xx count, and the ratios to nginx proxy_pass within each round. Every scenario sends
# the same request (GET /Users with a bearer token), so the baselines parse and forward the same
# bytes as scimgate. Writes bench/results.md (or $BENCH_RESULTS).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${BENCH_DURATION:-5s}
REPS=${BENCH_REPS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
TOKENS=${BENCH_TOKENS:-5000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results.md}

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  echo "installing nginx and wrk (apt)"
  apt-get update -qq && apt-get install -y -qq nginx wrk >/dev/null
fi
cargo build --release ${BENCH_LOCKED---locked} --quiet --bin scimgate --example mint --example bare_proxy
BIN=$TARGET/release/scimgate

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

BACKEND=$(free_port); NGPROXY=$(free_port); BARE=$(free_port); GATEWAY=$(free_port); ADMIN=$(free_port)
"$TARGET/release/examples/mint" "$WORK" "$TOKENS" "http://127.0.0.1:$BACKEND"
head -n1 "$WORK/tokens.txt" > "$WORK/one.txt"
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
nginx_conf backend "server { listen 127.0.0.1:$BACKEND; location = /jwks.json { default_type application/json; root $WORK; } location / { return 200 'ok'; } }"
nginx_conf proxy "upstream b { server 127.0.0.1:$BACKEND; keepalive 64; } server { listen 127.0.0.1:$NGPROXY; location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" & PIDS+=($!)
nginx -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" & PIDS+=($!)
wait_port "$BACKEND"; wait_port "$NGPROXY"
"$TARGET/release/examples/bare_proxy" "$BARE" "127.0.0.1:$BACKEND" & PIDS+=($!)
BARE_PID=$!
wait_port "$BARE"

printf 'bench-key-%s' "$RANDOM$RANDOM" > "$WORK/key"; chmod 600 "$WORK/key"
cat > "$WORK/scimgate.toml" <<CONF
[server]
listen = "127.0.0.1:$GATEWAY"
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
level = "warn"
[runtime]
worker_threads = 1
[upstream]
url = "http://127.0.0.1:$BACKEND"
[jwt]
jwks_url = "http://127.0.0.1:$BACKEND/jwks.json"
issuer = "http://127.0.0.1:$BACKEND"
audience = ["scimgate"]
algorithms = ["ES256"]
[[rules]]
name = "bench"
claim = "groups"
value = "bench"
service_account = "sa"
[service_accounts.sa]
scheme = "Bearer"
api_key_file = "$WORK/key"
CONF
"$BIN" serve --config "$WORK/scimgate.toml" > "$WORK/scimgate.log" 2>&1 & PIDS+=($!)
GATEWAY_PID=$!
wait_port "$GATEWAY"
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.05
done
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$WORK/one.txt")" "http://127.0.0.1:$GATEWAY/Users")
[ "$status" = 200 ] || { echo "scimgate smoke request answered $status"; cat "$WORK/scimgate.log"; exit 1; }

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

# run NAME URL PID TOKENS_FILE REP -> appends "name|rps|p50|p99|user_us|sys_us|non2xx|rep"
run() {
  local name=$1 url=$2 pid=$3 tokens=$4 rep=$5
  local u0 s0 u1 s1 out rps reqs p50 p99 errs user sys
  read -r u0 s0 < <(cpu_ticks "$pid")
  out=$(TOKENS_FILE=$tokens wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/tokens.lua" "$url")
  read -r u1 s1 < <(cpu_ticks "$pid")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {print $5}' <<<"$out"); errs=${errs:-0}
  sock=$(awk '/Socket errors/ {print $0}' <<<"$out")
  [ -n "$sock" ] && errs="$errs ($sock)"
  user=$(awk -v t=$((u1 - u0)) -v r="$reqs" -v c="$CLK" 'BEGIN { printf "%.1f", t * 1e6 / c / r }')
  sys=$(awk -v t=$((s1 - s0)) -v r="$reqs" -v c="$CLK" 'BEGIN { printf "%.1f", t * 1e6 / c / r }')
  echo "$name|$rps|$p50|$p99|$user|$sys|$errs|$rep" >> "$WORK/raw.txt"
  echo "  round $rep, $name: $rps req/s, p50 $p50, p99 $p99, CPU/req ${user} us user + ${sys} us sys, non-2xx $errs"
}

# Rounds, not blocks: every scenario runs once per round, so each ratio to nginx compares runs
# seconds apart. This VM's speed drifts by 10-20 % over a minute; three nginx runs followed by
# three scimgate runs would fold that drift into the ratios. Even rounds run the scenarios in
# reverse, so no scenario always follows nginx by the same gap.
SCENARIOS=(
  "direct backend (nginx return 200)|http://127.0.0.1:$BACKEND/Users|$(nginx_worker backend)|$WORK/one.txt"
  "nginx proxy_pass (no auth)|http://127.0.0.1:$NGPROXY/Users|$(nginx_worker proxy)|$WORK/one.txt"
  "bare hyper proxy (no auth; examples/bare_proxy.rs)|http://127.0.0.1:$BARE/Users|$BARE_PID|$WORK/one.txt"
  "scimgate, one valid token|http://127.0.0.1:$GATEWAY/Users|$GATEWAY_PID|$WORK/one.txt"
  "scimgate, $TOKENS rotating tokens|http://127.0.0.1:$GATEWAY/Users|$GATEWAY_PID|$WORK/tokens.txt"
)
echo "running: wrk -t1 -c$CONNS -d$DURATION, $REPS rounds of every scenario"
for rep in $(seq 1 "$REPS"); do
  order=$(seq 0 $((${#SCENARIOS[@]} - 1)))
  [ $((rep % 2)) = 0 ] && order=$(seq $((${#SCENARIOS[@]} - 1)) -1 0)
  for i in $order; do
    IFS='|' read -r name url pid tokens <<<"${SCENARIOS[$i]}"
    run "$name" "$url" "$pid" "$tokens" "$rep"
  done
done
RSS=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$GATEWAY_PID/status")

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
  sed -e "s/127.0.0.1:$GATEWAY/127.0.0.1:$CG_GATEWAY/" -e "s/127.0.0.1:$ADMIN/127.0.0.1:$CG_ADMIN/" \
    "$WORK/scimgate.toml" > "$WORK/callgrind.toml"
  instructions "scimgate, one valid token" "$CG_GATEWAY" "http://127.0.0.1:$CG_ADMIN/readyz" \
    "$BIN" serve --config "$WORK/callgrind.toml"
fi

python3 - "$WORK/raw.txt" "$RSS" "$RESULTS" "$DURATION" "$REPS" "$CONNS" "$WORK/instructions.txt" "$(printf '%s\n' "${SCENARIOS[@]}")" <<'PY'
import sys, platform, os, datetime
raw, rss, out, duration, reps, conns, instructions, scenarios = sys.argv[1:9]
rows = {}
for line in open(raw):
    name, rps, p50, p99, user, sys_, errs, rnd = line.rstrip("\n").split("|")
    rows.setdefault(name, []).append((float(rps), p50, p99, float(user), float(sys_), errs, int(rnd)))
from statistics import median
def median_row(runs):
    """The run with the median req/s (the lower middle one for an even count), and the non-2xx
    count over all runs."""
    ordered = sorted(runs, key=lambda r: r[0])
    return ordered[(len(ordered) - 1) // 2], sum(int(r[5].split()[0]) for r in runs)
names = [line.split("|", 1)[0] for line in scenarios.split("\n") if line]
nginx = {r[6]: r for r in rows[names[1]]}
def ratios(runs):
    """Median over rounds of this scenario's req/s and CPU against nginx's in the same round."""
    rps = median([r[0] / nginx[r[6]][0] for r in runs])
    cpu = median([(r[3] + r[4]) / (nginx[r[6]][3] + nginx[r[6]][4]) for r in runs])
    return rps, cpu
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
lines = [
    "# scimgate benchmark results", "",
    f"Machine: {os.cpu_count()} cores, {cpu_model}, Linux {platform.release()}; "
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    f"Load: `wrk -t1 -c{conns} -d{duration}`, {reps} rounds of every scenario in turn, loopback, every scenario "
    "`GET /Users` with the same bearer token (the rotating row: 5000 distinct tokens); backend nginx `return 200` "
    "(1 worker); nginx proxy 1 worker with upstream keepalive; scimgate `worker_threads = 1`, ES256 tokens, "
    "token cache on.", "",
    "| scenario | req/s | p50 | p99 | CPU µs/req | user + sys µs | non-2xx (all runs) | req/s vs nginx proxy | CPU vs nginx proxy |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for name in names:
    (rps, p50, p99, user, sys_, _, _), errs = median_row(rows[name])
    rps_ratio, cpu_ratio = ratios(rows[name])
    lines.append(f"| {name} | {rps:,.0f} | {p50} | {p99} | {user + sys_:.1f} | {user:.1f} + {sys_:.1f} | {errs} | "
                 f"{rps_ratio:.2f}x | {cpu_ratio:.2f}x |")
per_round = lambda name: ", ".join(f"{r[0] / nginx[r[6]][0]:.2f}" for r in sorted(rows[name], key=lambda r: r[6]))
lines += ["", "Columns 2-6 are the run with the median req/s. The ratio columns are the median, over rounds, of "
          "the scenario against nginx in the same round; per round, req/s vs nginx: "
          + "; ".join(f"{name.split(' (')[0]} {per_round(name)}" for name in names[2:]) + "."]
counted = [line.rstrip("\n").split("|") for line in open(instructions) if line.strip()]
if counted:
    lines += ["", "Instructions per forwarded request (callgrind, user space, `wrk -t1 -c8 -d3s`): "
              + "; ".join(f"{name} {int(n):,}" for name, n in counted) + "."]
lines += ["", f"scimgate peak RSS (VmHWM) after all runs: {rss}.", "",
          "CPU µs/req is the serving process alone, from /proc/<pid>/stat ticks over the run divided by requests: "
          "the nginx worker for the first two rows, the bare proxy for the third, scimgate for the others.",
          "Reproduce: `bash bench/run.sh` (see bench/README.md)."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
