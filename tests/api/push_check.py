#!/usr/bin/env python3
"""The browser's side of Web Push, done by implementations that are not natter's: `http_ece` (Mozilla's RFC 8188 /
RFC 8291 code, the one pywebpush uses) decrypts, and `cryptography` verifies the VAPID JWT (RFC 8292, ES256).

Install: pip install http_ece cryptography

  push_check.py keygen   -> {"private": <base64url d>, "p256dh": <base64url point>, "auth": <base64url 16 bytes>}
  push_check.py open     <- {"private", "auth", "body": <base64 of the request body>, "authorization": <header>}
                         -> {"plaintext": <text>, "claims": {...}, "k": <base64url key from the header>}

`open` exits non-zero (with the reason on stderr) when the payload does not decrypt or the signature does not verify.
"""

import base64
import json
import os
import sys

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keygen():
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    d = key.private_numbers().private_value.to_bytes(32, "big")
    return {"private": b64url(d), "p256dh": b64url(point), "auth": b64url(os.urandom(16))}


def open_push(request):
    d = int.from_bytes(b64url_decode(request["private"]), "big")
    private_key = ec.derive_private_key(d, ec.SECP256R1())
    plaintext = http_ece.decrypt(
        base64.b64decode(request["body"]),
        private_key=private_key,
        auth_secret=b64url_decode(request["auth"]),
        version="aes128gcm",
    )

    scheme, _, params = request["authorization"].partition(" ")
    if scheme != "vapid":
        raise ValueError(f"Authorization scheme is {scheme!r}, not vapid")
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    token, k = fields["t"], fields["k"]
    header_b64, claims_b64, signature_b64 = token.split(".")
    header = json.loads(b64url_decode(header_b64))
    if header.get("alg") != "ES256":
        raise ValueError(f"JWT alg is {header.get('alg')!r}")
    signature = b64url_decode(signature_b64)
    if len(signature) != 64:
        raise ValueError("an ES256 JWS signature is r||s, 64 bytes")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(k))
    try:
        public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("the VAPID JWT signature does not verify with k") from None
    return {"plaintext": plaintext.decode(), "claims": json.loads(b64url_decode(claims_b64)), "k": k}


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "keygen":
        print(json.dumps(keygen()))
    elif command == "open":
        try:
            print(json.dumps(open_push(json.load(sys.stdin))))
        except Exception as error:  # noqa: BLE001 - every failure is a test failure with its reason
            print(f"{type(error).__name__}: {error}", file=sys.stderr)
            sys.exit(1)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
