"""OAuth 2.0 clients no one here wrote, against scimgate's own token endpoint (issue 17).

Usage:
  python oauth_clients.py keygen --key OUT.pem [--jwks OUT.json --kid KID]
  python oauth_clients.py authlib --method client_secret_basic|client_secret_post \
      --token-url URL --client-id ID                 (the secret in $INTEROP_CLIENT_SECRET)
  python oauth_clients.py authlib --method private_key_jwt --token-url URL --client-id ID \
      --key PEM --kid KID --audience AUD
  python oauth_clients.py oauthlib --token-url URL --client-id ID   (secret as above)

`keygen` writes a P-256 PKCS#8 PEM (scimgate's issuer key, or the assertion client's) and, with
--jwks, its public JWK Set. The other commands get a client-credentials token with authlib's
OAuth2Session or requests-oauthlib's BackendApplicationClient, check the RFC 6749 §5.1 answer,
and print the access token alone.
"""

import argparse
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Loopback http in this run only: both libraries refuse plain http token URLs otherwise.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"


def keygen(args: argparse.Namespace) -> None:
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(args.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    if args.jwks:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk.pop("key_ops", None)
        jwk.update({"kid": args.kid, "alg": "ES256", "use": "sig"})
        with open(args.jwks, "w") as f:
            json.dump({"keys": [jwk]}, f)


def checked(token: dict) -> str:
    if token.get("token_type", "").lower() != "bearer" or not token.get("access_token"):
        raise SystemExit(f"unexpected token response: keys {sorted(token)}")
    if not isinstance(token.get("expires_in"), int) or not 300 <= token["expires_in"] <= 6 * 3600:
        raise SystemExit(f"expires_in out of range: {token.get('expires_in')!r}")
    return token["access_token"]


def with_authlib(args: argparse.Namespace) -> str:
    from authlib.integrations.requests_client import OAuth2Session

    if args.method == "private_key_jwt":
        from authlib.oauth2.rfc7523 import PrivateKeyJWT
        from joserfc.jwk import ECKey  # authlib's JOSE library; a PEM alone is read as RSA

        with open(args.key, "rb") as f:
            private_key = ECKey.import_key(f.read())
        session = OAuth2Session(
            args.client_id,
            private_key,
            token_endpoint_auth_method="private_key_jwt",
            scope="scim",
        )
        # RFC 7523 §3: aud is the authorization server's token endpoint as it names itself
        # (its metadata's token_endpoint), iss = sub = the client id; authlib signs it.
        session.register_client_auth_method(
            PrivateKeyJWT(args.audience, headers={"kid": args.kid}, alg="ES256")
        )
    else:
        session = OAuth2Session(
            args.client_id,
            os.environ["INTEROP_CLIENT_SECRET"],
            token_endpoint_auth_method=args.method,
            scope="scim",
        )
    token = session.fetch_token(args.token_url, grant_type="client_credentials", timeout=20)
    return checked(dict(token))


def with_oauthlib(args: argparse.Namespace) -> str:
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session

    session = OAuth2Session(client=BackendApplicationClient(client_id=args.client_id))
    token = session.fetch_token(
        token_url=args.token_url,
        client_id=args.client_id,
        client_secret=os.environ["INTEROP_CLIENT_SECRET"],
        timeout=20,
    )
    return checked(dict(token))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("--key", required=True)
    k.add_argument("--jwks")
    k.add_argument("--kid", default="interop-client")
    for name in ("authlib", "oauthlib"):
        p = sub.add_parser(name)
        p.add_argument("--token-url", required=True)
        p.add_argument("--client-id", required=True)
        if name == "authlib":
            p.add_argument(
                "--method",
                required=True,
                choices=["client_secret_basic", "client_secret_post", "private_key_jwt"],
            )
            p.add_argument("--key")
            p.add_argument("--kid", default="interop-client")
            p.add_argument("--audience")
    args = parser.parse_args()
    if args.command == "keygen":
        keygen(args)
        return
    token = with_authlib(args) if args.command == "authlib" else with_oauthlib(args)
    print(token)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line, never the secret or a token
        sys.stderr.write(f"oauth_clients: {type(e).__name__}: {e}\n")
        sys.exit(1)
