#!/usr/bin/env python3
"""Chart checks run by tests/deploy/check.sh (inside its venv).

Phases, each printing one PASS/FAIL line per check and exiting non-zero on any failure:
  lint      helm lint --strict (Helm Go SDK via helm-python-sdk) of the chart and the example
  render    render every scenario to WORK/rendered/<scenario>.yaml
  validate  kubernetes-validate --strict against k8s 1.29 and the newest bundled schema version
  assert    structural checks on the rendered manifests (native sidecar, probes, securityContext,
            Service/ServiceMonitor ports, PrometheusRule and dashboard ConfigMap, no ConfigMap/Secret
            checksums, TOML round trip)
  negative  values that must be rejected at install (schema and template guards)
  toml      the rendered ConfigMaps' TOML through `scimgate check --strict`
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "scimgate"
EXAMPLE = CHART / "examples" / "scim-backend"
VALUES = REPO / "tests" / "deploy" / "values"
RELEASE, NAMESPACE = "demo", "scim"
K8S_OLDEST = "1.29.0"  # Chart.yaml kubeVersion: ">=1.29.0-0"

# scenario -> (chart: "chart" | "example", value files in order, extra values)
SCENARIOS: dict[str, tuple[str, list[str], dict]] = {
    "standalone": ("chart", ["standalone.yaml"], {}),
    "standalone-full": ("chart", ["standalone.yaml", "full.yaml"], {}),
    "multi-account": ("chart", ["multi-account.yaml"], {}),
    "issuer": ("chart", ["standalone.yaml", "issuer.yaml"], {}),
    "sidecar-native": ("example", [], {}),
    "sidecar-fallback": ("example", ["sidecar-fallback.yaml"], {}),
}

RESULTS = {"passed": 0, "failed": 0}


def report(ok: bool, what: str, detail: str = "") -> bool:
    RESULTS["passed" if ok else "failed"] += 1
    print(f"  {'PASS' if ok else 'FAIL'}  {what}")
    if detail and (not ok or os.environ.get("CHECK_VERBOSE")):
        for line in detail.rstrip().splitlines():
            print(f"        {line}")
    return ok


def merge(base: dict, over: dict) -> dict:
    """Helm's -f coalescing: maps merge recursively, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def scenario_values(name: str, extra: dict | None = None) -> dict:
    _, files, base_extra = SCENARIOS[name]
    values: dict = {}
    for f in files:
        values = merge(values, yaml.safe_load((VALUES / f).read_text()) or {})
    values = merge(values, base_extra)
    return merge(values, extra or {})


def example_chart(work: Path) -> Path:
    """The example chart with the scimgate chart packaged into charts/ (what `helm dep update` does)."""
    dest = work / "example" / "scim-backend"
    if not dest.exists():
        shutil.copytree(EXAMPLE, dest)
        (dest / "charts").mkdir(exist_ok=True)
        with helm.Chart.load(CHART) as chart:
            chart.save(dest / "charts")  # honours .helmignore, like a real package
    return dest


def chart_path(kind: str, work: Path) -> Path:
    return CHART if kind == "chart" else example_chart(work)


def render(kind: str, values: dict, work: Path) -> dict[str, str]:
    with helm.Chart.load(chart_path(kind, work)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt") or not text.strip():
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def rendered(work: Path, name: str) -> Path | None:
    """The scenario's rendered file, or None (reported as a failure) when rendering failed."""
    path = work / "rendered" / f"{name}.yaml"
    if path.exists():
        return path
    report(False, f"{name}: no rendered manifests (see the render step)")
    return None


def load_rendered(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---------------------------------------------------------------------------------------- phases


def phase_lint(work: Path) -> None:
    targets = [("chart defaults", CHART, None)]
    targets += [(f"chart + {n}", CHART, scenario_values(n)) for n, s in SCENARIOS.items() if s[0] == "chart"]
    targets += [("example scim-backend (native sidecar)", example_chart(work), None)]
    targets += [("example scim-backend (fallback)", example_chart(work), scenario_values("sidecar-fallback"))]
    for label, path, values in targets:
        for kube in (f"v{K8S_OLDEST}", f"v{kubernetes_validate.latest_version()}"):
            result = helm.lint(path, values, strict=True, namespace=NAMESPACE, kube_version=kube)
            # Severity 1 (info) is only "icon is recommended"; warnings fail under --strict.
            problems = [m for m in result["messages"] if m["severity"] >= 2]
            if result["errors"] and not problems:
                problems = [{"path": "", "error": e} for e in result["errors"]]
            info = "\n".join(f"[{m['severity']}] {m['path']}: {m['error']}" for m in result["messages"])
            detail = "\n".join(f"{m['path']}: {m['error']}" for m in problems) or info
            report(not problems, f"helm lint --strict --kube-version {kube}: {label}", detail)


def phase_render(work: Path) -> None:
    out = work / "rendered"
    out.mkdir(parents=True, exist_ok=True)
    for name, (kind, files, _) in SCENARIOS.items():
        try:
            rendered = render(kind, scenario_values(name), work)
        except helm.HelmError as e:
            report(False, f"render {name}", str(e))
            continue
        text = "".join(
            f"---\n# Source: {k}\n{v.strip()}\n" for k, v in sorted(rendered.items())
            if v.strip() and not k.endswith("NOTES.txt")
        )
        (out / f"{name}.yaml").write_text(text)
        kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in manifests(rendered))
        report(True, f"render {name} ({kind}, values: {', '.join(files) or 'example defaults'})", "\n".join(kinds))


def kubernetes_validate_file(venv_bin: Path, version: str, path: Path) -> tuple[bool, str]:
    proc = subprocess.run(
        [str(venv_bin / "kubernetes-validate"), "--strict", "-k", version, str(path)],
        capture_output=True, text=True, timeout=120,
    )
    out = (proc.stdout + proc.stderr).strip()
    lines = out.splitlines()
    # kubernetes-validate bundles no CRD schemas: a ServiceMonitor or PrometheusRule only gets a
    # WARN (checked in the assert phase instead; the rules by promtool in tests/ops). Any other
    # WARN (an unknown kind or version) is a failure.
    unexpected = [l for l in lines if l.startswith(("ERROR", "WARN"))
                  and "kind ServiceMonitor" not in l and "kind PrometheusRule" not in l]
    passed = sum(1 for l in lines if l.startswith("INFO") and " passed " in l)
    return proc.returncode == 0 and not unexpected and passed > 0, out


def phase_validate(work: Path, venv_bin: Path) -> None:
    versions = [K8S_OLDEST, kubernetes_validate.latest_version()]
    for name in SCENARIOS:
        path = rendered(work, name)
        if path is None:
            continue
        for version in versions:
            ok, out = kubernetes_validate_file(venv_bin, version, path)
            report(ok, f"kubernetes-validate --strict -k {version} {name}", out)
    # The validator must not be vacuous: a string containerPort and an unknown field must fail.
    standalone, sidecar = rendered(work, "standalone"), rendered(work, "sidecar-native")
    if standalone is None or sidecar is None:
        return
    text = standalone.read_text()
    broken = work / "rendered" / "broken.yaml.txt"
    for what, old, new in [
        ("string containerPort", "containerPort: 8080", 'containerPort: "8080"'),
        ("unknown probe field", "periodSeconds: 10", "periodSecs: 10"),
    ]:
        broken.write_text(text.replace(old, new, 1))
        ok, out = kubernetes_validate_file(venv_bin, K8S_OLDEST, broken)
        report(not ok and "ERROR" in out, f"kubernetes-validate rejects a broken manifest ({what})",
               "\n".join(l for l in out.splitlines() if l.startswith("ERROR")))
    broken.unlink()
    # Native sidecars need >= 1.29: the 1.27 schema has no initContainers[].restartPolicy.
    ok, out = kubernetes_validate_file(venv_bin, "1.27.0", sidecar)
    report(not ok and "restartPolicy" in out,
           "kubernetes-validate -k 1.27.0 rejects the native sidecar (why kubeVersion is >=1.29)",
           "\n".join(l for l in out.splitlines() if l.startswith("ERROR")))


def find(docs: list[dict], kind: str, name_part: str = "") -> dict | None:
    for d in docs:
        if d["kind"] == kind and name_part in d["metadata"]["name"]:
            return d
    return None


def check_container(c: dict, admin_port: str, what: str) -> None:
    sc = c.get("securityContext", {})
    report(
        sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 65532 and sc.get("runAsGroup") == 65532
        and sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
        and sc.get("capabilities", {}).get("drop") == ["ALL"]
        and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        f"{what}: securityContext nonroot 65532:65532, read-only root, no escalation, drop ALL, RuntimeDefault",
        yaml.safe_dump(sc),
    )
    live, ready = c.get("livenessProbe", {}), c.get("readinessProbe", {})
    report(
        live.get("httpGet", {}).get("path") == "/healthz" and live["httpGet"].get("port") == admin_port
        and ready.get("httpGet", {}).get("path") == "/readyz" and ready["httpGet"].get("port") == admin_port,
        f"{what}: liveness /healthz and readiness /readyz on the admin port ({admin_port})",
    )
    res = c.get("resources", {})
    report(bool(res.get("requests")) and bool(res.get("limits", {}).get("memory")), f"{what}: resources set")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    report(
        all(m.get("readOnly") and "subPath" not in m for m in mounts.values())
        and mounts.get("scimgate-config", {}).get("mountPath") == "/etc/scimgate",
        f"{what}: config and keys mounted read-only as directories (no subPath: updates reach the process)",
    )


def check_native_sidecar(docs: list[dict]) -> None:
    deploy = find(docs, "Deployment", "scim-backend")
    pod = deploy["spec"]["template"]["spec"]
    init = [c for c in pod.get("initContainers", []) if c["name"] == "scimgate"]
    report(len(init) == 1 and all(c["name"] != "scimgate" for c in pod["containers"]),
           "native sidecar: scimgate is under initContainers, not containers")
    if not init:
        return
    c = init[0]
    report(c.get("restartPolicy") == "Always", "native sidecar: restartPolicy: Always")
    probe = c.get("startupProbe", {}).get("httpGet", {})
    report(probe.get("path") == "/readyz" and probe.get("port") == "scimgate-admin",
           "native sidecar: startupProbe on /readyz (the backend starts after auth is ready)")
    volumes = {v["name"]: v for v in pod["volumes"]}
    keys = next((m for m in c["volumeMounts"] if m["name"] == "scimgate-api-keys"), None)
    secret = volumes.get("scimgate-api-keys", {}).get("secret", {})
    report(keys is not None and bool(secret.get("secretName")) and secret.get("defaultMode") == 0o440
           and pod.get("securityContext", {}).get("fsGroup") == 65532,
           "native sidecar: API keys mounted from a Secret (mode 0440, pod fsGroup 65532)",
           f"mount: {keys}\nvolume: {volumes.get('scimgate-api-keys')}")
    cm = find(docs, "ConfigMap", "-config")
    report(cm is not None and volumes["scimgate-config"]["configMap"]["name"] == cm["metadata"]["name"],
           "native sidecar: config volume names the subchart's ConfigMap",
           f"{volumes['scimgate-config']} vs {cm and cm['metadata']['name']}")
    check_container(c, "scimgate-admin", "native sidecar")
    report(find(docs, "Deployment", "scimgate") is None and find(docs, "Service", "scimgate") is None,
           "sidecar mode: the subchart renders no Deployment/Service of its own")


def check_monitoring(docs: list[dict], what: str, namespace: str, selector: bool) -> None:
    """The PrometheusRule and the dashboard ConfigMap. Their content (the rules against promtool and
    a real Prometheus, the dashboard against @grafana/schema) is tested by tests/ops/run.sh."""
    import json
    plain = yaml.safe_load((CHART / "alerts" / "scimgate.rules.yaml").read_text())
    rule = find(docs, "PrometheusRule")
    names = [r["alert"] for r in (rule or {}).get("spec", {}).get("groups", [{}])[0].get("rules", [])]
    want = [r["alert"] for g in plain["groups"] for r in g["rules"]]
    exprs = [r["expr"] for g in (rule or {}).get("spec", {}).get("groups", []) for r in g["rules"]]
    report(rule is not None and rule["apiVersion"] == "monitoring.coreos.com/v1" and names == want
           and rule["metadata"]["namespace"] == namespace
           and (not selector or all(f'namespace="{NAMESPACE}"' in e for e in exprs)),
           f"{what}: PrometheusRule with the {len(want)} alerts of alerts/scimgate.rules.yaml"
           + (", the selector in every expression" if selector else ""), yaml.safe_dump(rule))
    dash = find(docs, "ConfigMap", "-dashboard")
    ok = dash is not None and dash["metadata"]["labels"].get("grafana_dashboard") == "1" and dash["metadata"]["namespace"] == namespace
    if ok:
        ok = json.loads(dash["data"]["scimgate.json"]) == json.loads((CHART / "dashboards" / "scimgate.json").read_text())
    report(ok, f"{what}: dashboard ConfigMap with grafana_dashboard: \"1\" holding dashboards/scimgate.json")


def check_fallback_sidecar(docs: list[dict]) -> None:
    pod = find(docs, "Deployment", "scim-backend")["spec"]["template"]["spec"]
    c = next((c for c in pod["containers"] if c["name"] == "scimgate"), None)
    report(c is not None and not any(i["name"] == "scimgate" for i in pod.get("initContainers") or []),
           "fallback sidecar: scimgate is a regular container")
    if c:
        report("restartPolicy" not in c, "fallback sidecar: no container restartPolicy")
        check_container(c, "scimgate-admin", "fallback sidecar")
    check_monitoring(docs, "fallback sidecar (subchart)", namespace=NAMESPACE, selector=False)


def check_standalone(docs: list[dict], full: bool, what: str) -> None:
    deploy = find(docs, "Deployment", "scimgate")
    pod = deploy["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check_container(c, "admin", what)
    keys = next(v for v in pod["volumes"] if v["name"] == "scimgate-api-keys")["secret"]
    report(keys.get("defaultMode") == 0o440, f"{what}: API keys mounted from a Secret, mode 0440", str(keys))
    psc = pod.get("securityContext", {})
    report(psc.get("runAsNonRoot") is True and psc.get("fsGroup") == 65532
           and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
           and pod.get("automountServiceAccountToken") is False,
           f"{what}: pod securityContext (nonroot, fsGroup 65532, RuntimeDefault), no API token")
    annotations = deploy["spec"]["template"]["metadata"].get("annotations", {})
    checksums = sorted(k for k in annotations if k.startswith("checksum/"))
    report(checksums == ["checksum/restart-only-config"],
           f"{what}: only the restart-only checksum annotation (ConfigMap/Secret are hot-reloaded)",
           str(checksums))
    svc = find(docs, "Service", "scimgate")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    report(set(ports) == {"http", "metrics"} and ports["http"]["targetPort"] in container_ports
           and ports["metrics"]["targetPort"] in container_ports,
           f"{what}: Service ports http and metrics target named container ports",
           f"{ports}\n{container_ports}")
    kinds = {d["kind"] for d in docs}
    report({"PodDisruptionBudget", "ServiceAccount", "ConfigMap", "Secret"} <= kinds,
           f"{what}: PodDisruptionBudget, ServiceAccount, ConfigMap, Secret rendered", str(sorted(kinds)))
    if full:
        report({"ServiceMonitor", "NetworkPolicy", "HorizontalPodAutoscaler"} <= kinds
               and "replicas" not in deploy["spec"],
               f"{what}: ServiceMonitor, NetworkPolicy, HPA rendered; replicas left to the HPA")
        check_service_monitor(find(docs, "ServiceMonitor"), svc)
        check_monitoring(docs, what, namespace="monitoring", selector=True)
    if what == "issuer":
        check_issuer_keys(docs, pod, c)


def check_issuer_keys(docs: list[dict], pod: dict, c: dict) -> None:
    """The issuer's signing keys: mounted read-only from their own Secret, 0440, and rendered into
    issuer.signing_key_files in the order of issuerKeys.files (the first signs)."""
    volume = next((v for v in pod["volumes"] if v["name"] == "scimgate-issuer-keys"), {}).get("secret", {})
    mount = next((m for m in c["volumeMounts"] if m["name"] == "scimgate-issuer-keys"), {})
    report(volume.get("secretName") == "scimgate-issuer-keys" and volume.get("defaultMode") == 0o440
           and mount.get("mountPath") == "/var/run/secrets/scimgate-issuer" and mount.get("readOnly") is True,
           "issuer: signing keys mounted read-only from their Secret, mode 0440", f"{volume}\n{mount}")
    parsed = tomllib.loads(find(docs, "ConfigMap", "-config")["data"]["scimgate.toml"])
    files = parsed.get("issuer", {}).get("signing_key_files")
    report(files == ["/var/run/secrets/scimgate-issuer/current.pem", "/var/run/secrets/scimgate-issuer/previous.pem"],
           "issuer: issuer.signing_key_files from issuerKeys.files, in order", str(files))


def check_service_monitor(sm: dict, svc: dict) -> None:
    # No CRD schema is bundled with kubernetes-validate: check the fields the operator needs.
    import re
    duration = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
    spec = sm["spec"]
    ep = spec["endpoints"][0]
    selector = spec["selector"]["matchLabels"]
    ok = (
        sm["apiVersion"] == "monitoring.coreos.com/v1"
        and ep["port"] == "metrics" and ep["path"] == "/metrics"
        and all(svc["metadata"]["labels"].get(k) == v for k, v in selector.items())
        and spec["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
        and all(duration.match(ep[k]) for k in ("interval", "scrapeTimeout") if k in ep)
        and isinstance(ep.get("relabelings", []), list) and isinstance(ep.get("metricRelabelings", []), list)
        and sm["metadata"]["labels"].get("release") == "kube-prometheus-stack"
        and sm["metadata"]["namespace"] == "monitoring"
    )
    report(ok, "ServiceMonitor: port metrics /metrics, selector matches the Service, namespaceSelector, "
               "interval/scrapeTimeout pattern, labels/relabelings/metricRelabelings", yaml.safe_dump(sm))


def check_toml_roundtrip(docs: list[dict], values: dict, what: str) -> None:
    cm = find(docs, "ConfigMap", "-config")
    try:
        parsed = tomllib.loads(cm["data"]["scimgate.toml"])
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        report(False, f"{what}: rendered TOML parses", str(e))
        return
    expected = {k: v for k, v in values.get("config", {}).items()}
    mismatches = []
    for section, body in expected.items():
        if isinstance(body, dict):
            for key, value in body.items():
                got = parsed.get(section, {}).get(key)
                if isinstance(value, dict):
                    got = {k: v for k, v in (got or {}).items() if k in value}
                if got != value:
                    mismatches.append(f"{section}.{key}: values {value!r} != TOML {got!r}")
        elif parsed.get(section) != body:
            mismatches.append(f"{section}: values {body!r} != TOML {parsed.get(section)!r}")
    report(not mismatches, f"{what}: rendered TOML parses and carries every value from config:",
           "\n".join(mismatches))


def phase_assert(work: Path) -> None:
    for name in SCENARIOS:
        path = rendered(work, name)
        if path is None:
            continue
        docs = load_rendered(path)
        print(f"  -- {name}")
        if name == "sidecar-native":
            check_native_sidecar(docs)
        elif name == "sidecar-fallback":
            check_fallback_sidecar(docs)
        else:
            check_standalone(docs, full=name == "standalone-full", what=name)
        values = scenario_values(name)
        check_toml_roundtrip(docs, values.get("scimgate", values) if SCENARIOS[name][0] == "example" else values, name)


def standalone_with(overlay: dict, **replace) -> dict:
    """The standalone scenario's values with `overlay` merged in; `replace` swaps whole keys
    (dotted paths), since merging cannot empty a map or a list."""
    values = merge(scenario_values("standalone"), overlay)
    for dotted, value in replace.items():
        *parents, last = dotted.split("__")
        node = values
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return values


# (what, chart, values, a fragment the error must contain)
NEGATIVE: list[tuple[str, str, dict, str]] = [
    ("string container port", "chart", standalone_with({"containerPorts": {"http": "8080"}}), "/containerPorts/http"),
    ("string Service port", "chart", standalone_with({"service": {"ports": {"http": "http"}}}), "/service/ports/http"),
    ("port out of range", "chart", standalone_with({"containerPorts": {"admin": 70000}}), "/containerPorts/admin"),
    ("unknown config key (typo jwks_uri)", "chart", standalone_with({"config": {"jwt": {"jwks_uri": "https://x"}}}), "jwks_uri"),
    ("chart-owned key server.listen", "chart", standalone_with({"config": {"server": {"listen": "0.0.0.0:1"}}}), "listen"),
    ("duration without unit", "chart", standalone_with({"config": {"jwt": {"leeway": "30"}}}), "/config/jwt/leeway"),
    ("symmetric algorithm HS256", "chart", standalone_with({"config": {"jwt": {"algorithms": ["HS256"]}}}), "/config/jwt/algorithms"),
    ("numeric rule value", "chart", standalone_with({}, config__rules=[{"name": "a", "claim": "c", "value": 42, "service_account": "provisioner"}]), "/config/rules/0/value"),
    ("unknown mode", "chart", standalone_with({"mode": "daemonset"}), "/mode"),
    ("bad ServiceMonitor interval", "chart", standalone_with({"metrics": {"serviceMonitor": {"enabled": True, "interval": "30 seconds"}}}), "interval"),
    ("string port through the parent chart", "example", {"scimgate": {"containerPorts": {"http": "8080"}}}, "/containerPorts/http"),
    ("chart defaults at install (no rules)", "chart", {}, "config.rules is empty"),
    ("account without an API key", "chart", standalone_with({}, apiKeys__keys={}), 'service account "provisioner" has no API key'),
    ("rule naming an unknown account", "chart", standalone_with({}, config__rules=[{"name": "a", "claim": "c", "value": "v", "service_account": "prov"}]), 'no service account "prov"'),
    ("api_key_env with \"__\" (read as a SCIMGATE_<SECTION>__<KEY> override)", "chart", standalone_with({"config": {"service_accounts": {"provisioner": {"api_key_env": "SCIMGATE_JWT__KEY"}}}}), "api_key_env"),
    ("a rule allowing an unknown operation", "chart", standalone_with({"config": {"rules": [{"name": "r", "claim": "groups", "value": "v", "service_account": "provisioner", "allow": ["erase"]}]}}), "allow"),
    ("tls without a Secret", "chart", standalone_with({"tls": {"enabled": True}}), "tls.existingSecret"),
    ("issuer without its signing keys", "chart", standalone_with({"config": {"issuer": {"url": "https://gw.example", "clients": [{"client_id": "okta", "scope": ["scim"]}]}}}), "issuerKeys.existingSecret"),
    ("issuer client with a secret and an assertion", "chart", standalone_with({"issuerKeys": {"existingSecret": "k"}, "config": {"issuer": {"url": "https://gw.example", "clients": [{"client_id": "c", "scope": ["scim"], "secret_sha256": "0" * 64, "assertion": {"issuer": "i", "jwks_url": "https://i/keys", "subject": "s", "audience": "a"}}]}}}), "/config/issuer/clients/0"),
    ("an alert threshold above 1", "chart", standalone_with({"metrics": {"prometheusRule": {"enabled": True, "denyRatio": 2}}}), "denyRatio"),
    ("disabling an alert that does not exist", "chart", standalone_with({"metrics": {"prometheusRule": {"enabled": True, "disabledAlerts": ["ScimgateDown"]}}}), "disabledAlerts"),
    ("jwksMaxStale without a unit", "chart", standalone_with({"metrics": {"prometheusRule": {"enabled": True, "jwksMaxStale": "86400"}}}), "jwksMaxStale"),
]


def phase_negative(work: Path) -> None:
    for what, kind, values, expect in NEGATIVE:
        try:
            render(kind, values, work)
            report(False, f"rejected: {what}", "rendered without error")
        except helm.HelmError as e:
            msg = str(e).strip()
            report(expect in msg, f"rejected: {what} ({type(e).__name__})", msg)
            if what == "string container port":
                print("        helm's error:")
                for line in msg.splitlines():
                    print(f"          {line}")


def phase_toml(work: Path, binary: str) -> None:
    """Render each scenario's ConfigMap with the key/TLS mounts pointed at throwaway files, then
    `scimgate check --strict` it. check validates the config and reads the key files; it does not
    contact the JWKS URL or the upstream."""
    base = work / "scimgate-check"
    shutil.rmtree(base, ignore_errors=True)
    # SCIMGATE_* variables are config overrides: keep the caller's out of the check.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMGATE_")}
    env["FROM_ENV_API_KEY"] = "throwaway-env-key"  # multi-account's api_key_env account
    for name, (kind, _, _) in SCENARIOS.items():
        d = base / name
        (d / "keys").mkdir(parents=True)
        (d / "tls").mkdir()
        (d / "issuer").mkdir()
        override = {"apiKeys": {"mountPath": str(d / "keys")}, "tls": {"mountPath": str(d / "tls")},
                    "issuerKeys": {"mountPath": str(d / "issuer")}}
        values = scenario_values(name, {"scimgate": override} if kind == "example" else override)
        try:
            docs = manifests(render(kind, values, work))
        except helm.HelmError as e:
            report(False, f"scimgate check --strict: {name} (render failed)", str(e))
            continue
        text = find(docs, "ConfigMap", "-config")["data"]["scimgate.toml"]
        config = d / "scimgate.toml"
        config.write_text(text)
        parsed = tomllib.loads(text)
        for account, body in parsed.get("service_accounts", {}).items():
            if "api_key_file" in body:
                Path(body["api_key_file"]).write_text(f"throwaway-key-for-{account}\n")
        if "tls_cert_file" in parsed.get("server", {}):
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-days", "1", "-subj", "/CN=scimgate.check", "-keyout", parsed["server"]["tls_key_file"],
                 "-out", parsed["server"]["tls_cert_file"]],
                check=True, capture_output=True, timeout=60,
            )
        for key_file in parsed.get("issuer", {}).get("signing_key_files", []):
            subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-out", key_file], check=True, capture_output=True, timeout=60)
        proc = subprocess.run([binary, "check", "--strict", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, env=env)
        report(proc.returncode == 0, f"scimgate check --strict: {name} ConfigMap TOML",
               f"{proc.stdout}{proc.stderr}\n--- {config}\n{text}" if proc.returncode else proc.stdout)
    # And check is not vacuous: the same config without its key file must fail --strict.
    key = base / "standalone" / "keys" / "provisioner"
    if not key.exists():
        report(False, "scimgate check --strict fails when a mounted key file is missing (no standalone config)")
        return
    key.unlink()
    proc = subprocess.run([binary, "check", "--strict", "--config", str(base / "standalone" / "scimgate.toml")],
                          capture_output=True, text=True, timeout=60, env=env)
    report(proc.returncode == 1 and "api_key_file" in proc.stderr,
           "scimgate check --strict fails when a mounted key file is missing", proc.stdout + proc.stderr)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["lint", "render", "validate", "assert", "negative", "toml"])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--bin", help="scimgate binary (phase toml)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.phase == "lint":
        phase_lint(args.work)
    elif args.phase == "render":
        phase_render(args.work)
    elif args.phase == "validate":
        phase_validate(args.work, Path(sys.executable).parent)
    elif args.phase == "assert":
        phase_assert(args.work)
    elif args.phase == "negative":
        phase_negative(args.work)
    elif args.phase == "toml":
        phase_toml(args.work, args.bin)
    counts = args.work / "counts"
    with counts.open("a") as f:
        f.write(f"{RESULTS['passed']} {RESULTS['failed']}\n")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
