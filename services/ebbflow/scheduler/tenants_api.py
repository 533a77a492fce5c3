"""The TenantService: tenants and their API keys in the `tenants` bucket, each call guarded by the admin token.

A key is made here, shown once in AddTenant's answer, and stored only as its
SHA-256 (router.tenants.key_hash), which is what routers look keys up by.
Revoking keeps the tenant listed with the time it was revoked; routers
refuse its key as soon as their view has the change (a KV watch: well under
a second).
"""

from __future__ import annotations

import re
import secrets
import time

import grpc
from google.protobuf.message import DecodeError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError

from ebbflow.runtime.bus import Bus
from ebbflow.runtime.keys import key_hash
from ebbflow.scheduler.api import require_admin
from ebbflow.v1 import tenant_pb2, tenant_pb2_grpc

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
KEY_PREFIX = "ebf_"
"""API keys start with this (so a leaked one is recognisable); 32 random bytes follow, URL-safe base64."""


class TenantApi(tenant_pb2_grpc.TenantServiceServicer):
    def __init__(self, bus: Bus, admin_token: str = "") -> None:
        self.bus = bus
        self.admin_token = admin_token

    async def AddTenant(self, request: tenant_pb2.AddTenantRequest, context: grpc.aio.ServicerContext) -> tenant_pb2.AddTenantResponse:
        await require_admin(self.admin_token, context, "managing tenants")
        asked = request.tenant
        if not NAME.fullmatch(asked.name):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"tenant name {asked.name[:80]!r} must be 1-63 letters, digits, '-' or '_', starting with a letter or digit")
        if any(not model.strip() for model in asked.models):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tenant models must be model names (an empty list allows every model)")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        tenant = tenant_pb2.Tenant(
            name=asked.name, key_sha256=key_hash(key), models=sorted(set(m.strip() for m in asked.models)),
            requests_per_minute=asked.requests_per_minute, tokens_per_minute=asked.tokens_per_minute, priority=asked.priority,
            created_unix_s=time.time(),
        )  # fmt: skip
        try:
            await self.bus.tenants.create(asked.name, tenant.SerializeToString())
        except KeyWrongLastSequenceError:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"tenant '{asked.name}' exists (revoked tenants stay listed); pick another name")
        return tenant_pb2.AddTenantResponse(tenant=tenant, api_key=key)

    async def ListTenants(self, request: tenant_pb2.ListTenantsRequest, context: grpc.aio.ServicerContext) -> tenant_pb2.ListTenantsResponse:
        await require_admin(self.admin_token, context, "listing tenants")
        try:
            names = sorted(await self.bus.tenants.keys())
        except NoKeysError:
            names = []
        tenants = []
        for name in names:
            try:
                tenants.append(tenant_pb2.Tenant.FromString((await self.bus.tenants.get(name)).value or b""))
            except (KeyNotFoundError, DecodeError):
                continue
        return tenant_pb2.ListTenantsResponse(tenants=tenants)

    async def RevokeTenant(self, request: tenant_pb2.RevokeTenantRequest, context: grpc.aio.ServicerContext) -> tenant_pb2.RevokeTenantResponse:
        await require_admin(self.admin_token, context, "revoking tenants")
        try:
            entry = await self.bus.tenants.get(request.name)
        except KeyNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no tenant '{request.name[:80]}' (ebbflow tenant list)")
        tenant = tenant_pb2.Tenant.FromString(entry.value or b"")
        if not tenant.revoked_unix_s:
            tenant.revoked_unix_s = time.time()
            try:
                await self.bus.tenants.update(request.name, tenant.SerializeToString(), last=entry.revision)
            except KeyWrongLastSequenceError:
                await context.abort(grpc.StatusCode.ABORTED, f"tenant '{request.name}' changed while this call read it; revoke it again")
        return tenant_pb2.RevokeTenantResponse(tenant=tenant)
