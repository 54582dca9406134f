"""The deprovision budget against the real scimgate binary and the real scim2-server, for
tests/interop/run.sh (issue 18).

  budget --proxy URL --direct URL --budget N --window SECONDS

A loop of Okta- and Entra-shaped deactivations and deletes (idp-clients.md §4: Okta's pathless
replace, Entra's "Replace"/"False" and its lowercase form, a pathless replace mixing `active` with
other attributes, PUT with "active": false, DELETE) runs through scimgate with a token whose tenant
has `max_deprovisions = N` in a window of SECONDS. Exactly N pass and change scim2-server's state
(read back directly with the API key); every later one gets 429 with a Retry-After inside the window
and changes nothing; once the window has moved on, the next one passes. Then the same through
/Bulk: each operation counts, and a /Bulk that would pass the budget is refused whole.

The token comes from INTEROP_BEARER and the API key from INTEROP_API_KEY (never argv).
"""

import argparse
import json
import os
import sys
import time
import uuid

from fail_closed import exchange as request

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def create_users(direct, key, n):
    ids = []
    for _ in range(n):
        name = f"guard-{uuid.uuid4().hex[:10]}"
        status, _, body = request("POST", f"{direct}/v2/Users", key,
                                  {"schemas": [USER_SCHEMA], "userName": name, "active": True})
        if status != 201:
            fail(f"create {name}: {status} {body[:200]!r}")
        ids.append(json.loads(body)["id"])
    return ids


def deprovisioned(direct, key, ids):
    """How many of `ids` scim2-server has deleted or deactivated."""
    n = 0
    for uid in ids:
        status, _, body = request("GET", f"{direct}/v2/Users/{uid}", key)
        if status == 404 or (status == 200 and json.loads(body).get("active") is False):
            n += 1
        elif status != 200:
            fail(f"read back {uid}: {status}")
    return n


def patch(ops):
    return {"schemas": [PATCH_SCHEMA], "Operations": ops}


# (name, method, body for user `uid`); bodies as Okta and Entra send them.
SHAPES = [
    ("Okta pathless replace", "PATCH", lambda uid: patch([{"op": "replace", "value": {"active": False}}])),
    ("Entra Replace path active \"False\"", "PATCH",
     lambda uid: patch([{"op": "Replace", "path": "active", "value": "False"}])),
    ("Entra lowercase \"false\"", "PATCH", lambda uid: patch([{"op": "replace", "path": "active", "value": "false"}])),
    ("pathless replace mixing active", "PATCH",
     lambda uid: patch([{"op": "REPLACE", "value": {"displayName": "leaver", "Active": "False"}}])),
    ("PUT active false", "PUT",
     lambda uid: {"schemas": [USER_SCHEMA], "id": uid, "userName": f"put-{uid[:8]}", "active": False}),
    ("DELETE", "DELETE", lambda uid: None),
]


def deprovision(proxy, token, uid, shape):
    _, method, body = shape
    return request(method, f"{proxy}/v2/Users/{uid}", token, body(uid))


def retry_after(name, headers, window):
    value = headers.get("retry-after", "")
    if not value.isdigit() or not 1 <= int(value) <= window:
        fail(f"{name}: 429 with Retry-After {value!r}, want 1..{window}")
    return int(value)


def budget(a):
    key, token = os.environ["INTEROP_API_KEY"], os.environ["INTEROP_BEARER"]
    users = create_users(a.direct, key, a.budget + len(SHAPES) + 2)
    passed, refused, wait = [], 0, a.window
    for i, uid in enumerate(users[: a.budget + len(SHAPES)]):
        shape = SHAPES[i % len(SHAPES)]
        status, headers, body = deprovision(a.proxy, token, uid, shape)
        if status == 429:
            wait = retry_after(shape[0], headers, a.window)
            if b"urn:ietf:params:scim:api:messages:2.0:Error" not in body:
                fail(f"{shape[0]}: 429 without a SCIM error body: {body[:200]!r}")
            refused += 1
        elif 200 <= status < 300:
            passed.append(shape[0])
        else:
            fail(f"{shape[0]}: status {status} {body[:200]!r}")
    print(f"  {len(passed)} passed ({', '.join(passed)}), {refused} refused with 429")
    if len(passed) != a.budget:
        fail(f"{len(passed)} deprovisionings passed, budget {a.budget}")
    seen = deprovisioned(a.direct, key, users)
    print(f"  scim2-server: {seen} of {len(users)} users deleted or deactivated")
    if seen != a.budget:
        fail(f"the backend deprovisioned {seen}, want exactly {a.budget}")
    # After Retry-After (and at most one window) the next one passes.
    time.sleep(wait)
    deadline = time.monotonic() + a.window + 2
    extra = users[-1]
    while True:
        status, headers, _ = deprovision(a.proxy, token, extra, SHAPES[1])
        if 200 <= status < 300:
            break
        if status != 429 or time.monotonic() > deadline:
            fail(f"after the window: status {status}")
        time.sleep(0.2)
    if deprovisioned(a.direct, key, users) != a.budget + 1:
        fail("the deprovisioning after the window did not reach the backend")
    print("  after the window the next deactivation passed")

    # /Bulk: wait for an empty window, then one /Bulk of budget - 1 passes, one more of two is
    # refused whole (nothing of it runs), and a single one still fits.
    time.sleep(a.window + 1)
    bulk_users = create_users(a.direct, key, a.budget + 2)

    def op(uid, i):
        name, method, body = SHAPES[i % len(SHAPES)]
        o = {"method": method, "path": f"/Users/{uid}", "bulkId": f"b{i}"}
        if body(uid) is not None:
            o["data"] = body(uid)
        return o

    first = bulk_users[: a.budget - 1]
    status, _, body = request("POST", f"{a.proxy}/v2/Bulk", token,
                              {"schemas": [BULK_SCHEMA], "Operations": [op(u, i) for i, u in enumerate(first)]})
    if status != 200:
        fail(f"/Bulk of {len(first)}: status {status} {body[:300]!r}")
    if deprovisioned(a.direct, key, bulk_users) != len(first):
        fail(f"/Bulk of {len(first)} inside the budget did not all reach the backend")
    rest = bulk_users[a.budget - 1: a.budget + 1]
    status, headers, _ = request("POST", f"{a.proxy}/v2/Bulk", token,
                                 {"schemas": [BULK_SCHEMA], "Operations": [op(u, i + 1) for i, u in enumerate(rest)]})
    if status != 429:
        fail(f"/Bulk over the budget: status {status}")
    retry_after("/Bulk over the budget", headers, a.window)
    if deprovisioned(a.direct, key, bulk_users) != len(first):
        fail("a refused /Bulk changed the backend")
    status, _, _ = deprovision(a.proxy, token, rest[0], SHAPES[0])
    if not 200 <= status < 300 or deprovisioned(a.direct, key, bulk_users) != a.budget:
        fail(f"the last deprovisioning of the budget: status {status}")
    print(f"  /Bulk: {len(first)} operations passed, a /Bulk of {len(rest)} over the budget refused whole")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("budget")
    b.add_argument("--proxy", required=True)
    b.add_argument("--direct", required=True)
    b.add_argument("--budget", type=int, required=True)
    b.add_argument("--window", type=int, required=True)
    a = p.parse_args()
    {"budget": budget}[a.cmd](a)
    print("PASS")


if __name__ == "__main__":
    main()
