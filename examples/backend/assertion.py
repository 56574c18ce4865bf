"""Verifying the broker's assertion: how a backend takes the project from session-broker.

The broker sends every bound call two headers: ``X-MCP-Project`` (plain) and ``X-MCP-Work-Session``, a
short-lived JWT it signed, whose ``project`` claim is the same project. A backend that trusts the broker
verifies the JWT (the broker's EdDSA public keys from its ``/.well-known/jwks.json``, or the shared
HS256 signing key) and uses the project only when both agree. Shared by both example servers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jwt  # PyJWT, a dependency of the mcp SDK (1.x and 2.x)

PROJECT_HEADER = "x-mcp-project"
ASSERTION_HEADER = "x-mcp-work-session"

log = logging.getLogger("example-backend.assertion")


class Verifier:
    """Verifies assertions with a shared HS256 key, or with the broker's JWKS (EdDSA)."""

    def __init__(self, key: bytes | None = None, jwks_url: str | None = None, audience: str = "mcp-backend") -> None:
        self.key = key
        self.jwks = jwt.PyJWKClient(jwks_url) if jwks_url else None
        self.audience = audience

    @property
    def configured(self) -> bool:
        return self.key is not None or self.jwks is not None

    def claims(self, headers: Mapping[str, str]) -> dict[str, Any] | None:
        """The verified claims of the request's assertion, or None (absent, forged, expired, other audience)."""
        token = headers.get(ASSERTION_HEADER)
        if token is None:
            return None
        options = {"require": ["exp", "iss", "aud"]}
        try:
            if self.jwks is not None:
                key = self.jwks.get_signing_key_from_jwt(token).key
                return jwt.decode(token, key, algorithms=["EdDSA"], audience=self.audience, options=options)
            if self.key is not None:
                return jwt.decode(token, self.key, algorithms=["HS256"], audience=self.audience, options=options)
        except jwt.PyJWTError as error:
            log.warning("assertion refused: %s", error)
        return None

    def project(self, headers: Mapping[str, str]) -> str | None:
        """The project the broker asserts, when X-MCP-Project says the same."""
        claims = self.claims(headers)
        if claims is None:
            return None
        project = claims.get("project")
        if project != headers.get(PROJECT_HEADER):
            log.warning("assertion project %r differs from the header", project)
            return None
        return project
