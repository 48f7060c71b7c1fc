"""Who may call: the installation's admin user, by HTTP Basic credentials or by a login token.

`POST /auth/login` exchanges the credentials for a JWT (HS256) that works as a Bearer token and, like in
lakeFS, as the `internal_auth_session` cookie. The signing key is derived from the secret access key, so
tokens survive a restart and die with a change of credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from devstack.lakefs_server.model import ADMIN_USER

TOKEN_COOKIE = "internal_auth_session"
TOKEN_LIFETIME = 7 * 24 * 3600  # lakeFS's default login duration


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


class Authenticator:
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._key = hashlib.sha256(b"lakefs-devstack-login:" + credentials.secret_access_key.encode()).digest()

    def valid_keys(self, access_key_id: str, secret_access_key: str) -> bool:
        return hmac.compare_digest(access_key_id, self.credentials.access_key_id) & hmac.compare_digest(
            secret_access_key, self.credentials.secret_access_key
        )

    def authenticated(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """Basic credentials or a valid token (header or cookie)."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                key, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self.valid_keys(key, secret)
        if scheme.lower() == "bearer":
            return self.valid_token(value.strip())
        token = cookies.get(TOKEN_COOKIE)
        return bool(token) and self.valid_token(token)

    def issue_token(self) -> tuple[str, int]:
        issued = int(time.time())
        expires = issued + TOKEN_LIFETIME
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": ADMIN_USER, "iat": issued, "exp": expires, "jti": secrets.token_hex(8)}
        payload = _b64(json.dumps(claims).encode())
        return f"{header}.{payload}.{self._sign(f'{header}.{payload}')}", expires

    def valid_token(self, token: str) -> bool:
        try:
            header, payload, signature = token.split(".")
            if not hmac.compare_digest(signature, self._sign(f"{header}.{payload}")):
                return False
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return False
        return claims.get("sub") == ADMIN_USER and claims.get("exp", 0) > time.time()

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
