"""Writes bench/results.md from one bench/run.sh run: the scenario table, the crypto micro-benchmark,
the issue 19 targets, and (when asked for) the profile. Everything below the ANALYSIS marker in the
existing results file is hand-written and kept as it is."""
import datetime
import os
import platform
import sys
from statistics import median

work, out, duration, reps, conns, tokens, scenario_lines = sys.argv[1:8]
ANALYSIS = "<!-- hand-written below this line; bench/run.sh keeps it -->"

scenarios = []  # (key, name, baseline key)
for line in scenario_lines.split("\n"):
    if line:
        key, name, _url, _pid, _tokens, _log, baseline = line.split("|")
        scenarios.append((key, name, baseline))
names = {key: name for key, name, _ in scenarios}

runs = {}  # key -> {round: (rps, p50, p99, user, sys, errs)}
for line in open(os.path.join(work, "raw.txt")):
    key, rps, p50, p99, user, sys_, errs, rnd = line.rstrip("\n").split("|")
    runs.setdefault(key, {})[int(rnd)] = (float(rps), p50, p99, float(user), float(sys_), errs)
rss = dict(line.rstrip("\n").split("|") for line in open(os.path.join(work, "rss.txt")) if line.strip())
verify = {}
for line in open(os.path.join(work, "verify.txt")):
    alg, raw, jwt, miss, over = line.rstrip("\n").split("|")
    verify[alg] = (float(raw), float(jwt), float(miss), float(over))


def cpu(run):
    return run[3] + run[4]


def errors(run):
    return int(run[5].split()[0]) + (1 if "(" in run[5] else 0)


def median_run(key):
    """The run with the median req/s (the lower middle one for an even count)."""
    ordered = sorted(runs[key].values(), key=lambda r: r[0])
    return ordered[(len(ordered) - 1) // 2]


def per_round(key, other, f):
    """f(run, other run) for every round both ran in."""
    return [f(runs[key][r], runs[other][r]) for r in sorted(runs[key]) if r in runs[other]]


def ratio(key, baseline, f):
    return median(per_round(key, baseline, lambda a, b: f(a) / f(b)))


def diff(key, other, f):
    return median(per_round(key, other, lambda a, b: f(a) - f(b)))


cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                 platform.processor())
lines = [
    "# scimgate benchmark results", "",
    f"Machine: {os.cpu_count()} cores, {cpu_model}, Linux {platform.release()}; "
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    f"Load: `wrk -t1 -c{conns} -d{duration}`, {reps} rounds of every scenario in turn (even rounds in reverse), "
    "loopback, every request `GET /Users` with a bearer token (one RS256 token, or "
    f"{tokens} distinct ones rotated); backend nginx `return 200` (1 worker); every proxy one worker "
    "(nginx `worker_processes 1` with upstream keepalive, scimgate `worker_threads = 1`), each scenario "
    "its own process. Logs on: nginx `access_log <file> combined`, scimgate's default JSON access line "
    "on stdout redirected to a file.", "",
    "| scenario | req/s | p50 | p99 | CPU µs/req | user + sys µs | peak RSS | non-2xx | req/s vs nginx | CPU vs nginx |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for key, name, baseline in scenarios:
    rps, p50, p99, user, sys_, _ = median_run(key)
    errs = sum(errors(r) for r in runs[key].values())
    base = "off" if baseline == "ng-off" else "on"
    lines.append(
        f"| {name} | {rps:,.0f} | {p50} | {p99} | {user + sys_:.1f} | {user:.1f} + {sys_:.1f} | "
        f"{float(rss[key]):.1f} MiB | {errs} | {ratio(key, baseline, lambda r: r[0]):.2f}× (log {base}) | "
        f"{ratio(key, baseline, cpu):.2f}× |")


def rounds_text(key, baseline):
    return ", ".join(f"{v:.2f}" for v in per_round(key, baseline, lambda a, b: a[0] / b[0]))


lines += ["",
          "Columns 2-6 are the run with the median req/s; peak RSS is the process's VmHWM after all rounds. "
          "The ratio columns are the median, over rounds, of the scenario against the nginx proxy with the same "
          "logging (log off for the bare proxy) in the same round. Per round, req/s vs nginx: "
          + "; ".join(f"{names[k]} {rounds_text(k, b)}" for k, _, b in scenarios if k != b) + ".",
          "",
          "CPU µs/req is the serving process alone (the nginx worker, the bare proxy, scimgate with all its "
          "threads, its log writer included), from /proc/<pid>/stat ticks over the run divided by requests.",
          "",
          "## Signature verification against the token-cache miss path",
          "",
          "`examples/verify_cost.rs`, run after the rounds above on the same keys and tokens: µs per call, one "
          "thread, median over batches of 10 calls that time the three ways back to back over the same tokens "
          "(*miss path − verify* is the median of each batch's difference). *aws-lc verify*: `ParsedPublicKey::verify_sig`, the key parsed once; "
          "*jsonwebtoken verify*: `jsonwebtoken::crypto::verify` with the key scimgate's JWKS parser builds (what "
          "`jsonwebtoken::decode` runs: it rebuilds the aws-lc key from the JWK on every call); *miss path*: "
          "`Verifier::verify` with `token_cache_size = 0` over distinct tokens. *In the proxy*: the cache-off "
          "scenario's CPU per request minus the one-token line-on scenario's (median over rounds).",
          "",
          "| algorithm | aws-lc verify | jsonwebtoken verify | miss path | miss path − verify | in the proxy: miss − hit | that − verify |",
          "|---|---:|---:|---:|---:|---:|---:|"]
in_proxy = {}
for alg, key in (("RS256", "gw-rs"), ("ES256", "gw-es")):
    if alg not in verify or key not in runs:
        continue
    raw, jwt, miss, over = verify[alg]
    in_proxy[alg] = diff(key, "gw-on", cpu)
    lines.append(f"| {alg} | {raw:.2f} | {jwt:.2f} | {miss:.2f} | {over:.2f} | {in_proxy[alg]:.1f} | "
                 f"{in_proxy[alg] - jwt:.1f} |")

line_cost = diff("gw-on", "gw-off", cpu)
nginx_line = diff("ng-on", "ng-off", cpu)
max_rss = max(float(rss[k]) for k in rss if k.startswith("gw-"))
total_errs = sum(errors(r) for key in runs for r in runs[key].values())


def verdict(ok):
    return "met" if ok else "**missed**"


targets = [
    ("one token, both logging: scimgate req/s ÷ nginx's", "≥ 1.00",
     ratio("gw-on", "ng-on", lambda r: r[0]), "{:.2f}×", lambda v: v >= 1.0),
    ("one token, neither logging: scimgate req/s ÷ nginx's", "≥ 1.00",
     ratio("gw-off", "ng-off", lambda r: r[0]), "{:.2f}×", lambda v: v >= 1.0),
    (f"the access line's own CPU (line on − off; nginx's combined line: {nginx_line:.1f} µs)", "≤ 1.5 µs",
     line_cost, "{:.1f} µs", lambda v: v <= 1.5),
]
for alg in ("RS256", "ES256"):
    if alg in verify:
        targets.append((f"{alg} miss path − signature verification (micro-benchmark)", "≤ 5 µs",
                        verify[alg][3], "{:.2f} µs", lambda v: v <= 5.0))
targets += [
    ("peak RSS, every scimgate process", "≤ 30 MiB", max_rss, "{:.1f} MiB", lambda v: v <= 30.0),
    ("non-2xx responses and socket errors, all runs", "0", total_errs, "{}", lambda v: v == 0),
]
lines += ["", "## Issue 19 targets (this run)", "", "| target | bound | measured | |", "|---|---:|---:|---|"]
for what, bound, value, fmt, ok in targets:
    lines.append(f"| {what} | {bound} | {fmt.format(value)} | {verdict(ok(value))} |")

counted = [line.rstrip("\n").split("|") for line in open(os.path.join(work, "instructions.txt")) if line.strip()]
if counted:
    lines += ["", "Instructions per forwarded request (callgrind, user space, `wrk -t1 -c8 -d3s`): "
              + "; ".join(f"{name} {int(n):,}" for name, n in counted) + "."]
profile = open(os.path.join(work, "profile.txt")).read().strip()
if profile:
    lines += ["", "## Profile (`BENCH_PROFILE=1`: perf cpu-clock samples over 4 s of each scimgate scenario, self time)", "", profile]
lines += ["", "Reproduce: `bash bench/run.sh` (see bench/README.md)."]

kept = ""
if os.path.exists(out):
    previous = open(out).read()
    if ANALYSIS in previous:
        kept = previous[previous.index(ANALYSIS):]
text = "\n".join(lines) + "\n"
open(out, "w").write(text + ("\n" + kept if kept else ""))
print(text)
