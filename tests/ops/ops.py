#!/usr/bin/env python3
"""Operational checks run by tests/ops/run.sh (inside its venv): the shipped alert rules and
Grafana dashboard, a real Prometheus scraping a running scimgate, and the image in a real
container runtime.

Phases, each printing one PASS/FAIL line per check and appending "passed failed" to WORK/counts:
  rules       the PrometheusRule the chart renders equals alerts/scimgate.rules.yaml (the plain
              rules file); a selector reaches every scimgate selector; writes WORK/rules/*.yaml
              for promtool. `--write` regenerates the plain file from the chart instead.
  dashboard   writes WORK/dashboard/*.ts for `tsc --strict` (the dashboard typed with
              @grafana/schema, plus broken variants that must fail) and the ConfigMap check
  metrics     every metric name the dashboard and the rules use is exported by a running binary
  prometheus  a real Prometheus scrapes scimgate through traffic of every outcome: per-family
              series match /metrics, each rule is evaluated against the real series, the alerts
              that traffic can cause fire for real, each dashboard query returns data
  container   the release binary in a FROM scratch image built by buildah, run by podman as the
              Dockerfile's runtime contract says; then the chart's fallback sidecar with
              `podman kube play`
"""

from __future__ import annotations

import argparse
import base64
import copy
import http.client as httpclient
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "tests" / "ops"
CHART = REPO / "charts" / "scimgate"
EXAMPLE = CHART / "examples" / "scim-backend"
PLAIN_RULES = CHART / "alerts" / "scimgate.rules.yaml"
DASHBOARD = CHART / "dashboards" / "scimgate.json"
ISSUER_PY = REPO / "tests" / "interop" / "issuer.py"
STANDALONE_VALUES = REPO / "tests" / "deploy" / "values" / "standalone.yaml"
RELEASE, NAMESPACE = "ops", "scim"
ISS, AUD = "https://issuer.ops.test", "scimgate-ops"
GROUP = "scim-provisioners"

RESULTS = {"passed": 0, "failed": 0}


def report(ok: bool, what: str, detail: str = "") -> bool:
    RESULTS["passed" if ok else "failed"] += 1
    print(f"  {'PASS' if ok else 'FAIL'}  {what}", flush=True)
    if detail and (not ok or os.environ.get("CHECK_VERBOSE")):
        for line in str(detail).rstrip().splitlines()[:60]:
            print(f"        {line}", flush=True)
    return ok


def say(msg: str) -> None:
    print(f"  --    {msg}", flush=True)


def wait_for(what: str, timeout: float, probe, interval: float = 0.1):
    """Polls `probe` until it returns something truthy; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError, KeyError, httpclient.HTTPException) as e:
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


# ------------------------------------------------------------------------------------- rendering


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_chart(values: dict, chart: Path = CHART, release: str = RELEASE) -> list[dict]:
    with helm.Chart.load(chart) as c:
        out = c.render(values, name=release, namespace=NAMESPACE, is_install=True)
    docs = []
    for name, text in sorted(out.items()):
        if name.endswith("NOTES.txt") or not text.strip():
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def example_chart(work: Path) -> Path:
    """The example chart with this chart packaged into charts/ (what `helm dependency update` does)."""
    dest = work / "example" / "scim-backend"
    if not dest.exists():
        shutil.copytree(EXAMPLE, dest)
        (dest / "charts").mkdir(exist_ok=True)
        with helm.Chart.load(CHART) as chart:
            chart.save(dest / "charts")
    return dest


def find(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def rendered_rules(extra: dict | None = None) -> dict:
    values = merge(load_values(STANDALONE_VALUES), {"metrics": {"prometheusRule": {"enabled": True}}})
    rules = find(render_chart(merge(values, extra or {})), "PrometheusRule")
    if len(rules) != 1:
        raise RuntimeError(f"expected one PrometheusRule, got {len(rules)}")
    return rules[0]["spec"]


def plain_rules() -> dict:
    return yaml.safe_load(PLAIN_RULES.read_text())


def all_rules(groups: dict) -> list[dict]:
    return [r for g in groups["groups"] for r in g["rules"]]


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, so the file reads well."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


BlockDumper.add_representer(str, _str)

PLAIN_HEADER = """\
# scimgate alert rules for Prometheus (a `rule_files:` entry). Generated from the Helm chart's
# templates/_alerts.tpl with the default values (jwt.max_stale 24h); the chart's PrometheusRule
# (metrics.prometheusRule.enabled) holds the same rules. Do not edit: change the template and run
#   bash tests/ops/run.sh --write-rules
# CI fails when this file and the template differ. What each alert means and what to do about it:
# docs/operations.md, "Alerts". Unit tests: tests/ops/alerts.test.yaml (promtool test rules).
"""


def phase_rules(work: Path, write: bool) -> None:
    spec = rendered_rules()
    if write:
        PLAIN_RULES.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.dump(spec, Dumper=BlockDumper, sort_keys=False, width=10000, allow_unicode=True)
        PLAIN_RULES.write_text(PLAIN_HEADER + text)
        print(f"wrote {PLAIN_RULES.relative_to(REPO)} ({len(all_rules(spec))} rules)")
        return
    out = work / "rules"
    out.mkdir(parents=True, exist_ok=True)
    plain = plain_rules()
    report(plain == spec, f"{PLAIN_RULES.relative_to(REPO)} equals the chart's PrometheusRule "
           f"(default values, {len(all_rules(spec))} rules)",
           "regenerate it: bash tests/ops/run.sh --write-rules\n--- chart:\n"
           + yaml.dump(spec, Dumper=BlockDumper, sort_keys=False) if plain != spec else "")
    names = [r["alert"] for r in all_rules(spec)]
    report(len(names) == len(set(names)) and all(r.get("labels", {}).get("severity") in ("warning", "critical")
                                                  and r["annotations"].get("summary") and r["annotations"].get("description")
                                                  for r in all_rules(spec)),
           "every alert has a unique name, a severity (warning/critical), a summary and a description", str(names))
    doc = (REPO / "docs" / "operations.md").read_text() if (REPO / "docs" / "operations.md").exists() else ""
    missing = [n for n in names if f"`{n}`" not in doc]
    report(not missing, "docs/operations.md has a runbook entry for every alert", f"missing: {missing}")
    schema = json.loads((CHART / "values.schema.json").read_text())
    enum = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["disabledAlerts"]["items"]["enum"]
    report(sorted(enum) == sorted(names), "values.schema.json: metrics.prometheusRule.disabledAlerts accepts exactly the alert names",
           f"schema: {sorted(enum)}\nrules: {sorted(names)}")
    readme = (CHART / "README.md").read_text()
    missing = [n for n in names if f"`{n}`" not in readme]
    report(not missing, "the chart README names every alert", f"missing: {missing}")
    tests = (HERE / "alerts.test.yaml").read_text()
    untested = [n for n in names if f"alertname: {n}" not in tests]
    report(not untested, "tests/ops/alerts.test.yaml has a promtool unit test for every alert", f"untested: {untested}")

    # A selector must reach every scimgate_* selector of every expression, and nothing else.
    sel = 'namespace="{{ .Release.Namespace }}", service="x"'
    spec_sel = rendered_rules({"metrics": {"prometheusRule": {"selector": sel}}})
    bad = []
    for rule in all_rules(spec_sel):
        for m in re.finditer(r"(scimgate_[a-z_]+)(\{[^}]*\})?", rule["expr"]):
            if m.group(2) is None or not m.group(2).startswith(f'{{namespace="{NAMESPACE}", service="x"'):
                bad.append(f"{rule['alert']}: {m.group(0)}")
    report(not bad, 'metrics.prometheusRule.selector (a template) is added to every scimgate selector', "\n".join(bad))
    # Thresholds and max_stale come from the values.
    spec_thr = rendered_rules({"config": {"jwt": {"max_stale": "1h 30m"}},
                               "metrics": {"prometheusRule": {"denyRatio": 0.5, "disabledAlerts": ["ScimgateConnectionsNearLimit"],
                                                              "additionalRuleLabels": {"team": "identity"}}}})
    by_name = {r["alert"]: r for r in all_rules(spec_thr)}
    report("5400" in by_name["ScimgateNotReady"]["expr"] and "> 0.5" in by_name["ScimgateDenyRateHigh"]["expr"]
           and "ScimgateConnectionsNearLimit" not in by_name
           and all(r["labels"].get("team") == "identity" for r in by_name.values()),
           "values reach the rules: jwt.max_stale 1h 30m -> 5400 s, denyRatio, disabledAlerts, additionalRuleLabels",
           yaml.dump(spec_thr, Dumper=BlockDumper, sort_keys=False))
    promtool_tests(out)
    (out / "chart-default.yaml").write_text(yaml.dump(spec, Dumper=BlockDumper, sort_keys=False))
    (out / "chart-selector.yaml").write_text(yaml.dump(spec_sel, Dumper=BlockDumper, sort_keys=False))
    (out / "chart-thresholds.yaml").write_text(yaml.dump(spec_thr, Dumper=BlockDumper, sort_keys=False))


# Edits of one rule's expression that its tests must catch, beyond never and always firing:
# (alert, what the edit does, text in the shipped expression, its replacement).
EXPR_MUTANTS = [
    ("ScimgateUpstreamErrors", "withheld responses left out of the requests sent upstream",
     '|upstream_rejected_credential|upstream_withheld"', '|upstream_rejected_credential"'),
    ("ScimgateUpstreamErrors", "withheld responses counted as backend failures",
     'outcome=~"upstream_unavailable|upstream_timeout"', 'outcome=~"upstream_unavailable|upstream_timeout|upstream_withheld"'),
    ("ScimgateUpstreamWithheld", "every upstream outcome pages",
     'outcome="upstream_withheld"', 'outcome=~"upstream_.*"'),
    ("ScimgateUpstreamWithheld", "one alert per instance instead of one per job",
     "sum without (instance, pod) (increase(", "(increase("),
    ("ScimgateDeprovisioningStopped", "every guardrail pages",
     'guardrail="deprovision_budget"', 'guardrail=~".+"'),
    ("ScimgateGuardrailRefusals", "budget trips warn as well as page",
     'guardrail!="deprovision_budget"', 'guardrail=~".+"'),
]


def promtool_tests(out: Path) -> None:
    """promtool test rules on the shipped file, then on mutants: each alert made never to fire,
    and made to fire always, plus the expression edits of EXPR_MUTANTS. Every mutant must fail
    the tests, or an alert is not really tested."""
    def run(test_file: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120)
    proc = run(HERE / "alerts.test.yaml")
    cases = len(yaml.safe_load((HERE / "alerts.test.yaml").read_text())["tests"])
    report(proc.returncode == 0, f"promtool test rules tests/ops/alerts.test.yaml: {cases} test groups pass",
           proc.stdout + proc.stderr)
    mutants = out / "mutants"
    mutants.mkdir(exist_ok=True)
    tests = yaml.safe_load((HERE / "alerts.test.yaml").read_text())
    shipped = {r["alert"]: r["expr"] for r in all_rules(plain_rules())}
    edits = [(alert, how, lambda _: expr) for alert in shipped
             for how, expr in (("never fires", "vector(1) == 0"), ("always fires", "vector(1)"))]
    stale = [f"{alert}: {how}" for alert, how, old, _ in EXPR_MUTANTS if old not in shipped.get(alert, "")]
    report(not stale, f"each of the {len(EXPR_MUTANTS)} expression mutants edits its rule's shipped expression",
           f"no longer applies: {stale}")
    edits += [(alert, how, lambda e, old=old, new=new: e.replace(old, new))
              for alert, how, old, new in EXPR_MUTANTS if old in shipped.get(alert, "")]
    survived = []
    for i, (alert, how, mutate) in enumerate(edits):
        rules = plain_rules()
        for r in all_rules(rules):
            if r["alert"] == alert:
                r["expr"] = mutate(r["expr"])
        name = f"{i:02d}-{alert}"
        (mutants / f"{name}.rules.yaml").write_text(f"# mutant: {how}\n" + yaml.safe_dump(rules, sort_keys=False))
        # Only the test groups that check this alert: the others cannot see the mutation.
        groups = [t for t in tests["tests"] if any(a["alertname"] == alert for a in t.get("alert_rule_test", []))]
        (mutants / f"{name}.test.yaml").write_text(yaml.safe_dump(
            {**tests, "rule_files": [str(mutants / f"{name}.rules.yaml")], "tests": groups}, sort_keys=False))
        if run(mutants / f"{name}.test.yaml").returncode == 0:
            survived.append(f"{alert}: {how}")
    report(not survived, f"every alert's tests fail when it never fires, when it always fires, and on "
           f"{len(edits) - 2 * len(shipped)} expression edits ({len(edits)} mutants)",
           f"mutants the tests did not catch: {survived}")


# ------------------------------------------------------------------------------------- dashboard

TS_PRELUDE = """\
// Generated by tests/ops/ops.py from charts/scimgate/dashboards/scimgate.json; checked with tsc --strict.
import type { Dashboard, DataQuery, DataSourceRef, FieldConfig, FieldConfigSource, Panel, RowPanel } from '@grafana/schema';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

// What a JSON file can hold for T: a string enum member is written as its value.
type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// A Prometheus target (the fields this dashboard uses; Grafana's prometheus plugin owns the rest).
interface PrometheusQuery extends Omit<DataQuery, 'datasource'> {
  datasource?: DataSourceRef;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
}

// A panel whose options and field config are typed by its plugin's schema.
type PanelOf<Kind extends string, O, F> = Json<Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets'>> & {
  type: Kind;
  options: Json<O>;
  fieldConfig: { defaults: Json<Omit<FieldConfig, 'custom'>> & { custom?: Json<F> }; overrides: Json<FieldConfigSource['overrides']> };
  targets: Array<Json<PrometheusQuery>>;
};
type TimeSeriesPanel = PanelOf<'timeseries', timeseries.Options, timeseries.FieldConfig>;
type StatPanel = PanelOf<'stat', stat.Options, Record<string, never>>;
type TablePanel = PanelOf<'table', table.Options, table.FieldConfig>;
type Row = Json<Omit<RowPanel, 'type'>> & { type: 'row' };

type ScimgateDashboard = Json<Omit<Dashboard, 'panels'>> & { panels: Array<TimeSeriesPanel | StatPanel | TablePanel | Row> };
"""

PANEL_TYPES = {"timeseries": "TimeSeriesPanel", "stat": "StatPanel", "table": "TablePanel", "row": "Row"}


def dashboard_ts(dash: dict) -> str:
    lines = [TS_PRELUDE]
    # Once as a whole against @grafana/schema's Dashboard, once with each panel typed by its plugin.
    lines.append(f"export const asSchemaDashboard: Json<Dashboard> = {json.dumps(dash, indent=2)};\n")
    lines.append(f"export const asTypedPanels: ScimgateDashboard = {json.dumps(dash, indent=2)};\n")
    for i, panel in enumerate(dash.get("panels", [])):
        kind = PANEL_TYPES.get(panel.get("type"), "never")
        lines.append(f"export const panel{i}: {kind} = {json.dumps(panel, indent=2)};\n")
    return "\n".join(lines)


def broken_dashboards(dash: dict) -> list[tuple[str, dict]]:
    """Mistakes tsc must catch, each in a copy of the real dashboard."""
    out = []
    def variant(what, change):
        d = copy.deepcopy(dash)
        change(d)
        out.append((what, d))
    first = next(i for i, p in enumerate(dash["panels"]) if p["type"] == "timeseries")
    stat_i = next(i for i, p in enumerate(dash["panels"]) if p["type"] == "stat")
    variant("a misspelt panel field (gridpos)", lambda d: d["panels"][first].update(gridpos=d["panels"][first].pop("gridPos")))
    variant("schemaVersion as a string", lambda d: d.update(schemaVersion="39"))
    variant("a legend displayMode outside the enum", lambda d: d["panels"][first]["options"]["legend"].update(displayMode="sideways"))
    variant("a timeseries without tooltip options", lambda d: d["panels"][first]["options"].pop("tooltip"))
    variant("a stat colorMode outside the enum", lambda d: d["panels"][stat_i]["options"].update(colorMode="rainbow"))
    variant("a target without refId", lambda d: d["panels"][first]["targets"][0].pop("refId"))
    variant("a threshold step value as a string", lambda d: d["panels"][stat_i]["fieldConfig"]["defaults"].update(
        thresholds={"mode": "absolute", "steps": [{"color": "red", "value": "1"}]}))
    return out


def phase_dashboard(work: Path) -> None:
    out = work / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    try:
        dash = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        report(False, f"{DASHBOARD.relative_to(REPO)} is JSON", str(e))
        return
    report(True, f"{DASHBOARD.relative_to(REPO)} is JSON ({len(dash['panels'])} panels)")
    (out / "scimgate.ts").write_text(dashboard_ts(dash))
    for i, (what, broken) in enumerate(broken_dashboards(dash)):
        (out / f"broken{i}.ts").write_text(f"// must not type-check: {what}\n" + dashboard_ts(broken))
    ids = [p["id"] for p in dash["panels"]]
    titles = [p["title"] for p in dash["panels"] if p["type"] != "row"]
    report(len(ids) == len(set(ids)) and len(titles) == len(set(titles)), "panel ids and titles are unique")
    described = " ".join(p.get("description", "") for p in dash["panels"])
    unshown = [r["alert"] for r in all_rules(plain_rules()) if r["alert"] not in described]
    report(not unshown, "every alert is named by the description of the panel that shows its metric", f"not named: {unshown}")
    ds = {json.dumps(t.get("datasource"), sort_keys=True) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]}
    report(ds == {json.dumps({"type": "prometheus", "uid": "${datasource}"}, sort_keys=True)},
           "every target uses the ${datasource} variable (no hard-coded data source uid)", str(ds))
    # The ConfigMap the chart renders carries the sidecar label and exactly this JSON.
    values = merge(load_values(STANDALONE_VALUES), {"metrics": {"grafanaDashboard": {"enabled": True}}})
    cms = [d for d in find(render_chart(values), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    ok = (len(cms) == 1 and cms[0]["metadata"]["labels"].get("grafana_dashboard") == "1"
          and json.loads(cms[0]["data"]["scimgate.json"]) == dash)
    report(ok, "metrics.grafanaDashboard.enabled renders a ConfigMap with grafana_dashboard: \"1\" holding the dashboard")
    (out / "expected-broken").write_text("\n".join(w for w, _ in broken_dashboards(dash)) + "\n")


# --------------------------------------------------------------------------------- metric names


METRIC = re.compile(r"\bscimgate_[a-z_]+")


def exported_families(text: str) -> dict[str, str]:
    """family name -> type, from the # TYPE lines of a /metrics body."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            out[name] = kind.strip()
    return out


def exported_names(text: str) -> set[str]:
    """Every sample name a /metrics body holds (histograms: _bucket, _sum, _count)."""
    return {re.split(r"[{\s]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel \"{p['title']}\" {t['refId']}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            out.append((f"variable ${v['name']}", v["query"]["query"]))
    return out


def promtool_check_metrics(text: str, what: str) -> None:
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    report(proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(),
           f"promtool check metrics: {what} ({len(text.splitlines())} lines) has no problems", proc.stdout + proc.stderr)


def phase_metrics(work: Path, binary: str) -> None:
    """A freshly started binary (no request yet, its JWKS unreachable): its /metrics must
    already hold every name the dashboard and the rules use."""
    procs = Procs()
    dead_sock, dead = closed_port()
    try:
        key = work / "api-key"
        key.write_text("sk-ops-metrics\n")
        key.chmod(0o600)
        config = work / "fresh.toml"
        config.write_text(f"""[server]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n
[upstream]\nurl = "http://127.0.0.1:{dead}/v2"\n[jwt]\njwks_url = "http://127.0.0.1:{dead}/jwks.json"
issuer = "{ISS}"\naudience = ["{AUD}"]\n[[rules]]\nname = "provisioners"\nclaim = "groups"\nvalue = "{GROUP}"
service_account = "backend"\n[service_accounts.backend]\napi_key_file = "{key}"\n""")
        _, _, admin = start_scimgate(procs, work, binary, config)
        text = httpget(f"http://{admin}/metrics")
    finally:
        dead_sock.close()
        procs.stop_all()
    (work / "metrics-fresh.txt").write_text(text)
    promtool_check_metrics(text, "/metrics of a freshly started binary")
    names = exported_names(text)
    dash = json.loads(DASHBOARD.read_text())
    used = {m for _, e in dashboard_exprs(dash) for m in METRIC.findall(e)}
    missing = sorted(used - names)
    report(not missing, f"every metric name the dashboard uses ({len(used)}) is in a freshly started binary's /metrics",
           f"missing: {missing}")
    used_rules = {m for r in all_rules(plain_rules()) for m in METRIC.findall(r["expr"])}
    missing = sorted(used_rules - names)
    report(not missing, f"every metric name the alert rules use ({len(used_rules)}) is in the same /metrics",
           f"missing: {missing}")
    # A series an alert needs must exist before the first event, or increase() misses it.
    samples = parse_metrics(text)
    needed = [("scimgate_config_reloads_total", ("result", "failure")),
              ("scimgate_jwks_fetches_total", ("result", "invalid")),
              ("scimgate_requests_total", ("outcome", "upstream_rejected_credential")),
              ("scimgate_requests_total", ("outcome", "upstream_withheld")),
              ("scimgate_auth_decisions_total", ("reason", "missing_token"))]
    absent = [f"{n}{{{l}={v!r}}}" for n, (l, v) in needed if not any((l, v) in s for s in samples.get(n, ()))]
    report(not absent, "series the alerts' increase() needs exist at 0 before the first event", f"absent: {absent}")
    families = exported_families(text)
    unused = sorted(f for f in families if not any(u == f or u.startswith(f + "_") for u in used))
    report(not unused, f"the dashboard shows every exported family ({len(families)})", f"not on the dashboard: {unused}")


# ------------------------------------------------------------------------------------ processes


class Procs:
    """Processes started here, stopped by their PID (TERM, then KILL) on exit."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], out: Path, env: dict | None = None) -> subprocess.Popen:
        stdout = out.with_suffix(".out").open("wb")
        stderr = out.with_suffix(".err").open("wb")
        p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env, stdin=subprocess.DEVNULL)
        self.started.append((name, p))
        return p

    def stop_all(self) -> None:
        for _, p in reversed(self.started):
            stop(p)


def stop(p: subprocess.Popen, grace: float = 5) -> None:
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> tuple[socket.socket, int]:
    """A loopback port that refuses connections: bound (so nothing else takes it), not listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def line_matching(path: Path, pattern: str) -> re.Match | None:
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        m = re.search(pattern, line)
        if m:
            return m
    return None


def alive(p: subprocess.Popen, what: str) -> None:
    if p.poll() is not None:
        raise RuntimeError(f"{what} exited with {p.returncode}")


def http(method: str, url: str, headers: dict | None = None, body: bytes | None = None,
         timeout: float = 10) -> tuple[int, dict, bytes]:
    u = urllib.parse.urlsplit(url)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def httpget(url: str, timeout: float = 10) -> str:
    status, _, body = http("GET", url, timeout=timeout)
    if status != 200:
        raise ValueError(f"GET {url}: {status}")
    return body.decode()


def get_json(url: str, timeout: float = 10):
    status, _, body = http("GET", url, timeout=timeout)
    if status != 200:
        raise ValueError(f"GET {url}: {status} {body[:200]!r}")
    return json.loads(body)


def start_issuer(procs: Procs, work: Path, python: str) -> str:
    p = procs.start("issuer", [python, str(ISSUER_PY), "--issuer", ISS, "--audience", AUD], work / "issuer")
    def port():
        alive(p, "issuer.py")
        text = (work / "issuer.out").read_text().strip()
        return json.loads(text)["port"] if text else None
    return f"http://127.0.0.1:{wait_for('issuer.py serves', 20, port)}"


def mint(issuer: str, claims: dict, alg: str = "RS256", ttl: int = 600) -> str:
    body = json.dumps({"alg": alg, "typ": "JWT", "claims": claims, "ttl": ttl}).encode()
    status, _, token = http("POST", f"{issuer}/mint", {"Content-Type": "application/json"}, body)
    if status != 200:
        raise RuntimeError(f"mint: {status}")
    return token.decode().strip()


def build_backend(work: Path) -> Path:
    binary = work / "backend"
    if not binary.exists():
        subprocess.run(["rustc", "--edition", "2021", "-O", "-D", "warnings", "-o", str(binary), str(HERE / "backend.rs")],
                       check=True, timeout=300)
    return binary


def start_backend(procs: Procs, work: Path, key: str, jwks: Path, slow_ms: int) -> str:
    binary = build_backend(work)
    env = {"PATH": os.environ.get("PATH", ""), "LISTEN_ADDR": "127.0.0.1:0", "SCIM_BEARER_TOKEN": key,
           "JWKS_FILE": str(jwks), "SLOW_MS": str(slow_ms)}
    p = procs.start("backend", [str(binary)], work / "backend", env)
    def addr():
        alive(p, "backend")
        m = line_matching(work / "backend.out", r"^listening (\S+)")
        return m.group(1) if m else None
    return wait_for("backend listening", 20, addr)


def scimgate_env() -> dict:
    # SCIMGATE_* variables are config overrides: keep the caller's out.
    return {k: v for k, v in os.environ.items() if not k.startswith("SCIMGATE_")}


def start_scimgate(procs: Procs, work: Path, binary: str, config: Path) -> tuple[subprocess.Popen, str, str]:
    p = procs.start("scimgate", [binary, "serve", "--config", str(config)], work / "scimgate", scimgate_env())
    def addrs():
        alive(p, "scimgate")
        m = line_matching(work / "scimgate.out", r'^\{.*"message":"listening".*\}$')
        if not m:
            return None
        line = json.loads(m.group(0))
        return line["proxy_addr"], line["admin_addr"]
    proxy, admin = wait_for("scimgate logs \"listening\"", 20, addrs)
    return p, proxy, admin


# ---------------------------------------------------------------------------- real Prometheus


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict]:
        data = get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        if data.get("status") != "success":
            raise ValueError(f"query {expr!r}: {data}")
        return data["data"]["result"]

    def alerts(self) -> list[dict]:
        return get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]

    def rules(self) -> list[dict]:
        return [r for g in get_json(f"{self.url}/api/v1/rules")["data"]["groups"] for r in g["rules"]]


def parse_metrics(text: str) -> dict[str, set[frozenset]]:
    """sample name -> the label sets it has in a /metrics body."""
    out: dict[str, set[frozenset]] = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        m = sample.match(line)
        if m:
            labels = frozenset(label.findall(m.group(2) or ""))
            out.setdefault(m.group(1), set()).add(labels)
    return out


OUTCOMES = ["forwarded", "missing_token", "invalid_token", "forbidden", "bad_request", "method_not_allowed",
            "unknown_tenant", "payload_too_large", "request_timeout", "jwks_unavailable", "upstream_unavailable",
            "upstream_timeout", "upstream_rejected_credential", "not_found", "unsupported_media_type",
            "upstream_withheld", "headers_too_large", "guardrail"]

# Alerts the traffic below causes, by alertname -> the labels that identify each instance.
EXPECTED_FIRING = {
    ("ScimgateNotReady", (("tenant", "nokeys"),)),
    ("ScimgateNotReady", (("tenant", "unusable"),)),
    ("ScimgateJWKSNoUsableKeys", (("tenant", "unusable"),)),
    ("ScimgateDenyRateHigh", (("reason", "missing_token"),)),
    ("ScimgateUpstreamErrors", ()),
    ("ScimgateUpstreamRejectedCredential", ()),
    ("ScimgateUpstreamWithheld", ()),
    ("ScimgateConfigReloadFailed", ()),
    ("ScimgateConnectionsNearLimit", ()),
    ("ScimgateDeprovisionBudgetNearlyUsed", (("tenant", "main"),)),
    ("ScimgateDeprovisioningStopped", (("tenant", "main"),)),
}


def gateway_config(work: Path, backend: str, issuer: str, dead: int, key_file: Path) -> str:
    def tenant(name: str, upstream: str, jwks: str, timeout: str = "1s", extra: str = "") -> str:
        return f"""
[[tenants]]
name = "{name}"
path_prefix = "/{name}"
{extra}
[tenants.upstream]
url = "{upstream}"
connect_timeout = "1s"
timeout = "{timeout}"

[tenants.jwt]
jwks_url = "{jwks}"
issuer = "{ISS}"
audience = ["{AUD}"]
algorithms = ["RS256", "ES256"]

[[tenants.rules]]
name = "provisioners"
claim = "groups"
value = "{GROUP}"
service_account = "backend"

[tenants.service_accounts.backend]
header = "authorization"
scheme = "Bearer"
api_key_file = "{key_file}"
"""
    return """# Written by tests/ops/ops.py prometheus: five tenants, so that every outcome and alert can happen.
[server]
listen = "127.0.0.1:0"
request_timeout = "2s"
header_read_timeout = "30s"
max_body_bytes = 4096
max_connections = 10
shutdown_grace = "2s"

[admin]
listen = "127.0.0.1:0"

[log]
level = "info"
format = "json"
""" + "".join([
        # A budget of one deprovisioning: the second DELETE is the guardrail outcome.
        tenant("main", f"http://{backend}/scim/v2", f"{issuer}/jwks.json",
               extra='guardrails.max_deprovisions = 1\nguardrails.deprovision_window = "1h"\n'),
        # A long upstream timeout, so that a slow request body meets server.request_timeout first.
        tenant("patient", f"http://{backend}/scim/v2", f"{issuer}/jwks.json", timeout="10s"),
        tenant("down", f"http://127.0.0.1:{dead}/scim/v2", f"{issuer}/jwks.json"),
        tenant("nokeys", f"http://{backend}/scim/v2", f"http://127.0.0.1:{dead}/jwks.json"),
        tenant("unusable", f"http://{backend}/scim/v2", f"http://{backend}/jwks-unusable.json"),
    ])


def raw_request(addr: str, data: bytes, timeout: float = 10) -> int:
    """Sends `data` on a new connection and returns the response status (0: no response)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m.group(1)) if m else 0


def send_traffic(proxy: str, good: str, other_group: str) -> list[tuple[str, int, int]]:
    """One or more requests per outcome: (outcome, expected status, got status)."""
    base = f"http://{proxy}"
    auth = {"Authorization": f"Bearer {good}"}
    results = []
    def req(outcome, want, method, path, headers=None, body=None):
        status, _, _ = http(method, base + path, headers, body, timeout=15)
        results.append((outcome, want, status))
    for _ in range(3):
        req("forwarded", 200, "GET", "/main/Users", auth)
    for _ in range(12):  # one deny reason dominating the decisions: ScimgateDenyRateHigh
        req("missing_token", 401, "GET", "/main/Users")
    req("invalid_token", 401, "GET", "/main/Users", {"Authorization": "Bearer not.a.jwt"})
    req("forbidden", 403, "GET", "/main/Users", {"Authorization": f"Bearer {other_group}"})
    req("bad_request", 400, "GET", "/main/Users/a%2Fb", auth)
    req("method_not_allowed", 405, "TRACE", "/main/Users", auth)
    req("unknown_tenant", 404, "GET", "/elsewhere/Users", auth)
    req("payload_too_large", 413, "POST", "/main/Users", {**auth, "Content-Type": "application/scim+json"}, b"{" + b" " * 5000 + b"}")
    # A body that never completes: cut by server.request_timeout (2s).
    status = raw_request(proxy, (f"POST /patient/Users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {good}\r\n"
                                 "Content-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{").encode())
    results.append(("request_timeout", 408, status))
    req("jwks_unavailable", 503, "GET", "/nokeys/Users", auth)
    for _ in range(3):
        req("upstream_unavailable", 502, "GET", "/down/Users", auth)
    # The backend's test paths are resource ids: a path outside the SCIM grammar never reaches it.
    req("upstream_timeout", 504, "GET", "/main/Users/slow", auth)  # the backend waits longer than upstream.timeout
    req("upstream_rejected_credential", 502, "GET", "/main/Users/reject", auth)
    req("not_found", 404, "GET", "/main/healthz", auth)
    req("unsupported_media_type", 415, "POST", "/main/Users",
        {**auth, "Content-Type": "application/scim+json", "Content-Encoding": "gzip"}, b"\x1f\x8b")
    req("upstream_withheld", 502, "GET", "/main/Users/echo", auth)  # a 500 page that echoes the Authorization header
    req("forwarded", 200, "DELETE", "/main/Users/gone", auth)  # the tenant's whole deprovision budget
    req("guardrail", 429, "DELETE", "/main/Users/gone", auth)
    # Over 100 header fields (small, so the whole head is sent before the 431 and the close).
    fields = "".join(f"X-F{i}: 1\r\n" for i in range(101))
    status = raw_request(proxy, f"GET /main/Users HTTP/1.1\r\nHost: gw\r\n{fields}\r\n".encode())
    results.append(("headers_too_large", 431, status))
    return results


def selectors(expr: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r"scimgate_[a-z_]+(\{[^}]*\})?", expr)]


def dashboard_query(expr: str) -> str:
    """A dashboard expression with its variables set as Grafana would for "All"."""
    expr = expr.replace("$__rate_interval", "1m")
    for var in ("$job", "$instance", "$tenant"):
        expr = expr.replace(var, ".*")
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", expr.strip())
    if m:  # a variable's label_values(metric{...}, label): the values Prometheus has for it
        return f"count by ({m.group(2)}) ({m.group(1)})"
    return expr


def phase_prometheus(work: Path, binary: str, python: str) -> None:
    procs = Procs()
    holders: list[socket.socket] = []
    dead_sock, dead = closed_port()
    try:
        run_prometheus(work, binary, python, procs, holders, dead)
    except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError) as e:
        report(False, f"prometheus phase stopped: {type(e).__name__}: {e}")
        for name in ("scimgate.err", "prometheus.err", "backend.err", "issuer.err"):
            f = work / name
            if f.exists() and f.stat().st_size:
                print(f"  --- last lines of {name}")
                for line in f.read_text(errors="replace").splitlines()[-15:]:
                    print(f"        {line}")
    finally:
        for s in holders:
            s.close()
        dead_sock.close()
        procs.stop_all()


def run_prometheus(work: Path, binary: str, python: str, procs: Procs, holders: list, dead: int) -> None:
    issuer = start_issuer(procs, work, python)
    jwks = work / "jwks.json"
    jwks.write_bytes(http("GET", f"{issuer}/jwks.json")[2])
    key = "sk-ops-" + secrets.token_urlsafe(24)
    key_file = work / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    backend = start_backend(procs, work, key, jwks, slow_ms=1500)
    config = work / "scimgate.toml"
    config_text = gateway_config(work, backend, issuer, dead, key_file)
    config.write_text(config_text)
    gate, proxy, admin = start_scimgate(procs, work, binary, config)
    say(f"scimgate: proxy {proxy}, admin {admin}; backend {backend}; issuer {issuer}; closed port {dead}")

    # The shipped rules with every `for` dropped, so that an alert fires on its first evaluation.
    rules = plain_rules()
    for rule in all_rules(rules):
        rule.pop("for", None)
    (work / "rules-now.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    port = free_port()
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules-now.yaml")],
        "scrape_configs": [{"job_name": "scimgate", "static_configs": [{"targets": [admin]}]}],
    }))
    prom_p = procs.start("prometheus", ["prometheus", f"--config.file={work / 'prometheus.yml'}",
                                        f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                        "--log.level=warn"], work / "prometheus")
    prom = Prometheus(f"http://127.0.0.1:{port}")
    started = time.monotonic()
    def first_sample():
        alive(prom_p, "prometheus")
        return prom.query('scimgate_build_info{job="scimgate"}')
    wait_for("first scimgate sample in Prometheus", 60, first_sample, interval=0.25)
    report(True, f"Prometheus {prom_version()} scrapes scimgate: first sample after {time.monotonic() - started:.1f}s (polled)")
    up = prom.query('up{job="scimgate"}')
    report(len(up) == 1 and up[0]["value"][1] == "1", "target up", json.dumps(up))

    # Before any traffic only the tenants without keys are not ready.
    def evaluated_twice():
        return all(r.get("lastEvaluation", "").startswith("2") and r.get("health") == "ok" for r in prom.rules()) \
            and len(prom.query('scimgate_build_info[5s]')[0]["values"]) >= 3
    wait_for("rules evaluated over three scrapes", 30, evaluated_twice, interval=0.25)
    baseline = firing(prom)
    want = {a for a in EXPECTED_FIRING if a[0] == "ScimgateNotReady"}
    may = want | {("ScimgateJWKSNoUsableKeys", (("tenant", "unusable"),))}  # once a retry has been scraped
    report(want <= baseline <= may, "before traffic: only the alerts of the tenants without keys (nokeys, unusable)",
           f"firing: {sorted(baseline)}")

    # Traffic of every outcome.
    good = mint(issuer, {"groups": [GROUP]})
    other = mint(issuer, {"groups": ["Everyone"]})
    results = send_traffic(proxy, good, other)
    wrong = [f"{o}: want {w}, got {g}" for o, w, g in results if w != g]
    report(not wrong, f"traffic: {len(results)} requests, every outcome with its status", "\n".join(wrong))
    status, _, body = http("GET", f"http://{proxy}/main/Users/echo", {"Authorization": f"Bearer {good}"})
    report(status == 502 and key.encode() not in body and b"debug:" not in body,
           "the backend's error page that echoes the API key is withheld (502, neither the key nor the page reaches the caller)",
           f"{status} {body[:300]!r}")
    after = http("GET", f"http://{admin}/metrics")[2].decode()
    counts = {o: 0.0 for o in OUTCOMES}
    for line in after.splitlines():
        m = re.match(r'scimgate_requests_total\{outcome="(\w+)"\} (\S+)', line)
        if m:
            counts[m.group(1)] = float(m.group(2))
    zero = [o for o, c in counts.items() if c < 1]
    report(not zero, f"/metrics counts every one of the {len(OUTCOMES)} outcomes", f"at 0: {zero}")
    def scraped_all():
        got = {r["metric"]["outcome"]: float(r["value"][1]) for r in prom.query('scimgate_requests_total{job="scimgate"}')}
        return all(got.get(o, 0) >= counts[o] for o in OUTCOMES) and got
    scraped = wait_for("Prometheus has every outcome", 20, scraped_all, interval=0.25)
    report(all(scraped.get(o, 0) >= 1 for o in OUTCOMES),
           "PromQL scimgate_requests_total: every outcome >= 1 in Prometheus", json.dumps(scraped))

    # A broken config: the reload fails, the running config stays.
    config.write_text(config_text + "\n[server\nthis is not toml\n")
    def reload_failed():
        return prom.query('scimgate_config_reloads_total{result="failure"} >= 1')
    wait_for("Prometheus sees the failed reload", 20, reload_failed, interval=0.25)
    status = http("GET", f"http://{proxy}/main/Users", {"Authorization": f"Bearer {good}"})[0]
    report(status == 200, "after the failed reload the running config still forwards (200)", str(status))

    # Connections: hold 9 of server.max_connections = 10 open.
    host, port_s = proxy.rsplit(":", 1)
    for _ in range(9):
        holders.append(socket.create_connection((host, int(port_s)), timeout=5))
    wait_for("Prometheus sees 9 open connections", 20,
             lambda: prom.query("scimgate_connections_open >= 9"), interval=0.25)

    # Every alert the traffic can cause fires, in Prometheus' own rule evaluation.
    def all_fired():
        now = firing(prom)
        return now if EXPECTED_FIRING <= now else None
    try:
        fired = wait_for("the expected alerts fire", 30, all_fired, interval=0.5)
    except TimeoutError:
        fired = firing(prom)
    names = sorted({a for a, _ in EXPECTED_FIRING})
    for alert, labels in sorted(EXPECTED_FIRING):
        report((alert, labels) in fired, f"fires for real: {alert}{dict(labels) or ''}",
               f"firing now: {sorted(fired)}")
    unexpected = sorted(fired - EXPECTED_FIRING)
    report(not unexpected, "no other alert fires (ScimgateJWKSStale stays quiet: every JWKS is fresh)", str(unexpected))

    # Each rule evaluated against the real series: every selector in it matches series, and the
    # expression evaluates; the ones not expected to fire return nothing.
    for rule in all_rules(plain_rules()):
        empty = [s for s in selectors(rule["expr"]) if not prom.query(f"count({s})")]
        try:
            result = prom.query(rule["expr"])
            evaluated = True
        except ValueError as e:
            result, evaluated = [], str(e)
        fires = rule["alert"] in names
        report(evaluated is True and not empty and (bool(result) or not fires),
               f"rule {rule['alert']}: evaluates against the real series ({len(selectors(rule['expr']))} selectors, "
               f"each matches; {len(result)} result(s){', fired above' if fires else ', not firing'})",
               f"selectors without series: {empty}; error: {evaluated}")

    # The connections are held until here, so that the evaluation above sees them.
    for s in holders:
        s.close()
    holders.clear()

    # Restore the config: a successful reload.
    config.write_text(config_text)
    wait_for("Prometheus sees the successful reload", 20,
             lambda: prom.query('scimgate_config_reloads_total{result="success"} >= 1'), interval=0.25)

    # issue 15 §2: promtool check metrics, and one PromQL query per metric family: Prometheus
    # holds exactly the series /metrics shows (no traffic any more, so the label sets are stable).
    final = http("GET", f"http://{admin}/metrics")[2].decode()
    (work / "metrics-final.txt").write_text(final)
    promtool_check_metrics(final, "/metrics after traffic of every outcome and two reloads")
    families = exported_families(final)
    local = parse_metrics(final)
    for family, kind in sorted(families.items()):
        names_re = f"{family}|{family}_bucket|{family}_sum|{family}_count" if kind == "histogram" else family
        want_sets = {(n, s) for n in local if re.fullmatch(names_re, n) for s in local[n]}
        def same():
            got = {(r["metric"]["__name__"], frozenset((k, v) for k, v in r["metric"].items()
                                                        if k not in ("__name__", "job", "instance")))
                   for r in prom.query(f'{{__name__=~"{names_re}", job="scimgate"}}')}
            return got if got == want_sets else None
        try:
            wait_for(f"{family} in Prometheus", 10, same, interval=0.25)
            ok = True
        except TimeoutError:
            ok = False
        report(ok, f"PromQL {{__name__=~\"{family}...\"}}: {len(want_sets)} series ({kind}), the same as /metrics")

    # Every dashboard query returns data from the real series.
    dash = json.loads(DASHBOARD.read_text())
    for what, expr in dashboard_exprs(dash):
        q = dashboard_query(expr)
        try:
            result = prom.query(q)
        except ValueError as e:
            result = []
            q += f"  ({e})"
        report(bool(result), f"dashboard {what}: returns data", q)
    alive(gate, "scimgate")


def firing(prom: Prometheus) -> set[tuple[str, tuple]]:
    out = set()
    for a in prom.alerts():
        if a["state"] != "firing":
            continue
        keys = tuple(sorted((k, v) for k, v in a["labels"].items() if k in ("tenant", "reason")))
        out.add((a["labels"]["alertname"], keys))
    return out


def prom_version() -> str:
    proc = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"version (\S+)", proc.stdout + proc.stderr)
    return m.group(1) if m else "?"


# ------------------------------------------------------------------------------------- container


def podman(*args: str, check: bool = True, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc


def dockerfile_runtime(dockerfile: Path) -> list[str]:
    """The Dockerfile's last stage as instructions (continuations joined, comments dropped)."""
    lines, cur = [], ""
    for raw in dockerfile.read_text().splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        cur += (" " if cur else "") + s.rstrip("\\").strip()
        if not s.endswith("\\"):
            lines.append(cur)
            cur = ""
    last = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    return lines[last:]


def ci_containerfile(runtime: list[str]) -> str:
    """The Dockerfile's runtime stage on `scratch`: the base image's runtime files (glibc, CA roots,
    passwd) come from the build context, the binary from the release build."""
    out = ["# Generated by tests/ops/ops.py from the Dockerfile's runtime stage (its base image cannot be pulled here).",
           "FROM scratch", "COPY rootfs/ /"]
    for line in runtime[1:]:
        if line.upper().startswith("COPY --FROM="):
            out.append(f"COPY scimgate {line.split()[-1]}")
        else:
            out.append(line)
    out.append('LABEL org.opencontainers.image.base.name="scratch (CI stand-in for the runtime base)"')
    return "\n".join(out) + "\n"


def contract(runtime: list[str]) -> dict:
    """USER, EXPOSE, STOPSIGNAL, ENTRYPOINT, CMD of a Dockerfile stage, normalised like an image config."""
    c: dict = {}
    for line in runtime:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "USER":
            c["User"] = rest.strip()
        elif word == "EXPOSE":
            c["ExposedPorts"] = sorted(p if "/" in p else f"{p}/tcp" for p in rest.split())
        elif word == "STOPSIGNAL":
            c["StopSignal"] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            c["Entrypoint" if word == "ENTRYPOINT" else "Cmd"] = json.loads(rest)
    return c


def rootfs_from_host(dest: Path, binaries: list[Path]) -> list[str]:
    """What distroless/cc adds to scratch, from this host: the libraries `ldd` lists for the
    binaries, the CA bundle, and passwd/group entries for root and nonroot (65532)."""
    libs: list[str] = []
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True, check=True, timeout=30).stdout
        libs += re.findall(r"(/\S+\.so[.\d]*)", out)
    for lib in sorted(set(libs)):
        target = dest / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), target)
    certs = dest / "etc/ssl/certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", certs / "ca-certificates.crt")
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                     "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (dest / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
    return sorted(set(libs))


def buildah_bud(tag: str, context: Path) -> None:
    proc = subprocess.run(["buildah", "bud", "--quiet", "--isolation", "chroot", "-t", tag, "-f",
                           str(context / "Containerfile"), str(context)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"buildah bud {tag}: {proc.stderr.strip()[-800:]}")


RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


def container_ip(name: str) -> str:
    out = podman("inspect", name, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").stdout.split()
    if not out:
        raise RuntimeError(f"{name} has no IP address")
    return out[0]


def backend_lines(name: str) -> list[str]:
    proc = podman("logs", name, check=False)
    return [l for l in (proc.stdout + proc.stderr).splitlines() if l.startswith("backend: ") and "/jwks" not in l]


def phase_container(work: Path, binary: str, python: str) -> None:
    procs = Procs()
    suffix = f"{os.getpid()}"
    names = {"image": f"localhost/scimgate-ci:{suffix}", "backend_image": f"localhost/scimgate-ci-backend:{suffix}",
             "backend": f"scimgate-ci-backend-{suffix}", "gate": f"scimgate-ci-{suffix}"}
    release = f"ci{suffix}"
    cleanup: list[list[str]] = []
    try:
        run_container(work, binary, python, procs, names, release, cleanup)
    except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError) as e:
        report(False, f"container phase stopped: {type(e).__name__}: {e}")
        for n in (names["gate"], names["backend"], f"{release}-scim-backend-pod-0-scimgate"):
            proc = podman("logs", n, check=False)
            if proc.returncode == 0:
                print(f"  --- last lines of podman logs {n}")
                for line in (proc.stdout + proc.stderr).splitlines()[-12:]:
                    print(f"        {line}")
    finally:
        for argv in reversed(cleanup):
            subprocess.run(argv, capture_output=True, timeout=120,
                           env={**os.environ, "CONTAINERS_CONF": str(work / "containers.conf")})
        procs.stop_all()


def run_container(work: Path, binary: str, python: str, procs: Procs, names: dict, release: str,
                  cleanup: list) -> None:
    versions = " / ".join(subprocess.run([t, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
                          for t in ("podman", "buildah", "runc"))
    say(versions)
    issuer = start_issuer(procs, work, python)
    jwks = http("GET", f"{issuer}/jwks.json")[2]
    good = mint(issuer, {"groups": [GROUP]})
    other = mint(issuer, {"groups": ["Everyone"]})
    key = "sk-ops-" + secrets.token_urlsafe(24)

    # --- the image: the Dockerfile's runtime stage on scratch, from the release binary ---------
    runtime = dockerfile_runtime(REPO / "Dockerfile")
    ctx = work / "image"
    (ctx / "rootfs").mkdir(parents=True)
    shutil.copy2(binary, ctx / "scimgate")
    libs = rootfs_from_host(ctx / "rootfs", [Path(binary)])
    (ctx / "Containerfile").write_text(ci_containerfile(runtime))
    started = time.monotonic()
    buildah_bud(names["image"], ctx)
    cleanup.append(["podman", "rmi", "-f", names["image"]])
    info = json.loads(podman("image", "inspect", names["image"]).stdout)[0]
    config = info.get("Config", {})
    got = {"User": config.get("User"), "ExposedPorts": sorted(config.get("ExposedPorts", {})),
           "StopSignal": config.get("StopSignal"), "Entrypoint": config.get("Entrypoint"), "Cmd": config.get("Cmd")}
    want = contract(runtime)
    report(got == want, f"image built by buildah bud --isolation chroot in {time.monotonic() - started:.1f}s "
           f"({info['Size'] / 1e6:.1f} MB: binary + {len(libs)} glibc libraries + CA roots + passwd): "
           f"user, ports, stop signal, entrypoint and cmd as the Dockerfile's runtime stage",
           f"image: {got}\nDockerfile: {want}")
    mnt = podman("image", "mount", names["image"]).stdout.strip()
    try:
        root = Path(mnt)
        report((root / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 10000
               and "nonroot:x:65532:65532" in (root / "etc/passwd").read_text()
               and not (root / "bin/sh").exists(),
               "image holds the CA bundle at the distroless path, a passwd entry for 65532, and no shell")
    finally:
        podman("image", "unmount", names["image"], check=False)

    # --- the backend (std-only Rust, same libraries) with the JWKS baked in --------------------
    bctx = work / "backend-image"
    (bctx / "rootfs").mkdir(parents=True)
    backend_bin = build_backend(work)
    shutil.copy2(backend_bin, bctx / "backend")
    rootfs_from_host(bctx / "rootfs", [backend_bin])
    (bctx / "jwks.json").write_bytes(jwks)
    (bctx / "Containerfile").write_text("FROM scratch\nCOPY rootfs/ /\nCOPY backend /backend\n"
                                        "COPY jwks.json /jwks.json\nUSER 10001:10001\nENTRYPOINT [\"/backend\"]\n")
    buildah_bud(names["backend_image"], bctx)
    cleanup.append(["podman", "rmi", "-f", names["backend_image"]])

    # --- podman run: the backend owns the network namespace, scimgate joins it (as in a pod) ---
    podman("run", "-d", "--name", names["backend"], *RUN_FLAGS, "--read-only", "--user", "10001:10001", "--cap-drop", "ALL",
           "-e", "LISTEN_ADDR=127.0.0.1:8000", "-e", f"SCIM_BEARER_TOKEN={key}", "-e", "SLOW_MS=3000",
           names["backend_image"])
    cleanup.append(["podman", "rm", "-f", "-t", "0", names["backend"]])
    cfg_dir, key_dir = work / "run-config", work / "run-keys"
    cfg_dir.mkdir()
    key_dir.mkdir()
    values = merge(load_values(STANDALONE_VALUES), {"config": {
        "server": {"shutdown_grace": "10s"},
        "upstream": {"url": "http://127.0.0.1:8000/scim/v2"},
        "jwt": {"jwks_url": "http://127.0.0.1:8000/jwks.json", "issuer": ISS, "audience": [AUD]},
        "rules": [{"name": "provisioners", "claim": "groups", "value": GROUP, "service_account": "provisioner"}],
        "service_accounts": {"provisioner": {"header": "authorization", "scheme": "Bearer"}}},
        "apiKeys": {"keys": {"provisioner": "unused"}}})
    cm = next(d for d in find(render_chart(values), "ConfigMap") if "scimgate.toml" in d.get("data", {}))
    (cfg_dir / "scimgate.toml").write_text(cm["data"]["scimgate.toml"])
    (key_dir / "provisioner").write_text(key)
    # As the kubelet mounts them: the ConfigMap 0644, the key 0440 with group 65532 (the pod's fsGroup).
    os.chown(key_dir / "provisioner", 0, 65532)
    (key_dir / "provisioner").chmod(0o440)
    for d in (cfg_dir, key_dir):
        d.chmod(0o755)
    (cfg_dir / "scimgate.toml").chmod(0o644)
    podman("run", "-d", "--name", names["gate"], *RUN_FLAGS, "--network", f"container:{names['backend']}",
           "--read-only", "--user", "65532:65532", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-v", f"{cfg_dir}:/etc/scimgate:ro", "-v", f"{key_dir}:/var/run/secrets/scimgate:ro", names["image"])
    cleanup.append(["podman", "rm", "-f", "-t", "0", names["gate"]])
    ip = container_ip(names["backend"])
    proxy, admin = f"http://{ip}:8080", f"http://{ip}:9090"
    wait_for("scimgate in podman: /readyz 200", 30, lambda: http("GET", f"{admin}/readyz", timeout=2)[0] == 200)
    state = json.loads(podman("inspect", names["gate"]).stdout)[0]
    host = state["HostConfig"]
    report(state["Config"]["User"] == "65532:65532" and host["ReadonlyRootfs"] is True
           and not state.get("EffectiveCaps") and "no-new-privileges" in " ".join(host.get("SecurityOpt") or [])
           and state["Config"].get("Cmd") == contract(runtime)["Cmd"],
           "podman run --read-only --user 65532:65532 --cap-drop ALL (no capabilities left), the image's own CMD",
           json.dumps({"User": state["Config"]["User"], "ReadonlyRootfs": host["ReadonlyRootfs"],
                       "EffectiveCaps": state.get("EffectiveCaps"), "SecurityOpt": host.get("SecurityOpt")}))
    top = podman("top", names["gate"], "user", "huser", "args").stdout.strip().splitlines()
    # USER is the image's passwd name for the uid (nonroot = 65532, checked above); HUSER the host's view.
    report(len(top) == 2 and top[1].split()[:2] == ["nonroot", "65532"],
           "scimgate runs as nonroot (uid 65532) inside, 65532 on the host", "\n".join(top))
    before = len(backend_lines(names["backend"]))
    status, headers, body = http("GET", f"{proxy}/Users", {"Authorization": f"Bearer {good}"})
    seen = backend_lines(names["backend"])[before:]
    report(status == 200 and b"ListResponse" in body and seen == ["backend: GET /scim/v2/Users auth=ok"],
           "allowed: a token of the group is forwarded with the API key (backend saw auth=ok)", f"{status} {body[:200]!r} {seen}")
    before = len(backend_lines(names["backend"]))
    s1, h1, b1 = http("GET", f"{proxy}/Users")
    s2, _, _ = http("GET", f"{proxy}/Users", {"Authorization": f"Bearer {other}"})
    report(s1 == 401 and h1.get("content-type", "").startswith("application/scim+json") and s2 == 403
           and backend_lines(names["backend"])[before:] == [],
           "refused: no token 401 (SCIM error), a token of another group 403; the backend saw neither", f"{s1} {s2} {b1[:200]!r}")

    # --- podman stop with a request in flight ---------------------------------------------------
    result: dict = {}
    def slow():
        try:
            result["response"] = http("GET", f"{proxy}/Users/slow", {"Authorization": f"Bearer {good}"}, timeout=20)
        except OSError as e:
            result["error"] = e
    t = threading.Thread(target=slow)
    t.start()
    wait_for("the slow request reached the backend", 10,
             lambda: any("slow request started" in l for l in podman("logs", names["backend"], check=False).stderr.splitlines()))
    started = time.monotonic()
    stop_proc = podman("stop", "-t", "15", names["gate"], timeout=60)
    stopped_after = time.monotonic() - started
    t.join(20)
    exit_code = json.loads(podman("inspect", names["gate"]).stdout)[0]["State"]["ExitCode"]
    response = result.get("response")
    logs = podman("logs", names["gate"], check=False).stdout
    report(response is not None and response[0] == 200 and b"ListResponse" in response[2] and exit_code == 0
           and stopped_after < 14 and stop_proc.returncode == 0,
           f"podman stop (SIGTERM) with a request in flight: the request completes (200), exit code {exit_code}, "
           f"stopped after {stopped_after:.1f}s (the request's remaining time, not the 15 s kill timeout)",
           f"response: {response and response[:2]} error: {result.get('error')}\n" + "\n".join(logs.splitlines()[-5:]))
    podman("rm", "-f", "-t", "0", names["gate"], names["backend"], check=False)

    # --- podman kube play of the chart's nativeSidecar: false render ---------------------------
    kube_play(work, names, release, jwks, key, good, cleanup)


KUBE_WORKAROUNDS = [
    "the Secret is created with `podman secret create` as a Kubernetes Secret whose data is NOT base64 "
    "(podman 4.3 mounts secret volumes' data without decoding it, and ignores stringData); the Secret "
    "document is left out of the played YAML",
    "the secret volume gets `optional: false` (podman 4.3 dereferences the unset field and panics)",
    "the backend's secretKeyRef becomes a literal value (podman 4.3 reads secretKeyRef as a flat JSON "
    "map, a format its secret volumes cannot read)",
    "container ports are dropped (podman 4.3 publishes every containerPort on the host at the same "
    "number; Kubernetes publishes none); the test talks to the pod's own IP",
    "livenessProbe is dropped (podman turns it into `curl` inside the container, which a "
    "distroless/scratch image does not have, and resolves named ports to 0)",
    "ulimits and the runc runtime come from a test containers.conf (kube play has no --ulimit; crun fails here)",
]


def kube_manifests(work: Path, names: dict, release: str, key: str) -> tuple[list[dict], dict]:
    values = load_values(REPO / "tests" / "deploy" / "values" / "sidecar-fallback.yaml")
    values = merge(values, {
        "backend": {"image": names["backend_image"], "replicaCount": 1},
        "scimgate": {"image": {"repository": names["image"].rsplit(":", 1)[0], "tag": names["image"].rsplit(":", 1)[1]},
                     "apiKeys": {"existingSecret": "", "keys": {"provisioner": key}},
                     "config": {"jwt": {"jwks_url": "http://127.0.0.1:8000/jwks.json", "issuer": ISS, "audience": [AUD]},
                                "rules": [{"name": "provisioners", "claim": "groups", "value": GROUP,
                                           "service_account": "provisioner"}]}},
    })
    docs = render_chart(values, example_chart(work), release)
    (work / "kube-rendered.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return docs, values


def podman43_workarounds(docs: list[dict]) -> tuple[list[dict], dict]:
    """The render as podman 4.3 can play it (KUBE_WORKAROUNDS); returns (documents, the Secret)."""
    secret = next(d for d in docs if d["kind"] == "Secret")
    plain = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret["metadata"]["name"]},
             "data": {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}}
    out = []
    for d in copy.deepcopy(docs):
        if d["kind"] == "Secret":
            continue
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            for v in pod.get("volumes", []):
                if "secret" in v:
                    v["secret"]["optional"] = False
            for c in pod["containers"]:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        e.pop("valueFrom")
                        e["value"] = plain["data"][ref["key"]]
                c.pop("ports", None)
                c.pop("livenessProbe", None)
        out.append(d)
    return out, plain


def kube_play(work: Path, names: dict, release: str, jwks: bytes, key: str, good: str, cleanup: list) -> None:
    docs, _ = kube_manifests(work, names, release, key)
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    containers = [c["name"] for c in deploy["spec"]["template"]["spec"]["containers"]]
    report(containers == ["backend", "scimgate"] and not deploy["spec"]["template"]["spec"].get("initContainers"),
           "the chart's nativeSidecar: false render: scimgate is a regular container beside the backend", str(containers))
    playable, secret = podman43_workarounds(docs)
    for w in KUBE_WORKAROUNDS:
        say(f"podman 4.3 workaround (test only, the chart is unchanged): {w}")
    conf = work / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    (work / "kube-play.yaml").write_text(yaml.safe_dump_all(playable, sort_keys=False))
    (work / "kube-secret.json").write_text(json.dumps(secret))
    secret_name = secret["metadata"]["name"]
    podman("secret", "create", secret_name, str(work / "kube-secret.json"), env=env)
    cleanup.append(["podman", "secret", "rm", secret_name])
    for d in docs:
        if d["kind"] in ("ConfigMap", "Secret"):  # kube play keeps their volumes after kube down
            cleanup.append(["podman", "volume", "rm", "-f", d["metadata"]["name"]])
    cleanup.append(["podman", "kube", "down", str(work / "kube-play.yaml")])
    started = time.monotonic()
    podman("kube", "play", str(work / "kube-play.yaml"), env=env, timeout=180)
    pod = f"{deploy['metadata']['name']}-pod-0"
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}", env=env).stdout.strip()
    ip = container_ip(infra)
    wait_for("the pod's scimgate: /readyz 200", 30, lambda: http("GET", f"http://{ip}:9090/readyz", timeout=2)[0] == 200)
    report(True, f"podman kube play: pod {pod} at {ip}, scimgate ready after {time.monotonic() - started:.1f}s "
           "(JWKS from the backend container on the pod's loopback)")
    backend = f"{pod}-backend"
    before = len(backend_lines(backend))
    status, _, body = http("GET", f"http://{ip}:8080/Users", {"Authorization": f"Bearer {good}"})
    seen = backend_lines(backend)[before:]
    report(status == 200 and b"ListResponse" in body and seen == ["backend: GET /scim/v2/Users auth=ok"],
           "through the pod: scimgate -> backend on 127.0.0.1:8000 with the key from the Secret volume (200, auth=ok)",
           f"{status} {body[:200]!r} {seen}")
    status, _, _ = http("GET", f"http://{ip}:8080/Users")
    report(status == 401 and backend_lines(backend)[before + 1:] == [], "through the pod without a token: 401, the backend saw nothing")
    try:
        with socket.create_connection((ip, 8000), timeout=3):
            reachable = True
    except OSError:
        reachable = False
    report(not reachable, f"the backend's port 8000 is not reachable on the pod IP {ip} (it listens on loopback only)")


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["rules", "dashboard", "metrics", "prometheus", "container"])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--bin", help="scimgate binary")
    parser.add_argument("--python", default=sys.executable, help="python with pyjwt/cryptography (issuer.py)")
    parser.add_argument("--write", action="store_true", help="rules: regenerate the plain rules file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.phase == "rules":
        phase_rules(args.work, args.write)
    elif args.phase == "dashboard":
        phase_dashboard(args.work)
    elif args.phase == "metrics":
        work = args.work / "metrics"
        work.mkdir(exist_ok=True)
        phase_metrics(work, args.bin)
    elif args.phase == "prometheus":
        work = args.work / "prometheus"
        work.mkdir(exist_ok=True)
        phase_prometheus(work, args.bin, args.python)
    elif args.phase == "container":
        work = args.work / "container"
        work.mkdir(exist_ok=True)
        phase_container(work, args.bin, args.python)
    with (args.work / "counts").open("a") as f:
        f.write(f"{RESULTS['passed']} {RESULTS['failed']}\n")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
