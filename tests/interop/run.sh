#!/usr/bin/env bash
# Interop against real peers (issue 8): scim2-tester -> scimgate -> scim2-server, with RS256 and
# ES256 JWTs from a loopback issuer (tests/interop/issuer.py). Loopback only, every step bounded by
# `timeout`, every process started here stopped by its PID on exit.
#
#   bash tests/interop/run.sh
#
# Environment:
#   SCIMGATE_BIN            use this binary instead of `cargo build --release --locked`
#   SCIMGATE_INTEROP_VENV   the venv (default target/interop-venv; created/updated from
#                           tests/interop/requirements.txt)
#   SCIMGATE_INTEROP_KEEP=1 keep the work directory (configs, logs) and print its path
#
# Cases: the compliance suite directly against scim2-server (API key), then through scimgate with
# an RS256 and an ES256 token (same counts, all passing); Location/meta.location and ETag/If-Match
# through the proxy; Okta's and Entra ID's request shapes (tests/interop/shapes.py: lookups in
# every encoding incl. raw `"`, create, PUT/PATCH updates, deactivations, group push and
# membership, deletes) played directly and through scimgate, same status and body at each step;
# the deprovision budget (tests/interop/guardrails.py) in front of the same scim2-server;
# four refused requests (no token, expired, failing the rule, the raw API key) and four refused
# heads (malformed, too large, ambiguous framing, raw `"` in the path) that must be answered by
# scimgate with SCIM error bodies and never reach scim2-server. scimgate's own token endpoint
# (issue 17, tests/interop/oauth_clients.py): authlib with client_secret_basic, client_secret_post
# and private_key_jwt, and requests-oauthlib's BackendApplicationClient each get a token; the
# compliance suite passes through scimgate with each authlib token (same counts).
# Closes with "N passed, N failed".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${SCIMGATE_INTEROP_VENV:-$repo/target/interop-venv}
started=$SECONDS
passed=0
failed=0
pids=()
child=

say() { printf '%s\n' "$*"; }
step() { printf '\n=== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

# --- cleanup: stop every process started here, by PID ------------------------------------------
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? pid
  for pid in $child "${pids[@]}"; do stop_pid "$pid"; done
  if [[ -n ${work:-} ]]; then
    if [[ -n ${SCIMGATE_INTEROP_KEEP:-} ]]; then say "work directory kept: $work"; else rm -rf "$work"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bounded SECONDS CMD...: run CMD under `timeout`, in the background and waited for, so that a
# signal to this script stops it at once (bash runs traps only between foreground commands).
bounded() {
  local rc=0
  timeout "$1" "${@:2}" &
  child=$!
  wait "$child" || rc=$?
  child=
  return "$rc"
}

# --- results ------------------------------------------------------------------------------------
record() { # record NAME RC
  if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); say "PASS $1"; else failed=$((failed + 1)); say "FAIL $1"; fi
}
run_case() { # run_case NAME CMD...
  local name=$1 rc=0
  shift
  say "--- $name"
  "$@" || rc=$?
  record "$name" "$rc"
  return 0
}
finish() {
  if ((failed > 0)) && [[ -n ${work:-} ]]; then
    local f
    for f in "$work"/scimgate.out "$work"/scimgate.err "$work"/scim2-server.log "$work"/issuer.log; do
      [[ -s $f ]] && { say "--- last lines of $(basename "$f")"; tail -n 25 "$f"; }
    done
  fi
  say ""
  say "interop: took $((SECONDS - started))s"
  say "$passed passed, $failed failed"
  ((failed == 0))
}
setup_failed() { # a start-up step failed: count it, print the summary, stop here
  record "$1" 1
  finish || exit 1
}

# --- 1. venv with the real peers ----------------------------------------------------------------
step "venv $venv"
py=$venv/bin/python
if ! cmp -s "$here/requirements.txt" "$venv/.interop-requirements" 2>/dev/null; then
  bounded 120 "${PYTHON:-python3}" -m venv "$venv" || setup_failed "create the venv"
  bounded 300 "$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
    || setup_failed "pip install -r tests/interop/requirements.txt"
  cp "$here/requirements.txt" "$venv/.interop-requirements"
fi
"$py" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(scim2-(server|cli|tester)|pyjwt|cryptography) ' || true

# --- 2. scimgate release binary -----------------------------------------------------------------
step "scimgate binary"
if [[ -n ${SCIMGATE_BIN:-} ]]; then
  bin=$SCIMGATE_BIN
else
  # A no-op when target/release is up to date; builds it on a clean machine.
  bounded 1200 cargo build --manifest-path "$repo/Cargo.toml" --release --locked --quiet \
    || setup_failed "cargo build --release --locked"
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/scimgate
fi
[[ -x $bin ]] || setup_failed "scimgate binary at $bin"
say "$bin ($("$bin" --version 2>/dev/null || echo 'no --version'))"

work=$(mktemp -d "${TMPDIR:-/tmp}/scimgate-interop.XXXXXX")
chmod 700 "$work"
check() { timeout 60 "$py" -B "$here/interop.py" "$@"; }

# --- 3. scim2-server with a random API key -------------------------------------------------------
step "scim2-server"
api_key=$("$py" -c 'import secrets; print("sk-" + secrets.token_urlsafe(32))')
scim_log=$work/scim2-server.log
scim_ok=
for attempt in 1 2 3; do # the port is picked free, then bound by scim2-server: retry a lost race
  scim_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$venv/bin/scim2-server" --hostname 127.0.0.1 --port "$scim_port" --bearer-token "$api_key" \
    --reverse-proxy >"$work/scim2-server.out" 2>"$scim_log" &
  scim_pid=$!
  pids+=("$scim_pid")
  if check wait-http "http://127.0.0.1:$scim_port/v2/ServiceProviderConfig" --pid "$scim_pid" --timeout 20 \
    && kill -0 "$scim_pid" 2>/dev/null; then
    scim_ok=1
    break
  fi
  say "scim2-server did not come up on port $scim_port (attempt $attempt)"
  stop_pid "$scim_pid"
done
[[ -n $scim_ok ]] || setup_failed "start scim2-server"
direct=http://127.0.0.1:$scim_port
say "scim2-server: $direct/v2 (pid $scim_pid, --reverse-proxy, --bearer-token <random>)"

# --- 4. JWKS endpoint and token mint ---------------------------------------------------------------
step "keys of scimgate's own issuer and of its assertion client"
oauth() { timeout 60 "$py" -B "$here/oauth_clients.py" "$@"; }
oauth keygen --key "$work/issuer-signing.pem" || setup_failed "generate scimgate's issuer key"
oauth keygen --key "$work/client-key.pem" --jwks "$work/client-jwks.json" --kid interop-client \
  || setup_failed "generate the assertion client's key"
client_secret=$("$py" -c 'import secrets; print(secrets.token_urlsafe(32))')
client_secret_sha256=$(printf '%s' "$client_secret" | sha256sum | cut -d' ' -f1)
own_iss=https://scimgate.interop.test

step "issuer (JWKS + mint)"
iss=https://issuer.interop.test
aud=scimgate-interop
"$py" "$here/issuer.py" --issuer "$iss" --audience "$aud" --client-jwks "$work/client-jwks.json" \
  >"$work/issuer.out" 2>"$work/issuer.log" &
issuer_pid=$!
pids+=("$issuer_pid")
issuer_port=$(check port-from "$work/issuer.out") || setup_failed "start issuer.py"
issuer=http://127.0.0.1:$issuer_port
say "issuer: $issuer/jwks.json (pid $issuer_pid)"

# --- 5. scimgate in front of scim2-server ---------------------------------------------------------
step "scimgate"
printf '%s\n' "$api_key" >"$work/api-key"
chmod 600 "$work/api-key"
cat >"$work/scimgate.toml" <<EOF
# Written by tests/interop/run.sh: scimgate in front of scim2-server on loopback.
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"
path_prefix = "/v2"

[admin]
listen = "127.0.0.1:0"

[log]
level = "info"
format = "json"

[upstream]
# The SCIM endpoints start after /v2 on both sides: /v2/Users on scimgate is /v2/Users on
# scim2-server (server.path_prefix above; scimgate parses what follows it as a SCIM endpoint).
url = "$direct/v2"
connect_timeout = "2s"
timeout = "20s"

[jwt]
jwks_url = "$issuer/jwks.json"
issuer = "$iss"
audience = ["$aud"]
algorithms = ["RS256", "ES256"]
leeway = "30s"

# Okta-style: an array claim that must contain the group (RS256 tokens here).
[[rules]]
name = "groups"
claim = "groups"
value = "scim-provisioners"
service_account = "scim2_server"

# Client-credentials style: the space-separated OAuth scope must hold this scope (ES256 at+jwt).
[[rules]]
name = "client-credentials"
claim = "scope"
value = "scim.provision"
match = "space_delimited"
service_account = "scim2_server"

# A connector that may only read, search and use /Bulk (the fail-closed check below).
[[rules]]
name = "readers"
claim = "groups"
value = "scim-readers"
service_account = "scim2_server"
allow = ["read", "search", "bulk"]

[service_accounts.scim2_server]
header = "authorization"
scheme = "Bearer"
api_key_file = "$work/api-key"

# scimgate's own issuer: its tokens go through the same verify -> rules path ("groups" above).
[issuer]
url = "$own_iss"
signing_key_files = ["$work/issuer-signing.pem"]
token_lifetime = "1h"

[[issuer.clients]]
client_id = "interop-secret"
scope = ["scim"]
claims = { groups = ["scim-provisioners"] }
secret_sha256 = "$client_secret_sha256"

# RFC 7523 §3's self-signed form, as authlib's private_key_jwt sends it: iss = sub = client id,
# aud = the token endpoint as the metadata names it.
[[issuer.clients]]
client_id = "interop-assertion"
scope = ["scim"]
claims = { groups = ["scim-provisioners"] }
assertion = { issuer = "interop-assertion", jwks_url = "$issuer/client-jwks.json", subject = "interop-assertion", audience = "$own_iss/oauth2/token" }
EOF
# scimgate reads SCIMGATE_* variables as config (and rejects unknown ones): run it with the file
# alone, without this script's own SCIMGATE_BIN / SCIMGATE_INTEROP_* settings.
scimgate() {
  local v
  for v in $(compgen -e); do [[ $v == SCIMGATE_* ]] && unset "$v"; done
  exec "$bin" "$@"
}
(scimgate check --config "$work/scimgate.toml") >"$work/check.out" 2>&1 || {
  cat "$work/check.out"
  setup_failed "scimgate check --config <interop config>"
}
(scimgate serve --config "$work/scimgate.toml") >"$work/scimgate.out" 2>"$work/scimgate.err" &
gate_pid=$!
pids+=("$gate_pid")
addrs=$(check listening "$work/scimgate.out" --pid "$gate_pid") || setup_failed "scimgate logs \"listening\""
read -r proxy_addr admin_addr <<<"$addrs"
proxy=http://$proxy_addr
check wait-http "http://$admin_addr/readyz" --pid "$gate_pid" --timeout 20 || setup_failed "scimgate /readyz 200"
say "scimgate: $proxy (admin $admin_addr, pid $gate_pid)"

# --- tokens ----------------------------------------------------------------------------------------
jwt_rs=$(check mint "$issuer" --alg RS256 --typ JWT \
  --claims '{"groups": ["Everyone", "scim-provisioners"]}') || setup_failed "mint the RS256 token"
jwt_es=$(check mint "$issuer" --alg ES256 --typ at+jwt \
  --claims '{"scope": "openid scim.provision", "client_id": "interop-client"}') || setup_failed "mint the ES256 token"
jwt_expired=$(check mint "$issuer" --alg RS256 --typ JWT --ttl -600 \
  --claims '{"groups": ["scim-provisioners"]}') || setup_failed "mint the expired token"
jwt_reader=$(check mint "$issuer" --alg RS256 --typ JWT \
  --claims '{"groups": ["scim-readers"]}') || setup_failed "mint the reader token"
# Fails both rules: no such group, and "scim.provisioning" is not the scope "scim.provision".
jwt_no_rule=$(check mint "$issuer" --alg ES256 --typ at+jwt \
  --claims '{"groups": ["Everyone"], "scope": "openid scim.provisioning scim.read"}') || setup_failed "mint the no-rule token"

# --- 6. compliance suite: direct, then through scimgate ---------------------------------------------
compliance() { # compliance LABEL BASE_URL BEARER_VALUE
  local url=$2 out=$work/tester-$1.out rc=0
  SCIM_CLI_HEADERS="Authorization: Bearer $3" bounded 180 "$venv/bin/scim2" -u "$url/v2" test >"$out" 2>&1 || rc=$?
  counts=$(check tester-counts "$out")
  say "  scim2 -u $url/v2 test -> rc=$rc, $counts"
  if [[ $rc -ne 0 ]] || grep -qE '(DEVIATION|ERROR|CRITICAL)=' <<<"$counts"; then
    grep -E '^(DEVIATION|ERROR|CRITICAL) ' -A2 "$out" | head -n 40
    tail -n 5 "$out"
    return 1
  fi
}
same_counts() { # same_counts LABEL BEARER_VALUE: through scimgate, counts equal to the direct run
  compliance "$1" "$proxy" "$2" || return 1
  [[ $counts == "$direct_counts" ]] || { say "  counts differ: direct $direct_counts, through scimgate $counts"; return 1; }
}
step "compliance suite"
counts=
run_case "compliance direct against scim2-server (API key)" compliance direct "$direct" "$api_key"
direct_counts=$counts
run_case "compliance through scimgate (RS256 JWT, groups rule): same counts" same_counts proxy-rs256 "$jwt_rs"
proxy_rs_counts=$counts
run_case "compliance through scimgate (ES256 at+jwt, space_delimited scope rule): same counts" same_counts proxy-es256 "$jwt_es"
proxy_es_counts=$counts

# --- scimgate's own token endpoint: OAuth clients no one here wrote --------------------------------
step "scimgate's token endpoint (authlib, requests-oauthlib)"
export INTEROP_CLIENT_SECRET=$client_secret
own_token() { # own_token NAME ARGS...: a token from scimgate into $work/own-NAME.token
  local name=$1
  shift
  oauth "$@" --token-url "$proxy/oauth2/token" >"$work/own-$name.token" && [[ -s $work/own-$name.token ]]
}
run_case "authlib client_secret_basic gets a token from scimgate" \
  own_token basic authlib --method client_secret_basic --client-id interop-secret
run_case "authlib client_secret_post gets a token from scimgate" \
  own_token post authlib --method client_secret_post --client-id interop-secret
run_case "authlib private_key_jwt (client assertion) gets a token from scimgate" \
  own_token assertion authlib --method private_key_jwt --client-id interop-assertion \
  --key "$work/client-key.pem" --kid interop-client --audience "$own_iss/oauth2/token"
run_case "requests-oauthlib BackendApplicationClient gets a token from scimgate" \
  own_token oauthlib oauthlib --client-id interop-secret
with_own() { # with_own NAME: the compliance suite through scimgate with that token, same counts
  [[ -s $work/own-$1.token ]] || return 1
  same_counts "own-$1" "$(cat "$work/own-$1.token")"
}
run_case "compliance through scimgate (authlib client_secret_basic token): same counts" with_own basic
run_case "compliance through scimgate (authlib client_secret_post token): same counts" with_own post
run_case "compliance through scimgate (authlib private_key_jwt token): same counts" with_own assertion
users_with_own() { # users_with_own NAME: GET /v2/Users through scimgate with that token is 200
  [[ -s $work/own-$1.token ]] || return 1
  INTEROP_OWN_TOKEN=$(cat "$work/own-$1.token") timeout 30 "$py" - "$proxy/v2/Users" <<'PY'
import os, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + os.environ["INTEROP_OWN_TOKEN"]})
with urllib.request.urlopen(req, timeout=20) as r:
    print(f"  GET /v2/Users -> {r.status}")
    sys.exit(0 if r.status == 200 else 1)
PY
}
run_case "requests-oauthlib token: GET /v2/Users through scimgate -> 200" users_with_own oauthlib
unset INTEROP_CLIENT_SECRET

# --- Location / ETag through the proxy ------------------------------------------------------------
step "Location and ETag through scimgate"
export INTEROP_BEARER=$jwt_rs INTEROP_API_KEY=$api_key
run_case "Location / meta.location name scimgate's address" check location --proxy "$proxy"
run_case "ETag / If-Match / If-None-Match pass through unchanged" check etag --proxy "$proxy" --direct "$direct"

step "IdP request shapes (Okta, Entra ID)"
run_case "Okta and Entra ID request shapes: same status and body through scimgate as directly" \
  check idp-shapes --proxy "$proxy" --direct "$direct"

# --- 7. refused requests: answered by scimgate, never seen by scim2-server -------------------------
step "refused requests"
nonce=$("$py" -c 'import secrets; print(secrets.token_hex(4))')
log_before=$(INTEROP_BEARER=$jwt_rs check log-control "$proxy" --scim-log "$scim_log" --marker "interop-control-before-$nonce") || log_before=
reject() { # reject NAME STATUS WWW-AUTHENTICATE DENY-REASON BEARER
  INTEROP_BEARER=$5 check reject "$proxy" --status "$2" --www-authenticate "$3" --reason "$4" \
    --admin "$admin_addr" --scim-log "$scim_log" --marker "interop-$1-$nonce"
}
invalid='Bearer realm="scimgate", error="invalid_token"'
run_case "no token -> 401 from scimgate" reject no-token 401 'Bearer realm="scimgate"' missing_token ""
run_case "expired token -> 401 from scimgate" reject expired 401 "$invalid" expired "$jwt_expired"
run_case "token failing the claim rules -> 403 from scimgate" reject no-rule 403 \
  'Bearer realm="scimgate", error="insufficient_scope"' no_rule "$jwt_no_rule"
run_case "raw upstream API key as the bearer -> 401 from scimgate" reject api-key 401 "$invalid" malformed "$api_key"
run_case "heads scimgate refuses itself -> SCIM error bodies, never forwarded" \
  check refused-heads "$proxy" --admin "$admin_addr" --scim-log "$scim_log" --marker "interop-heads-$nonce"
log_after=$(INTEROP_BEARER=$jwt_rs check log-control "$proxy" --scim-log "$scim_log" --marker "interop-control-after-$nonce") || log_after=
upstream_silent() {
  say "  scim2-server request lines: $log_before before the refused requests, $log_after after (the one between is the control request)"
  [[ -n $log_before && -n $log_after ]] && ((log_after - log_before == 1))
}
run_case "scim2-server saw no request from the refused runs" upstream_silent
run_case "case-variant /Bulk DELETE with a read/search/bulk token: 400, the user stays (T46)" \
  env INTEROP_BEARER="$jwt_reader" INTEROP_API_KEY="$api_key" \
  timeout 60 "$py" "$here/fail_closed.py" bulk-case-variant --proxy "$proxy" --direct "$direct"

step "guardrails: the deprovision budget in front of scim2-server"
# A second scimgate, the same config plus a budget of 6 deprovisionings (one of each shape) in 4 s.
{ cat "$work/scimgate.toml"; printf '\n[guardrails]\nmax_deprovisions = 6\ndeprovision_window = "4s"\n'; } >"$work/guarded.toml"
guarded_case() {
  local pid addrs gproxy gadmin rc=0
  (scimgate serve --config "$work/guarded.toml") >"$work/guarded.out" 2>"$work/guarded.err" &
  pid=$!
  pids+=("$pid")
  addrs=$(check listening "$work/guarded.out" --pid "$pid") || return 1
  read -r gproxy gadmin <<<"$addrs"
  check wait-http "http://$gadmin/readyz" --pid "$pid" --timeout 20 || return 1
  INTEROP_BEARER=$jwt_rs INTEROP_API_KEY=$api_key \
    bounded 90 "$py" -B "$here/guardrails.py" budget --proxy "http://$gproxy" --direct "$direct" \
    --budget 6 --window 4 || rc=$?
  stop_pid "$pid"
  return "$rc"
}
run_case "Okta/Entra deactivations and deletes stop at exactly max_deprovisions (429 + Retry-After), also through /Bulk; the next passes after the window" guarded_case

step "summary"
say "compliance counts: direct [$direct_counts], through scimgate RS256 [$proxy_rs_counts], ES256 [$proxy_es_counts]"
finish
