"""Optional OAuth 2.0 client-credentials tokens for the Tracking API.

Used only when ``oauth_client_id``, ``oauth_client_key`` and
``oauth_key_id`` are all given. Signing the client assertion needs the
optional ``PyJWT`` package (``pip install segment-analytics-python[oauth]``),
imported only here and only then.

A token fetch is one request: it never sleeps and never holds a lock across
the network. A failed fetch raises :class:`OAuthError`; the batch's retry
policy decides what follows (a 4xx other than 408/429 from the token endpoint
is final: the batch is dropped as ``configuration_error``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

import requests

from segment.analytics import deadline
from segment.analytics.auth import AuthUnavailable
from segment.analytics.logs import register_secret
from segment.analytics.message import new_message_id

log = logging.getLogger("segment")

_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class OAuthError(AuthUnavailable):
    """A token could not be obtained; ``status`` is the token endpoint's answer, if any."""


class OauthManager:
    """Fetches and caches a bearer token; ``header()`` gives ``Authorization: Bearer <token>``."""

    oauth = True

    def __init__(
        self,
        client_id: str,
        client_key: str,
        key_id: str,
        auth_server: str = "https://oauth2.segment.io",
        scope: str = "tracking_api:write",
        timeout: float = 15,
        max_retries: int = 3,
    ) -> None:
        try:
            import jwt  # noqa: F401 - checked now so a missing extra fails at construction, not at send
        except ImportError as exc:
            raise ImportError(
                "OAuth needs the optional PyJWT package: pip install 'segment-analytics-python[oauth]'"
            ) from exc
        self.client_id = client_id
        self.client_key = client_key
        self.key_id = key_id
        self.auth_server = auth_server.rstrip("/")
        self.scope = scope
        self.timeout = timeout
        self.max_retries = max(1, max_retries)
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._expires_at = 0.0
        self._session = _token_session()

    def _assertion(self) -> str:
        import jwt

        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.auth_server,
            "iat": now - 5,
            "exp": now + 55,
            "jti": new_message_id(),
        }
        token: Any = jwt.encode(claims, self.client_key, algorithm="RS256", headers={"kid": self.key_id})
        return token.decode() if isinstance(token, bytes) else str(token)

    def _fetch(self) -> tuple[str, float]:
        try:
            assertion = self._assertion()
        except Exception as exc:  # PyJWT and cryptography refuse an unusable key in several ways
            message = f"could not sign the OAuth client assertion with oauth_client_key ({type(exc).__name__})"
            raise OAuthError(message, final=True) from exc
        deadline.start(self.timeout)  # the whole token request, like every request to the API
        try:
            response = self._session.post(
                f"{self.auth_server}/token",
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": _ASSERTION_TYPE,
                    "client_assertion": assertion,
                    "scope": self.scope,
                },
                timeout=self.timeout,
            )
        finally:
            deadline.clear()
        if response.status_code != 200:
            raise OAuthError(f"token endpoint answered {response.status_code}", response.status_code)
        payload = response.json()
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise OAuthError("token endpoint answered without an access_token", response.status_code)
        try:
            lifetime = float(payload.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return token, time.monotonic() + lifetime / 2

    def get_token(self) -> str:
        """A valid token: the cached one, or one fetched now (a single request, no retry, no sleep).

        Raises :class:`OAuthError` carrying the token endpoint's status when it answered.
        """
        with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
        try:
            token, expires_at = self._fetch()
        except OAuthError:
            raise
        except (requests.RequestException, ValueError) as exc:
            raise OAuthError(f"could not obtain an OAuth token: {type(exc).__name__}") from exc
        register_secret(token, slot=f"oauth-token-{id(self)}")  # a new token replaces the last but one
        with self._lock:
            self._token, self._expires_at = token, expires_at
        return token

    def header(self) -> str:
        """``Bearer <token>``."""
        return "Bearer " + self.get_token()

    def invalidate(self) -> None:
        """Forget the token so the next request fetches a new one."""
        with self._lock:
            self._token = None

    clear_token = invalidate

    def after_fork_in_child(self) -> None:
        """Fresh lock and HTTP session in a forked child; the token is fetched again."""
        self._lock = threading.Lock()
        self._session = _token_session()
        self._token = None
        self._expires_at = 0.0


def _token_session() -> requests.Session:
    """A session whose requests are bounded by :func:`deadline.start` as a whole."""
    session = requests.Session()
    adapter = deadline.DeadlineAdapter(max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def oauth_from(config: Any) -> Optional[OauthManager]:
    """The token source a client's options describe, or ``None`` when OAuth is not configured."""
    if not config.oauth:
        return None
    return OauthManager(
        config.oauth_client_id or "",
        config.oauth_client_key or "",
        config.oauth_key_id or "",
        config.oauth_auth_server,
        config.oauth_scope,
        config.timeout,
        config.max_retries,
    )
