"""The ``Authorization`` header: Basic from the write key, or Bearer from an OAuth token source.

Every form of a credential is registered with the log filter (the key, the base64 of ``key:`` and of
``key``, their escaped and encoded forms), so neither the key nor its Basic value nor a token reaches a
log line or an exception text, even when a server echoes it back.
"""

from __future__ import annotations

import base64
from typing import Optional, Protocol

from segment.analytics.logs import register_secret

__all__ = ["Auth", "AuthUnavailable", "BasicAuth", "basic_secrets", "basic_value"]


class AuthUnavailable(Exception):
    """No Authorization header could be had (e.g. the OAuth token endpoint failed).

    ``status`` is the token endpoint's HTTP status, or ``None`` when it gave no answer. ``final`` is
    ``True`` when trying again cannot help (the client assertion could not be signed with the key).
    """

    def __init__(self, message: str, status: Optional[int] = None, final: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.final = final


class Auth(Protocol):
    """Supplies the Authorization header value; OAuth can also be invalidated."""

    oauth: bool

    def header(self) -> str:
        """The Authorization header value for the next request (may raise :class:`AuthUnavailable`)."""
        ...

    def invalidate(self) -> None:
        """Forget the current token (after a 401, 403 or 511)."""
        ...


def basic_value(write_key: str) -> str:
    """``Basic base64("<writeKey>:")``."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")


def basic_secrets(write_key: str) -> list[str]:
    """What must never be logged for a write key: the key, and the base64 of ``key:`` and of ``key``.

    The base64 forms are given without ``=`` padding (so they match padded and unpadded echoes alike),
    in the standard and the URL-safe alphabets; :func:`register_secret` adds their escaped forms.
    """
    secrets = [write_key]
    for raw in (f"{write_key}:".encode(), write_key.encode()):
        secrets.append(base64.b64encode(raw).decode("ascii").rstrip("="))
        secrets.append(base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="))
    return secrets


class BasicAuth:
    """``Authorization: Basic base64("<writeKey>:")``."""

    oauth = False

    def __init__(self, write_key: str) -> None:
        self._value = basic_value(write_key)
        for secret in basic_secrets(write_key):
            register_secret(secret)

    def header(self) -> str:
        """The constant Basic header."""
        return self._value

    def invalidate(self) -> None:
        """Nothing to forget."""
