#!/usr/bin/env bash
# Container smoke test (manual, not in CI; needs root for apt-get and rootful podman).
#
# Builds a static (musl) scimgate, puts it in a FROM scratch image with buildah, runs it with
# podman read-only as uid 65532 against a throwaway IdP (JWKS) and a real SCIM server
# (scim2-server) on loopback, using the config the Helm chart renders, proves it serves, and that
# `podman stop` ends it with SIGTERM (exit 0 after a graceful drain), not SIGKILL.
#
#   bash tests/deploy/smoke.sh
#
# No base image can be pulled on this machine, hence FROM scratch plus the host's CA bundle. The
# production Dockerfile (distroless) is linted by check.sh but cannot be built here.
# Environment: SCIMGATE_STATIC_BIN to skip the build; SCIMGATE_VENV_DIR as in check.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
work="$(mktemp -d "${TMPDIR:-/tmp}/scimgate-smoke.XXXXXX")"
chmod 755 "$work"
name="scimgate-smoke-$$"
image="localhost/scimgate:smoke-$$"
pids=()
cleanup() {
    podman rm -f "$name" >/dev/null 2>&1 || true
    podman rmi -f "$image" >/dev/null 2>&1 || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n=== smoke: %s ===\n' "$*"; }
fail() { echo "SMOKE FAILED: $*"; exit 1; }

say "prerequisites (apt: buildah podman runc musl-tools; rustup: musl target; venv: pyjwt, scim2-server)"
missing=()
for cmd in buildah podman runc musl-gcc curl; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc musl-tools curl
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
smoke_venv="$repo/target/smoke-venv"
[[ -x "$smoke_venv/bin/python" ]] || python3 -m venv "$smoke_venv"
"$smoke_venv/bin/pip" install --quiet --disable-pip-version-check "pyjwt[crypto]==2.*" "scim2-server==0.8.*"
deploy_venv="${SCIMGATE_VENV_DIR:-$repo/target/deploy-venv}"
[[ -x "$deploy_venv/bin/python" ]] || fail "run tests/deploy/check.sh first (it creates $deploy_venv)"

say "static binary (musl, --target-dir target/static)"
if [[ -n "${SCIMGATE_STATIC_BIN:-}" ]]; then
    bin="$SCIMGATE_STATIC_BIN"
else
    cargo build --release --locked --target x86_64-unknown-linux-musl --target-dir target/static
    bin=target/static/x86_64-unknown-linux-musl/release/scimgate
fi
file "$bin"
file "$bin" | grep -Eq 'static(-pie)? linked' || fail "$bin is not statically linked"
echo "static: yes ($(du -h "$bin" | cut -f1))"

say "image: FROM scratch, buildah bud --isolation chroot"
mkdir -p "$work/ctx"
cp "$bin" "$work/ctx/scimgate"
cp /etc/ssl/certs/ca-certificates.crt "$work/ctx/"
cat >"$work/ctx/Containerfile" <<'EOF'
FROM scratch
COPY scimgate /scimgate
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/scimgate"]
CMD ["serve", "--config", "/etc/scimgate/scimgate.toml"]
EOF
buildah bud --quiet --isolation chroot -t "$image" -f "$work/ctx/Containerfile" "$work/ctx"
podman image inspect --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}}' "$image"

say "peers on loopback: IdP (JWKS) and scim2-server (the SCIM backend, checks the API key)"
read -r idp_port scim_port proxy_port admin_port < <("$smoke_venv/bin/python" -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
api_key="smoke-upstream-key-$RANDOM$RANDOM"
"$smoke_venv/bin/python" tests/deploy/smoke_idp.py "$idp_port" "$work/tokens" 2>"$work/idp.log" &
pids+=($!)
"$smoke_venv/bin/scim2-server" --hostname 127.0.0.1 --port "$scim_port" --bearer-token "$api_key" 2>"$work/scim.log" &
pids+=($!)
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$idp_port/jwks" >/dev/null 2>&1 \
        && curl -sS -o /dev/null "http://127.0.0.1:$scim_port/v2/ServiceProviderConfig" 2>/dev/null && break
    sleep 0.2
done
[[ -s "$work/tokens/good.jwt" ]] || fail "IdP did not start"

say "config rendered by the Helm chart (ConfigMap scimgate.toml) + the API key as a file"
mkdir -p "$work/config" "$work/keys"
"$deploy_venv/bin/python" - "$work/config/scimgate.toml" <<EOF
import sys, yaml, helm_python as helm
values = {
    "config": {
        "server": {"shutdown_grace": "5s"},
        "upstream": {"url": "http://127.0.0.1:$scim_port/v2"},
        "jwt": {"jwks_url": "http://127.0.0.1:$idp_port/jwks", "issuer": "http://127.0.0.1:$idp_port",
                "audience": ["scimgate"], "algorithms": ["RS256"]},
        "rules": [{"name": "provisioners", "claim": "groups", "value": "scim-provisioners",
                   "service_account": "provisioner"}],
        "service_accounts": {"provisioner": {"header": "authorization", "scheme": "Bearer"}},
    },
    "apiKeys": {"keys": {"provisioner": "unused-here"}},
}
with helm.Chart.load("charts/scimgate") as chart:
    out = chart.render(values, name="smoke", namespace="smoke", is_install=True)
cm = yaml.safe_load(out["scimgate/templates/configmap.yaml"])
open(sys.argv[1], "w").write(cm["data"]["scimgate.toml"])
EOF
printf '%s\n' "$api_key" >"$work/keys/provisioner"
# As the kubelet mounts them: ConfigMap 0644, key 0440 owned by group 65532 (the pod's fsGroup).
chmod 0644 "$work/config/scimgate.toml"
chgrp 65532 "$work/keys/provisioner"
chmod 0440 "$work/keys/provisioner"
chmod 0755 "$work/config" "$work/keys"
sed -n '1,200p' "$work/config/scimgate.toml"

say "podman run --read-only as 65532 (host network; listeners moved to loopback by SCIMGATE_* env)"
podman run -d --name "$name" --runtime runc --network host --read-only \
    --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
    --cap-drop ALL --security-opt no-new-privileges \
    -e SCIMGATE_SERVER__LISTEN="127.0.0.1:$proxy_port" -e SCIMGATE_ADMIN__LISTEN="127.0.0.1:$admin_port" \
    -v "$work/config:/etc/scimgate:ro" -v "$work/keys:/var/run/secrets/scimgate:ro" \
    "$image" >/dev/null
ready=""
for _ in $(seq 100); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")" == 200 ]]; then ready=1; break; fi
    [[ "$(podman inspect --format '{{.State.Running}}' "$name")" == true ]] || break
    sleep 0.2
done
podman logs "$name" 2>&1 | head -5
[[ -n "$ready" ]] || fail "/readyz never returned 200"
echo "process user: $(podman top "$name" user huser | tail -1)"

say "it serves"
results=0
expect() {  # expect WHAT STATUS CURL-ARGS...
    local what="$1" want="$2"; shift 2
    local got
    got="$(curl -s -o "$work/body" -w '%{http_code}' "$@")"
    if [[ "$got" == "$want" ]]; then echo "  PASS  $what: $got"; else echo "  FAIL  $what: $got (want $want)"; cat "$work/body"; echo; results=1; fi
}
base="http://127.0.0.1:$proxy_port"   # the IdP's SCIM base URL; upstream.url ends in /v2
good="$(cat "$work/tokens/good.jwt")"
expect "GET /healthz (admin)" 200 "http://127.0.0.1:$admin_port/healthz"
expect "GET /Users without a token" 401 "$base/Users"
expect "GET /Users with a token of another group" 403 -H "Authorization: Bearer $(cat "$work/tokens/other-group.jwt")" "$base/Users"
expect "GET /Users with a good token (scim2-server checked the API key)" 200 -H "Authorization: Bearer $good" "$base/Users"
expect "POST /Users creates a user" 201 -H "Authorization: Bearer $good" -H 'Content-Type: application/scim+json' \
    --data '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"smoke.user"}' "$base/Users"
expect "GET /metrics (admin)" 200 "http://127.0.0.1:$admin_port/metrics"
if grep -q '^scimgate_requests_total' "$work/body"; then
    echo "  PASS  scimgate_requests_total exported"
else
    echo "  FAIL  no scimgate_requests_total"; results=1
fi

say "podman stop -t 15: SIGTERM, graceful drain, exit 0 (137 would mean SIGKILL)"
start=$(date +%s.%N)
podman stop -t 15 "$name" >/dev/null
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
code="$(podman inspect --format '{{.State.ExitCode}}' "$name")"
podman logs "$name" 2>&1 | tail -3
printf 'stopped in %.2fs, exit code %s\n' "$elapsed" "$code"
if [[ "$code" == 0 ]] && (($(echo "$elapsed < 15" | bc))); then
    echo "  PASS  ended by SIGTERM within the grace period"
else
    echo "  FAIL  exit code $code after ${elapsed}s"; results=1
fi
((results == 0)) || fail "see above"
echo "smoke: all passed"
