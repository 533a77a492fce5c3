"""API keys as every service handles them: sent as `authorization: Bearer <key>`, stored only as a SHA-256."""

from __future__ import annotations

import hashlib


def key_hash(key: str) -> str:
    """What the tenants bucket stores of an API key: its SHA-256, lowercase hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(header: str | None) -> str:
    """The key of an `authorization: Bearer <key>` header ("" for none or another scheme)."""
    scheme, _, value = (header or "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
