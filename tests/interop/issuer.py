"""Loopback JWT issuer for the interop run: serves a JWKS and mints RS256 / ES256 tokens.

Usage: python issuer.py --issuer URL --audience AUD

It binds 127.0.0.1 on a free port (port 0) and prints one line to stdout,
``{"port": N}``, once it serves. Endpoints:

  GET  /jwks.json   the public keys: RSA-2048 (kid "interop-rsa") and P-256 (kid "interop-ec")
  GET  /client-jwks.json   the file given with --client-jwks (an OAuth client's public keys, for
                    the private_key_jwt client of scimgate's own token endpoint)
  POST /mint        JSON {"alg": "RS256"|"ES256", "typ": "JWT"|"at+jwt", "claims": {...},
                    "ttl": seconds (negative = already expired)} -> the compact JWT as text

The private keys live in this process only. The defaults for iss, aud, sub, iat, exp and jti are
filled in unless the request's claims set them (a claim set to null is left out).
"""

import argparse
import json
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

KEYS = {
    "RS256": ("interop-rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "ES256": ("interop-ec", ec.generate_private_key(ec.SECP256R1())),
}


def public_jwk(alg: str) -> dict:
    kid, key = KEYS[alg]
    to_jwk = RSAAlgorithm.to_jwk if alg == "RS256" else ECAlgorithm.to_jwk
    jwk = to_jwk(key.public_key(), as_dict=True)
    jwk.pop("key_ops", None)  # shaped like Okta's and Entra's JWKS: kty, kid, alg, use + key
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def mint(args: argparse.Namespace, request: dict) -> str:
    alg = request.get("alg", "RS256")
    kid, key = KEYS[alg]
    now = int(time.time())
    ttl = int(request.get("ttl", 600))
    claims = {
        "iss": args.issuer,
        "aud": args.audience,
        "sub": "interop-client",
        "iat": now if ttl > 0 else now + ttl - 60,
        "exp": now + ttl,
        "jti": secrets.token_hex(8),
    }
    claims.update(request.get("claims", {}))
    claims = {k: v for k, v in claims.items() if v is not None}
    headers = {"kid": kid, "typ": request.get("typ", "JWT")}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def handler(args: argparse.Namespace, jwks: bytes) -> type:
    client_jwks = b""
    if args.client_jwks:
        with open(args.client_jwks, "rb") as f:
            client_jwks = f.read()

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/jwks.json":
                self.reply(200, "application/jwk-set+json", jwks)
            elif self.path == "/client-jwks.json" and client_jwks:
                self.reply(200, "application/jwk-set+json", client_jwks)
            else:
                self.reply(404, "text/plain", b"not found\n")

        def do_POST(self) -> None:
            if self.path != "/mint":
                self.reply(404, "text/plain", b"not found\n")
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                token = mint(args, json.loads(self.rfile.read(length) or b"{}"))
            except (KeyError, ValueError, TypeError) as e:
                self.reply(400, "text/plain", f"bad mint request: {e}\n".encode())
                return
            self.reply(200, "application/jwt", token.encode())

        def log_message(self, fmt: str, *a: object) -> None:
            sys.stderr.write("issuer: " + (fmt % a) + "\n")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--client-jwks")
    args = parser.parse_args()
    jwks = json.dumps({"keys": [public_jwk(alg) for alg in KEYS]}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(args, jwks))
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
