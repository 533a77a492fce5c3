"""Tenants at the router: API keys checked, models allowed, requests and tokens per minute limited. Pure: time is an argument.

With `router.require_api_key`, every inference request (gRPC ModelInfer and
each request of a ModelStreamInfer, HTTP infer, generate and
generate_stream, the OpenAI API) must carry `authorization: Bearer <key>`
(gRPC metadata or HTTP header). The key's SHA-256 finds its tenant in the
registry view (KV bucket `tenants`, written by the scheduler's
TenantService; the key itself is stored nowhere). A request is then refused:

- UNAUTHENTICATED (HTTP 401): no key, a key no tenant has, a revoked key;
- PERMISSION_DENIED (403): a model outside the tenant's `models`;
- RESOURCE_EXHAUSTED (429): over the tenant's requests or tokens per minute,
  with the seconds after which the same request would be admitted.

Limits are token buckets per router process: each holds a minute's worth
(`requests_per_minute`, `tokens_per_minute`) and refills at that rate, so a
tenant may burst up to its minute's budget and is then held to the rate. A
request takes from both buckets or from neither. Its tokens are its prompt's
tokens plus the output tokens it asks for (router.demand).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import grpc

from ebbflow.router.refusal import Refusal
from ebbflow.runtime.keys import bearer, key_hash
from ebbflow.v1 import tenant_pb2


class Denial(Refusal):
    """A tenant's request refused: the gRPC code and message, the metric's reason, and (over a limit) when to retry."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, tenant: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(code, message)
        self.reason = reason
        self.tenant = tenant
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """Whole seconds, as HTTP's Retry-After and the gRPC `retry-after` metadata give them."""
        return str(max(1, math.ceil(self.retry_after_s)))

    def http_headers(self) -> dict[str, str]:
        """Beside the HTTP status: `WWW-Authenticate: Bearer` for 401, `Retry-After` for 429."""
        headers = {"WWW-Authenticate": "Bearer"} if self.code == grpc.StatusCode.UNAUTHENTICATED else {}
        if self.retry_after_s:
            headers["Retry-After"] = self.retry_after
        return headers


@dataclass
class Bucket:
    """A token bucket holding `capacity`, refilled at capacity per minute."""

    capacity: float
    level: float
    at: float

    def wait(self, amount: float, now: float) -> float:
        """Seconds until `amount` is available (0: now); inf when it never fits."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.capacity / 60.0)
        self.at = now
        if amount <= self.level:
            return 0.0
        if amount > self.capacity:
            return math.inf
        return (amount - self.level) * 60.0 / self.capacity


@dataclass
class Gate:
    """The admission check of one router process."""

    required: bool
    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)

    def admit(
        self, header: str | None, model: str, tokens: Callable[[], int], tenants: Mapping[str, tenant_pb2.Tenant], now: float
    ) -> tenant_pb2.Tenant | None:
        """The request's tenant (None when keys are not required), or a Denial. `tokens` is asked only when the
        tenant has a token budget; `tenants` maps key hashes to tenants."""
        if not self.required:
            return None
        key = bearer(header)
        if not key:
            raise Denial(grpc.StatusCode.UNAUTHENTICATED, "an API key is required: send `authorization: Bearer <key>` (ebbflow tenant add)", "no_key")
        tenant = tenants.get(key_hash(key))
        if tenant is None:
            raise Denial(grpc.StatusCode.UNAUTHENTICATED, "the API key sent is not known here (ebbflow tenant list)", "bad_key")
        if tenant.revoked_unix_s:
            raise Denial(grpc.StatusCode.UNAUTHENTICATED, f"the API key of tenant '{tenant.name}' has been revoked", "revoked", tenant.name)
        if tenant.models and model not in tenant.models:
            raise Denial(
                grpc.StatusCode.PERMISSION_DENIED,
                f"tenant '{tenant.name}' may not call model '{model}'; its models: {', '.join(tenant.models)}", "model", tenant.name,
            )  # fmt: skip
        asked = tokens() if tenant.tokens_per_minute else 0
        requests = self._bucket(tenant.name, "requests", tenant.requests_per_minute, now)
        budget = self._bucket(tenant.name, "tokens", tenant.tokens_per_minute, now)
        wait_requests = requests.wait(1, now) if requests else 0.0
        wait_tokens = budget.wait(asked, now) if budget else 0.0
        if wait_tokens == math.inf:
            raise Denial(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request needs {asked} tokens (prompt plus max tokens), more than tenant '{tenant.name}' may use in a minute "
                f"({tenant.tokens_per_minute}); ask for fewer", "tokens", tenant.name, 60.0,
            )  # fmt: skip
        if wait_requests or wait_tokens:
            what = f"{tenant.requests_per_minute} requests" if wait_requests >= wait_tokens else f"{tenant.tokens_per_minute} tokens"
            wait = max(wait_requests, wait_tokens)
            raise Denial(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"tenant '{tenant.name}' is over its limit of {what} per minute; retry after {math.ceil(wait)} s",
                "rate" if wait_requests >= wait_tokens else "tokens", tenant.name, wait,
            )  # fmt: skip
        if requests:
            requests.level -= 1
        if budget:
            budget.level -= asked
        return tenant

    def _bucket(self, tenant: str, kind: str, per_minute: int, now: float) -> Bucket | None:
        if not per_minute:
            return None
        bucket = self.buckets.get((tenant, kind))
        if bucket is None or bucket.capacity != per_minute:  # new, or its limit changed: start full
            bucket = self.buckets[(tenant, kind)] = Bucket(float(per_minute), float(per_minute), now)
        return bucket
