#!/usr/bin/env bash
# Operational checks with real tools (issue 20, and the CI half of issue 15 §2): the alert rules
# (promtool), the Grafana dashboard (tsc --strict against @grafana/schema), a real Prometheus
# scraping a running scimgate, and the image in podman plus the chart's fallback sidecar with
# `podman kube play`. What each part proves and what it cannot: docs/operations.md.
#
#   bash tests/ops/run.sh [rules] [dashboard] [metrics] [prometheus] [container]   (default: all)
#   bash tests/ops/run.sh --write-rules    regenerate charts/scimgate/alerts/scimgate.rules.yaml
#
# Installs what it needs: Debian prometheus, podman, buildah, runc, catatonit (apt, as root, only
# when missing); a venv from tests/ops/requirements.txt; npm packages from tests/ops/dashboard.
# Environment:
#   SCIMGATE_BIN       the scimgate binary (default: target/release/scimgate when newer than the
#                      sources, e.g. the one tests/interop/run.sh built; else cargo build --release)
#   SCIMGATE_OPS_KEEP=1  keep the work directory (configs, logs, generated files)
#   CHECK_VERBOSE=1    print the details of passing checks too
# Ends with "ops: N passed, N failed"; exits non-zero on any failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
here=tests/ops
export PYTHONDONTWRITEBYTECODE=1
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$repo/target/ops-venv"
node_dir="$repo/target/ops-node"
started=$SECONDS
failed_steps=()
timings=()

step() { printf '\n=== ops: %s (%ss) ===\n' "$*" "$((SECONDS - started))"; }
count() { echo "$1 $2" >>"$work/counts"; }
# check NAME CMD...: a pass/fail check outside ops.py, counted with its checks.
check() {
    local name="$1"; shift
    if "$@"; then count 1 0; echo "  PASS  $name"; else count 0 1; echo "  FAIL  $name"; failed_steps+=("$name"); fi
}
# part NAME: run one part with its time recorded; a failing part does not stop the others.
part() {
    local name="$1" t0=$SECONDS rc=0
    step "$name"
    "part_$name" || rc=$?
    timings+=("$name $((SECONDS - t0))s")
    ((rc == 0)) || failed_steps+=("$name")
}

if [[ ${1:-} == --write-rules ]]; then
    parts=(write)
else
    parts=("$@")
    ((${#parts[@]})) || parts=(rules dashboard metrics prometheus container)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/scimgate-ops.XXXXXX")"
chmod 755 "$work"
cleanup() {
    if [[ -n ${SCIMGATE_OPS_KEEP:-} ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
touch "$work/counts"

# ------------------------------------------------------------------------------------------ tools
step "tools"
t0=$SECONDS
needs() { # the apt packages for the parts asked for, that are missing
    local p pkgs=()
    for p in "${parts[@]}"; do
        case $p in
            rules | metrics | prometheus) command -v promtool >/dev/null && command -v prometheus >/dev/null || pkgs+=(prometheus) ;;
            container)
                command -v podman >/dev/null || pkgs+=(podman)
                command -v buildah >/dev/null || pkgs+=(buildah)
                command -v runc >/dev/null || pkgs+=(runc)
                command -v catatonit >/dev/null || pkgs+=(catatonit)
                [[ -s /etc/ssl/certs/ca-certificates.crt ]] || pkgs+=(ca-certificates)
                ;;
            dashboard) command -v npm >/dev/null || pkgs+=(nodejs npm) ;;
        esac
    done
    ((${#pkgs[@]})) && printf '%s\n' "${pkgs[@]}" | sort -u
    return 0
}
mapfile -t missing < <(needs)
if ((${#missing[@]})); then
    echo "apt-get install ${missing[*]}"
    [[ $(id -u) == 0 ]] || { echo "not root: install ${missing[*]} first"; exit 1; }
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python="${PYTHON:-python3}"
if ! cmp -s "$here/requirements.txt" "$venv/.ops-requirements" 2>/dev/null; then
    "$python" -m venv "$venv"
    timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.ops-requirements"
fi
py="$venv/bin/python"
ops() { "$py" "$here/ops.py" "$@" --work "$work"; }
for p in "${parts[@]}"; do
    case $p in rules | metrics | prometheus) promtool --version 2>&1 | head -1 ;; container)
        podman --version; buildah --version; runc --version | head -1 ;; esac
done | sort -u
timings+=("tools $((SECONDS - t0))s")

if [[ ${parts[0]} == write ]]; then
    ops rules --write
    exit 0
fi

# The scimgate binary: a release build newer than the sources (tests/interop/run.sh builds it).
newest_source() { find src Cargo.toml Cargo.lock -type f -printf '%T@\n' | sort -n | tail -1 | cut -d. -f1; }
binary() {
    if [[ -n ${SCIMGATE_BIN:-} ]]; then echo "$SCIMGATE_BIN"; return; fi
    local bin="$target/release/scimgate"
    if [[ ! -x $bin ]] || (($(stat -c %Y "$bin") < $(newest_source))); then
        echo "no release binary newer than the sources: cargo build --release --locked" >&2
        timeout 1200 cargo build --release --locked --quiet >&2
    fi
    echo "$bin"
}

# ------------------------------------------------------------------------------------------ parts
part_rules() {
    local rc=0
    ops rules || rc=1
    check "promtool check rules: the plain rules file and the chart's renders (defaults, selector, thresholds)" \
        promtool check rules charts/scimgate/alerts/scimgate.rules.yaml "$work"/rules/chart-*.yaml
    return "$rc"
}

part_dashboard() {
    local rc=0 f out
    ops dashboard || rc=1
    if ! cmp -s "$here/dashboard/package-lock.json" "$node_dir/package-lock.json" 2>/dev/null \
        || [[ ! -x $node_dir/node_modules/.bin/tsc ]]; then
        rm -rf "$node_dir"
        mkdir -p "$node_dir"
        cp "$here/dashboard/package.json" "$here/dashboard/package-lock.json" "$node_dir/"
        (cd "$node_dir" && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
    fi
    cp "$here/dashboard/tsconfig.json" "$node_dir/"
    rm -rf "$node_dir/check"
    mkdir -p "$node_dir/check"
    cp "$work"/dashboard/*.ts "$node_dir/check/"
    echo "  --    @grafana/schema $(node -p "require('$node_dir/node_modules/@grafana/schema/package.json').version"), typescript $("$node_dir/node_modules/.bin/tsc" --version)"
    # One tsc run over the real dashboard and its broken copies; errors are attributed by file.
    out="$work/tsc.out"
    (cd "$node_dir" && timeout 300 node_modules/.bin/tsc -p tsconfig.json --pretty false) >"$out" 2>&1 || true
    grep '^check/scimgate.ts' "$out" | head -20 || true
    check "tsc --strict: the dashboard type-checks against @grafana/schema (as a Dashboard and panel by panel)" \
        bash -c "! grep -q '^check/scimgate.ts' '$out' && grep -q '^check/broken' '$out'"
    # Each broken copy must have more errors than the real dashboard (which has none).
    local i=0 what good
    good=$(grep -c '^check/scimgate.ts' "$out" || true)
    while IFS= read -r what; do
        check "tsc --strict rejects a broken copy: $what" \
            test "$(grep -c "^check/broken$i.ts" "$out" || true)" -gt "$good"
        i=$((i + 1))
    done <"$work/dashboard/expected-broken"
    return "$rc"
}

part_metrics() { ops metrics --bin "$(binary)"; }
part_prometheus() { ops prometheus --bin "$(binary)" --python "$py"; }
part_container() {
    [[ $(id -u) == 0 ]] || { echo "the container part needs root (rootful podman)"; return 1; }
    ops container --bin "$(binary)" --python "$py"
}

for p in "${parts[@]}"; do
    case $p in
        rules | dashboard | metrics | prometheus | container) part "$p" ;;
        *) echo "unknown part: $p (rules, dashboard, metrics, prometheus, container)"; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------------------- summary
passed=0
failed=0
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done <"$work/counts"
printf '\n=== ops: summary (%ss) ===\n' "$((SECONDS - started))"
printf '  %s\n' "${timings[@]}"
if ((${#failed_steps[@]})); then
    printf 'failed: %s\n' "${failed_steps[*]}"
    ((failed > 0)) || failed=${#failed_steps[@]}
fi
echo "ops: $passed passed, $failed failed"
((failed == 0 && ${#failed_steps[@]} == 0))
