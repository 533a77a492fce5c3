"""A small Kubernetes API client over aiohttp: JSON requests, typed errors, and watches.

ebbflow needs a handful of calls (read and write a Deployment's scale
subresource, list and watch pods, patch a pod's status), so it speaks the
REST API directly rather than through a generated client of every resource.
Errors come back as the API server's `Status`; they become ours here:
409 is `ConflictError` (optimistic concurrency: re-read and retry, never
overwrite), 404 `NotFoundError`, 401/403 `ForbiddenError` naming the verb
the server refused, anything else or no answer `UnavailableError`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp

from ebbflow.runtime.errors import EbbflowError, NotFoundError, UnavailableError

JsonObject = dict[str, Any]


class KubeError(EbbflowError):
    """The API server refused a request; `status` is its HTTP status, `reason` the Status reason."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ConflictError(KubeError):
    """409: the object changed since it was read (stale resourceVersion), or it already exists."""


class ForbiddenError(KubeError):
    """401/403: the credentials may not do this."""


class KubeNotFoundError(KubeError, NotFoundError):
    """404: no such object."""


class WatchExpiredError(KubeError):
    """410 Gone on a watch: the resourceVersion is too old; list again and watch from the list's."""


@dataclass(frozen=True)
class KubeCredentials:
    """Where the API server is and how to reach it."""

    server: str
    """Base URL, e.g. https://127.0.0.1:6443."""
    token: str
    """Bearer token."""
    ca_pem: str = ""
    """PEM of the CA that signed the server's certificate (empty: the system's CAs)."""


def _ssl_context(credentials: KubeCredentials) -> ssl.SSLContext | None:
    if not credentials.server.startswith("https://"):
        return None
    context = ssl.create_default_context(cadata=credentials.ca_pem or None)
    return context


class KubeClient:
    """JSON over one keep-alive session; every method raises a `KubeError` (or `UnavailableError`) on failure."""

    def __init__(self, credentials: KubeCredentials, timeout_s: float = 10.0) -> None:
        self.credentials = credentials
        self.timeout_s = timeout_s
        self.requests = 0
        """API requests sent (watches included): what a caller's work costs the API server."""
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {credentials.token}", "Accept": "application/json"},
            connector=aiohttp.TCPConnector(ssl=_ssl_context(credentials) or False),
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def request(
        self, method: str, path: str, body: JsonObject | None = None, content_type: str = "application/json", params: dict[str, str] | None = None
    ) -> JsonObject:
        """One call; the decoded JSON answer."""
        text = await self._call(method, path, body, content_type, params)
        return json.loads(text) if text else {}

    async def get_text(self, path: str) -> str:
        """A GET of a plain-text endpoint (`/readyz`, `/healthz`)."""
        return await self._call("GET", path, None, "", None)

    async def _call(self, method: str, path: str, body: JsonObject | None, content_type: str, params: dict[str, str] | None) -> str:
        self.requests += 1
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        url = self.credentials.server + path
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, params=params, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise _error(method, path, response.status, text)
                return text
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise UnavailableError(f"the Kubernetes API server at {self.credentials.server} did not answer {method} {path}: {error!r}") from None

    async def get(self, path: str, params: dict[str, str] | None = None) -> JsonObject:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: JsonObject) -> JsonObject:
        """PUT: with `metadata.resourceVersion` set, a `ConflictError` if the object changed since."""
        return await self.request("PUT", path, body)

    async def merge_patch(self, path: str, patch: JsonObject) -> JsonObject:
        return await self.request("PATCH", path, patch, "application/merge-patch+json")

    async def strategic_patch(self, path: str, patch: JsonObject) -> JsonObject:
        """A strategic merge patch (lists with a merge key, such as pod conditions, merge by that key)."""
        return await self.request("PATCH", path, patch, "application/strategic-merge-patch+json")

    async def delete(self, path: str, body: JsonObject | None = None) -> JsonObject:
        return await self.request("DELETE", path, body)

    async def watch(self, path: str, resource_version: str, params: dict[str, str] | None = None) -> AsyncIterator[tuple[str, JsonObject]]:
        """(type, object) events after `resource_version` until the server ends the watch (then the caller watches
        again from the last object's resourceVersion). `WatchExpiredError` when that version is too old."""
        self.requests += 1
        query = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true", **(params or {})}
        url = self.credentials.server + path
        try:
            async with self._session.get(url, params=query, timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)) as response:
                if response.status >= 400:
                    raise _error("WATCH", path, response.status, await response.text())
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object", {})
                        raise _error("WATCH", path, int(status.get("code") or 500), json.dumps(status))
                    yield event["type"], event["object"]
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise UnavailableError(f"the watch of {path} on {self.credentials.server} broke: {error!r}") from None


def _error(method: str, path: str, status: int, text: str) -> KubeError:
    try:
        body = json.loads(text)
        message, reason = body.get("message", text), body.get("reason", "")
    except ValueError:
        message, reason = text.strip(), ""
    what = f"{method} {path}: {status} {reason or ''}".rstrip() + f": {message}"
    if status == 409:
        return ConflictError(what + " (re-read the object and retry)", status, reason)
    if status in (401, 403):
        return ForbiddenError(what + " (grant the verb in the ServiceAccount's Role, or use other credentials)", status, reason)
    if status == 404:
        return KubeNotFoundError(what, status, reason)
    if status == 410:
        return WatchExpiredError(what + " (list again and watch from the list's resourceVersion)", status, reason)
    return KubeError(what, status, reason)
