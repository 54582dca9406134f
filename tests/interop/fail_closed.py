"""Fail-closed checks against the real scim2-server, for tests/interop/run.sh (SECURITY.md T46).

  bulk-case-variant --proxy URL --direct URL
      A /Bulk request whose second, lower-case "operations" array deletes a user: sent directly
      with the API key, scim2-server runs the DELETE (the request is dangerous); sent through
      scimgate with a token whose rule allows only read, search and bulk, it is refused with 400
      and the user stays in place.

The reader's JWT comes from INTEROP_BEARER and the API key from INTEROP_API_KEY (never argv).
"""

import argparse
import http.client
import json
import os
import sys
import urllib.parse
import uuid

SCIM_JSON = "application/scim+json"


def exchange(method, url, token, body=None):
    """One request with `Authorization: Bearer <token>`: (status, lower-cased headers, body)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    headers = {"Authorization": f"Bearer {token}", "Accept": SCIM_JSON}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = SCIM_JSON
    conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=data, headers=headers)
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return out


def request(method, url, token, body=None):
    status, _, data = exchange(method, url, token, body)
    return status, data


def create_user(direct, key):
    name = f"fail-closed-{uuid.uuid4().hex[:8]}"
    user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name}
    status, body = request("POST", f"{direct}/v2/Users", key, user)
    if status != 201:
        sys.exit(f"FAIL create {name}: {status} {body[:200]!r}")
    return json.loads(body)["id"]


def smuggling_bulk(victim):
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "b1",
             "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                      "userName": f"decoy-{uuid.uuid4().hex[:8]}"}}
        ],
        "operations": [{"method": "DELETE", "path": f"/Users/{victim}"}],
    }


def bulk_case_variant(a):
    key, reader = os.environ["INTEROP_API_KEY"], os.environ["INTEROP_BEARER"]
    # Directly: does the backend read the lower-case member? (informational if it does not)
    control = create_user(a.direct, key)
    request("POST", f"{a.direct}/v2/Bulk", key, smuggling_bulk(control))
    status, _ = request("GET", f"{a.direct}/v2/Users/{control}", key)
    executed = "deleted it" if status == 404 else f"left it ({status})"
    print(f"  direct to scim2-server: the case-variant DELETE {executed}")
    # Through scimgate with the read/search/bulk token: refused, the user stays.
    victim = create_user(a.direct, key)
    status, body = request("POST", f"{a.proxy}/v2/Bulk", reader, smuggling_bulk(victim))
    print(f"  through scimgate: {status}")
    if status != 400:
        sys.exit(f"FAIL scimgate answered {status}, want 400: {body[:300]!r}")
    status, _ = request("GET", f"{a.direct}/v2/Users/{victim}", key)
    if status != 200:
        sys.exit(f"FAIL the user is gone after the refused request: GET {status}")
    print("  the user is still in place")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("bulk-case-variant")
    s.add_argument("--proxy", required=True)
    s.add_argument("--direct", required=True)
    a = p.parse_args()
    bulk_case_variant(a)


if __name__ == "__main__":
    main()
