"""Checks for tests/interop/run.sh. Each subcommand prints what it saw and exits 0 (pass) or 1.

Secrets never go on the command line: the caller's JWT comes from INTEROP_BEARER and the
upstream API key from INTEROP_API_KEY.

  port-from FILE                  wait for {"port": N} in FILE (issuer.py's stdout), print N
  listening FILE --pid PID        wait for scimgate's "listening" log line, print "PROXY ADMIN"
  wait-http URL [--pid PID]       poll until URL answers 200 (fail early if PID exits)
  mint ISSUER [--alg --typ --claims JSON --ttl S]   print a token from issuer.py
  tester-counts FILE              print the status counts of a `scim2 test` output
  reject URL --status --www-authenticate --scim-log --marker --admin ADDR --reason R
                                  the request (bearer INTEROP_BEARER, or none) is refused by
                                  scimgate itself, for reason R (its deny metric), and never
                                  reaches scim2-server
  log-control URL --scim-log --marker
                                  an authorised request to a marker path does reach scim2-server
                                  (proves the log check can see requests); prints the log count
  location --proxy URL            Location / meta.location name the proxy's address
  etag --proxy URL --direct URL   ETag, If-Match, If-None-Match pass through unchanged
  idp-shapes --proxy URL --direct URL
                                  Okta's and Entra ID's requests (shapes.py), played directly
                                  and through scimgate: the same status and body at every step
  refused-heads URL --admin ADDR --scim-log --marker
                                  heads scimgate refuses itself (malformed, too large, ambiguous
                                  framing, a raw `"` in the path) get a SCIM error body with
                                  x-request-id and their metric, and never reach scim2-server
"""

import argparse
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.parse
import uuid
from collections import Counter

import shapes

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
# scim2-server (wsgiref) logs one line per request: ... "GET /v2/Users HTTP/1.1" 200 123
REQUEST_LINE = re.compile(r'"[A-Z]+ /\S* HTTP/[0-9.]+" \d{3}')
TESTER_STATUS = re.compile(
    r"^(SUCCESS|COMPLIANT|ACCEPTABLE|DEVIATION|ERROR|CRITICAL|SKIPPED) ", re.MULTILINE
)


class Failed(Exception):
    """A check did not hold; the message says what was expected and what came."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        check(len(values) <= 1, f"{len(values)} {name} headers: {values}")
        return values[0] if values else None

    def json(self) -> dict:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise Failed(f"body is not JSON ({e}): {self.body[:300]!r}") from None


def request(method: str, url: str, headers: dict | None = None, body: dict | None = None,
            timeout: float = 10) -> Response:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", SCIM_JSON)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=data, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def bearer(var: str) -> dict:
    value = os.environ.get(var)
    return {"Authorization": f"Bearer {value}"} if value else {}


def wait_until(what: str, timeout: float, probe):
    """Poll probe() until it returns a non-None value, every 50 ms, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def request_lines(path: str) -> list[str]:
    return [line for line in read_lines(path) if REQUEST_LINE.search(line)]


# --- process start-up ------------------------------------------------------------------------

def cmd_port_from(a) -> None:
    def probe():
        for line in read_lines(a.file):
            if line.startswith("{") and "port" in line:
                return json.loads(line)["port"]
        return None
    print(wait_until(f"a port line in {a.file}", a.timeout, probe))


def cmd_listening(a) -> None:
    def probe():
        for line in read_lines(a.file):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "listening" or entry.get("fields", {}).get("message") == "listening":
                fields = {**entry.get("fields", {}), **entry}
                return f"{fields['proxy_addr']} {fields['admin_addr']}"
        if a.pid and not os.path.exists(f"/proc/{a.pid}"):
            raise Failed(f"scimgate (pid {a.pid}) exited before logging \"listening\"")
        return None
    print(wait_until(f'scimgate\'s "listening" line in {a.file}', a.timeout, probe))


def cmd_wait_http(a) -> None:
    def probe():
        if a.pid and not os.path.exists(f"/proc/{a.pid}"):
            raise Failed(f"the server (pid {a.pid}) exited")
        try:
            r = request("GET", a.url, timeout=2)
            return r.status if r.status == a.status else None
        except OSError:
            return None
    wait_until(f"{a.url} to answer {a.status}", a.timeout, probe)


def cmd_mint(a) -> None:
    body = {"alg": a.alg, "typ": a.typ, "claims": json.loads(a.claims), "ttl": a.ttl}
    r = request("POST", f"{a.issuer}/mint", body=body)
    check(r.status == 200, f"mint: {r.status} {r.body!r}")
    print(r.body.decode())


def cmd_tester_counts(a) -> None:
    with open(a.file, encoding="utf-8", errors="replace") as f:
        counts = Counter(TESTER_STATUS.findall(f.read()))
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no-results")


# --- negative cases --------------------------------------------------------------------------

def deny_count(admin: str, reason: str) -> int:
    """scimgate's scimgate_auth_decisions_total{decision="deny",reason=...} (design.md §6)."""
    r = request("GET", f"http://{admin}/metrics")
    check(r.status == 200, f"GET /metrics on the admin port: {r.status}")
    series = f'scimgate_auth_decisions_total{{decision="deny",reason="{reason}"}} '
    for line in r.body.decode().splitlines():
        if line.startswith(series):
            return int(float(line[len(series):]))
    return 0


def cmd_reject(a) -> None:
    url = f"{a.url}/v2/Users/{a.marker}"
    before = deny_count(a.admin, a.reason)
    r = request("GET", url, headers=bearer("INTEROP_BEARER"))
    www = r.header("WWW-Authenticate")
    print(f"  GET {urllib.parse.urlsplit(url).path} -> {r.status}, WWW-Authenticate: {www}, "
          f"Content-Type: {r.header('Content-Type')}, body: {r.body.decode(errors='replace')}")
    check(r.status == a.status, f"status {r.status}, expected {a.status}")
    check(www == a.www_authenticate,
          f"WWW-Authenticate {www!r}, expected {a.www_authenticate!r} (scimgate's, not scim2-server's)")
    check((r.header("Content-Type") or "").startswith(SCIM_JSON),
          f"Content-Type {r.header('Content-Type')!r}, expected {SCIM_JSON}")
    body = r.json()
    check(body.get("schemas") == [ERROR_SCHEMA] and body.get("status") == str(a.status),
          f"SCIM error body with status \"{a.status}\" expected, got {body}")
    after = deny_count(a.admin, a.reason)
    print(f'  scimgate_auth_decisions_total{{decision="deny",reason="{a.reason}"}}: {before} -> {after}')
    check(after == before + 1, f"expected the deny reason {a.reason!r} to count this request once")
    seen = [line for line in read_lines(a.scim_log) if a.marker in line]
    check(not seen, f"scim2-server logged the refused request: {seen}")
    print(f"  scim2-server log: no line for {a.marker}")


def cmd_log_control(a) -> None:
    url = f"{a.url}/v2/Users/{a.marker}"
    r = request("GET", url, headers=bearer("INTEROP_BEARER"))
    check(r.status == 404, f"GET {url} with a valid token: {r.status}, expected scim2-server's 404")

    def probe():
        return True if any(a.marker in line for line in read_lines(a.scim_log)) else None
    wait_until(f"{a.marker} in scim2-server's log", 10, probe)
    print(len(request_lines(a.scim_log)))


# --- Location and ETag -----------------------------------------------------------------------

def new_user(url: str, auth: dict) -> tuple[Response, dict]:
    user = {"schemas": [USER_SCHEMA], "userName": f"interop-{uuid.uuid4().hex[:12]}"}
    r = request("POST", f"{url}/v2/Users", headers=auth, body=user)
    check(r.status == 201, f"POST /v2/Users: {r.status} {r.body[:300]!r}")
    return r, r.json()


def cmd_location(a) -> None:
    auth = bearer("INTEROP_BEARER")
    proxy = a.proxy.rstrip("/")
    r, user = new_user(proxy, auth)
    expected = f"{proxy}/v2/Users/{user['id']}"
    loc, meta_loc = r.header("Location"), user.get("meta", {}).get("location")
    print(f"  POST /v2/Users via scimgate -> 201, Location: {loc}, meta.location: {meta_loc}")
    check(loc == expected, f"Location {loc!r}, expected {expected!r}")
    check(meta_loc == expected, f"meta.location {meta_loc!r}, expected {expected!r}")

    g = request("GET", expected, headers=auth)
    check(g.status == 200, f"GET {expected}: {g.status}")
    got = g.json().get("meta", {}).get("location")
    print(f"  GET {urllib.parse.urlsplit(expected).path} via scimgate -> meta.location: {got}")
    check(got == expected, f"GET meta.location {got!r}, expected {expected!r}")

    q = urllib.parse.quote(f'userName eq "{user["userName"]}"')
    s = request("GET", f"{proxy}/v2/Users?filter={q}", headers=auth)
    check(s.status == 200, f"GET /v2/Users?filter=...: {s.status}")
    found = [u.get("meta", {}).get("location") for u in s.json().get("Resources", [])]
    print(f"  GET /v2/Users?filter=userName eq ... via scimgate -> meta.location: {found}")
    check(found == [expected], f"search meta.location {found}, expected [{expected!r}]")
    request("DELETE", expected, headers=auth)


def cmd_etag(a) -> None:
    proxy, direct = a.proxy.rstrip("/"), a.direct.rstrip("/")
    via, key = bearer("INTEROP_BEARER"), bearer("INTEROP_API_KEY")
    r, user = new_user(proxy, via)
    path = f"/v2/Users/{user['id']}"
    e1 = r.header("ETag")
    print(f"  POST /v2/Users via scimgate -> ETag: {e1}, meta.version: {user['meta'].get('version')}")
    check(e1 is not None and e1 == user["meta"].get("version"), "ETag missing or != meta.version")

    d = request("GET", direct + path, headers=key)
    p = request("GET", proxy + path, headers=via)
    print(f"  GET direct -> ETag {d.header('ETag')}; GET via scimgate -> ETag {p.header('ETag')}")
    check(d.status == 200 and p.status == 200, f"GET: direct {d.status}, via scimgate {p.status}")
    check(d.header("ETag") == e1 and p.header("ETag") == e1, "ETag changed on the way")

    n = request("GET", proxy + path, headers={**via, "If-None-Match": e1})
    print(f"  GET If-None-Match: {e1} via scimgate -> {n.status}, ETag {n.header('ETag')}")
    check(n.status == 304 and n.header("ETag") == e1, "expected 304 with the same ETag")

    replacement = {"schemas": [USER_SCHEMA], "userName": user["userName"], "displayName": "Interop"}
    stale = 'W/"interop-stale"'
    s = request("PUT", proxy + path, headers={**via, "If-Match": stale}, body=replacement)
    print(f"  PUT If-Match: {stale} via scimgate -> {s.status}")
    check(s.status == 412, f"PUT with a stale If-Match: {s.status}, expected 412 from scim2-server")

    u = request("PUT", proxy + path, headers={**via, "If-Match": e1}, body=replacement)
    e2 = u.header("ETag")
    print(f"  PUT If-Match: {e1} via scimgate -> {u.status}, ETag {e2}")
    check(u.status == 200 and e2 and e2 != e1, "expected 200 with a new ETag")
    check(u.json()["meta"].get("version") == e2, "meta.version != ETag after PUT")

    patch = {"schemas": [PATCH_SCHEMA],
             "Operations": [{"op": "replace", "path": "displayName", "value": "x"}]}
    pa = request("PATCH", proxy + path, headers={**via, "If-Match": e1}, body=patch)
    print(f"  PATCH If-Match: {e1} (now stale) via scimgate -> {pa.status}")
    check(pa.status == 412, f"PATCH with a stale If-Match: {pa.status}, expected 412")

    x = request("DELETE", proxy + path, headers={**via, "If-Match": e1})
    y = request("DELETE", proxy + path, headers={**via, "If-Match": e2})
    print(f"  DELETE If-Match: {e1} -> {x.status}; DELETE If-Match: {e2} -> {y.status}")
    check(x.status == 412 and y.status == 204, "expected 412 then 204")
    gone = request("GET", direct + path, headers=key)
    check(gone.status == 404, f"GET direct after DELETE: {gone.status}, expected 404")


# --- IdP request shapes (issue 15) ------------------------------------------------------------

def send_raw(base: str, auth: dict, method: str, target: str, body: dict | None,
             agent: str) -> Response:
    """One request with `target` on the request line exactly as given (raw `"`, `+`)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.putrequest(method, u.path.rstrip("/") + target, skip_accept_encoding=True)
        headers = {**auth, "Accept": SCIM_JSON, "User-Agent": agent}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = SCIM_JSON
            headers["Content-Length"] = str(len(data))
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(data)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def cmd_idp_shapes(a) -> None:
    direct, proxy = a.direct.rstrip("/") + "/v2", a.proxy.rstrip("/") + "/v2"
    key, via = bearer("INTEROP_API_KEY"), bearer("INTEROP_BEARER")
    nonce = uuid.uuid4().hex[:10]

    def play(base: str, auth: dict) -> list:
        def send(method, target, body, agent):
            return send_raw(base, auth, method, target, body, agent)
        results, leftover = shapes.run(send, nonce)
        for rid in leftover:  # Okta never deletes users: clean up with the API key
            r = request("DELETE", f"{direct}/Users/{rid}", headers=key)
            check(r.status == 204, f"cleanup DELETE /Users/{rid}: {r.status}")
        return results

    d = play(direct, key)
    p = play(proxy, via)
    check(len(d) == len(p), f"{len(d)} steps directly, {len(p)} through scimgate")
    diffs = []
    for (name, ds, db), (_, ps, pb) in zip(d, p):
        same = ds == ps and db == pb
        print(f"  {'same' if same else 'DIFF'}  direct {ds}, scimgate {ps}  {name}")
        if not same:
            diffs.append(f"{name}:\n    direct   {ds} {json.dumps(db)[:400]}"
                         f"\n    scimgate {ps} {json.dumps(pb)[:400]}")
        expected = shapes.EXPECTED.get(name)
        if expected:
            status, total = expected
            check(ds == status, f"{name}: directly {ds}, expected {status}: {db}")
            if total is not None:
                check(isinstance(db, dict) and db.get("totalResults") == total,
                      f"{name}: expected totalResults {total}: {db}")
    check(len(shapes.EXPECTED) == sum(1 for n, _, _ in d if n in shapes.EXPECTED),
          "a pinned step is missing from the story")
    check(not diffs, "responses differ:\n  " + "\n  ".join(diffs))
    print(f"  {len(d)} steps, same status and body directly and through scimgate")


def metric_value(admin: str, series: str) -> float:
    r = request("GET", f"http://{admin}/metrics")
    check(r.status == 200, f"GET /metrics on the admin port: {r.status}")
    for line in r.body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line[len(series) + 1:])
    return 0.0


def raw_exchange(url: str, data: bytes) -> Response:
    """Writes `data` as it is on a fresh connection and reads one response."""
    u = urllib.parse.urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(data)
        r = http.client.HTTPResponse(sock)
        r.begin()
        return Response(r.status, r.getheaders(), r.read())


def cmd_refused_heads(a) -> None:
    path = f"/v2/Users/{a.marker}"
    auth = f"Authorization: Bearer {os.environ['INTEROP_BEARER']}\r\n"
    cases = [
        ("obs-fold", 400, "bad_request",
         f"GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}X-Folded: a\r\n b\r\n\r\n".encode()),
        ("head over 64 KiB", 431, "headers_too_large",
         f"GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}X-Big: {'a' * 70000}\r\n\r\n".encode()),
        ("Content-Length with Transfer-Encoding", 400, "bad_request",
         (f"POST {path} HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 5\r\n"
          f"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode()),
        ('raw " in the path', 400, "bad_request",
         f'GET {path}"x HTTP/1.1\r\nHost: gw\r\n{auth}\r\n'.encode()),
    ]
    for name, status, outcome, data in cases:
        series = f'scimgate_requests_total{{outcome="{outcome}"}}'
        before = metric_value(a.admin, series)
        r = raw_exchange(a.url, data)
        print(f"  {name} -> {r.status}, Content-Type: {r.header('Content-Type')}, "
              f"x-request-id: {r.header('x-request-id')}, body: {r.body.decode(errors='replace')}")
        check(r.status == status, f"{name}: status {r.status}, expected {status}")
        check((r.header("Content-Type") or "").startswith(SCIM_JSON), f"{name}: Content-Type")
        check(bool(r.header("x-request-id")), f"{name}: no x-request-id")
        body = r.json()
        check(body.get("schemas") == [ERROR_SCHEMA] and body.get("status") == str(status),
              f"{name}: SCIM error body with status \"{status}\" expected, got {body}")
        after = metric_value(a.admin, series)
        check(after == before + 1, f"{name}: {series} {before} -> {after}, expected +1")
    seen = [line for line in read_lines(a.scim_log) if a.marker in line]
    check(not seen, f"scim2-server logged a refused request: {seen}")
    print(f"  scim2-server log: no line for {a.marker}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, *positional: str, **options) -> None:
        s = sub.add_parser(name)
        for arg in positional:
            s.add_argument(arg)
        for opt, kwargs in options.items():
            s.add_argument("--" + opt.replace("_", "-"), **kwargs)

    required = {"required": True}

    def seconds(default: float) -> dict:
        return {"type": float, "default": default}

    add("port-from", "file", timeout=seconds(15))
    add("listening", "file", pid={}, timeout=seconds(20))
    add("wait-http", "url", pid={}, status={"type": int, "default": 200}, timeout=seconds(20))
    add("mint", "issuer", alg={"default": "RS256"}, typ={"default": "JWT"},
        claims={"default": "{}"}, ttl={"type": int, "default": 600})
    add("tester-counts", "file")
    add("reject", "url", status={"type": int, **required}, www_authenticate=required,
        reason=required, admin=required, scim_log=required, marker=required)
    add("log-control", "url", scim_log=required, marker=required)
    add("location", proxy=required)
    add("etag", proxy=required, direct=required)
    add("idp-shapes", proxy=required, direct=required)
    add("refused-heads", "url", admin=required, scim_log=required, marker=required)
    return p


def main() -> None:
    a = parser().parse_args()
    try:
        globals()["cmd_" + a.cmd.replace("-", "_")](a)
    except (Failed, AssertionError, OSError, http.client.HTTPException, KeyError) as e:
        what = str(e) if isinstance(e, Failed) else f"{type(e).__name__}: {e}"
        print(f"  FAILED: {what}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
