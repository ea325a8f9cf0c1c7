"""OAuth2 client credentials: POST /token trades a client id and secret for a short-lived
HS256 token carrying the client's scopes; every other route checks token, scope and the
client's rate limit.

Client secrets are configured as SHA-256 digests only (`api.clients`), compared in constant
time; neither secrets nor tokens are ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import jwt
from fastapi import Request

from fraudstream.api.errors import ApiError
from fraudstream.api.ratelimit import RateLimiter
from infra.config import ApiSettings

log = logging.getLogger(__name__)

SCOPES = ("score", "label", "admin")
ISSUER = "fraudstream"
AUDIENCE = "fraudstream-api"
ALGORITHM = "HS256"
# Tokens remembered as verified (one per client and token lifetime, normally).
VERIFIED_CACHE = 10_000


def hash_secret(secret: str) -> str:
    """The digest to configure as `secret_sha256` for a client secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who a request is from, as the token says."""

    client_id: str
    scopes: frozenset[str]


class Authenticator:
    def __init__(self, api: ApiSettings) -> None:
        self.api = api
        if api.token_key is not None:
            self._key = api.token_key.get_secret_value().encode()
        else:
            self._key = secrets.token_bytes(32)
            log.warning(
                "api.token_key is not set: tokens are signed with a random key and honoured "
                "by this process only (set FRAUDSTREAM_API__TOKEN_KEY for several replicas)"
            )
        self.limiter = RateLimiter()
        self._verified: dict[str, tuple[Caller, float]] = {}
        # Compared against when the client id is unknown, so the answer takes as long.
        self._dummy = hash_secret(secrets.token_hex(16))

    # -- POST /token ----------------------------------------------------------------------
    async def issue(self, request: Request) -> dict[str, object]:
        client_id, secret, wanted = await _client_credentials(request)
        self.limit(client_id)
        client = self.api.clients.get(client_id)
        digest = hash_secret(secret)
        expected = client.secret_sha256 if client is not None else self._dummy
        if not hmac.compare_digest(digest, expected) or client is None:
            raise ApiError(
                401, "invalid_client", "unknown client id or wrong secret", headers=_basic()
            )
        granted: set[str] = set(client.scopes)
        if wanted is not None:
            unknown = wanted - granted
            if unknown:
                raise ApiError(
                    400,
                    "invalid_scope",
                    f"client {client_id!r} may not have scope {', '.join(sorted(unknown))}",
                )
            granted = wanted
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": client_id,
            "scope": " ".join(s for s in SCOPES if s in granted),
            "iat": now,
            "exp": now + self.api.token_ttl_s,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.api.token_ttl_s,
            "scope": claims["scope"],
        }

    # -- every protected route ------------------------------------------------------------
    def caller(self, request: Request, scope: str | None) -> Caller:
        """The verified caller; `scope` None: any valid token will do."""
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "unauthenticated",
                "send Authorization: Bearer <token> (get one from POST /token)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = token.strip()
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            caller = cached[0]
        else:
            caller = self._verify(token)
        if caller.client_id not in self.api.clients:
            raise ApiError(401, "invalid_token", f"client {caller.client_id!r} is not configured")
        self.limit(caller.client_id)
        if scope is not None and scope not in caller.scopes:
            raise ApiError(
                403,
                "insufficient_scope",
                f"this operation needs scope {scope!r}; the token has "
                f"{', '.join(sorted(caller.scopes)) or 'none'}",
                required_scope=scope,
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope" scope="{scope}"'},
            )
        return caller

    def _verify(self, token: str) -> Caller:
        """Check signature, audience, issuer and expiry; remember the token until it expires
        (a client sends the same token with every request: verifying it once saves ~15% of
        a scoring request's CPU)."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "sub", "scope"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(
                401,
                "invalid_token",
                "the token has expired: get a new one from POST /token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        except jwt.InvalidTokenError:
            raise ApiError(
                401,
                "invalid_token",
                "the token is not one this API issued (malformed, or signed with another key)",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        caller = Caller(str(claims["sub"]), frozenset(str(claims["scope"]).split()))
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()
        self._verified[token] = (caller, float(claims["exp"]))
        return caller

    def limit(self, client_id: str) -> None:
        client = self.api.clients.get(client_id)
        rate = client.rate_per_s if client and client.rate_per_s else self.api.rate_per_s
        burst = client.burst if client and client.burst else self.api.burst
        wait = self.limiter.take(client_id, rate, burst)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"more than {rate:g} requests/s (burst {burst}) from client {client_id!r}: "
                f"retry after {wait:.2f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
                retry_after_s=round(wait, 3),
            )


def _basic() -> dict[str, str]:
    return {"WWW-Authenticate": 'Basic realm="fraudstream"'}


async def _client_credentials(request: Request) -> tuple[str, str, set[str] | None]:
    """client id, secret and the scopes asked for, from a form body (RFC 6749 4.4) and/or
    HTTP Basic (RFC 6749 2.3.1)."""
    raw = await request.body()
    try:
        form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        form = {}
    if form.get("grant_type") != "client_credentials":
        raise ApiError(
            400,
            "unsupported_grant_type",
            "send grant_type=client_credentials as application/x-www-form-urlencoded",
        )
    client_id, secret = form.get("client_id"), form.get("client_secret")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            client_id, _, secret = decoded.partition(":")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_request", "malformed Basic credentials") from None
    if not client_id or not secret:
        raise ApiError(
            401,
            "invalid_client",
            "give client_id and client_secret (form fields, or HTTP Basic)",
            headers=_basic(),
        )
    scope = form.get("scope")
    wanted = set(scope.split()) if scope else None
    if wanted is not None and not wanted <= set(SCOPES):
        raise ApiError(400, "invalid_scope", f"scopes are {', '.join(SCOPES)}")
    return client_id, secret, wanted
