#!/usr/bin/env python3
"""A throwaway IdP for tests/deploy/smoke.sh: serves a JWKS on 127.0.0.1 and writes signed tokens.

    smoke_idp.py PORT OUTDIR    # serves http://127.0.0.1:PORT/jwks until killed

OUTDIR receives good.jwt (groups contains "scim-provisioners") and other-group.jwt (it does not),
both RS256, iss "http://127.0.0.1:PORT", aud "scimgate", valid for 10 minutes.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

port, outdir = int(sys.argv[1]), Path(sys.argv[2])
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update(kid="smoke-1", use="sig", alg="RS256")
jwks = json.dumps({"keys": [jwk]}).encode()
issuer = f"http://127.0.0.1:{port}"


def mint(groups: list[str]) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "aud": "scimgate", "sub": "smoke-client", "iat": now, "exp": now + 600, "groups": groups}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "smoke-1", "typ": "at+jwt"})


outdir.mkdir(parents=True, exist_ok=True)
(outdir / "good.jwt").write_text(mint(["staff", "scim-provisioners"]))
(outdir / "other-group.jwt").write_text(mint(["staff"]))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        if self.path != "/jwks":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(jwks)))
        self.end_headers()
        self.wfile.write(jwks)

    def log_message(self, fmt, *args):
        sys.stderr.write(f"idp: {fmt % args}\n")


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
