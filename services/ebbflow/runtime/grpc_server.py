"""One gRPC server kit for every service: health, reflection and error translation in one place."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ebbflow.runtime.errors import AlreadyRunningError, ConfigError, EbbflowError, NotFoundError, UnavailableError
from ebbflow.runtime.tls import ServerTls

log = logging.getLogger(__name__)

_STATUS_BY_ERROR: tuple[tuple[type[EbbflowError], grpc.StatusCode], ...] = (
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (AlreadyRunningError, grpc.StatusCode.ALREADY_EXISTS),
)


def status_for(error: BaseException) -> grpc.StatusCode:
    for kind, code in _STATUS_BY_ERROR:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps ebbflow errors to gRPC status codes; hides anything unexpected as INTERNAL (and logs it)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except EbbflowError as error:
                await context.abort(status_for(error), str(error))
            except (grpc.aio.AbortError, grpc.RpcError):
                raise
            except Exception:
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the service log")

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


class GrpcServer:
    """A grpc.aio server with health and reflection, bound to one address."""

    def __init__(self, service_names: Iterable[str], max_message_bytes: int = 64 * 1024 * 1024, share_port: bool = False) -> None:
        options = [
            # A second server on the same port must fail, not silently share it; only
            # router workers started together share theirs (the kernel spreads connections).
            ("grpc.so_reuseport", 1 if share_port else 0),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self.server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection([*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.port = 0

    def bind(self, host: str, port: int, tls: ServerTls | None = None) -> int:
        """Bind host:port (0 picks a free port), with TLS when given; raise AlreadyRunningError if it is taken."""
        try:
            address = f"{host}:{port}"
            bound = self.server.add_secure_port(address, tls.grpc_credentials()) if tls else self.server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise AlreadyRunningError(f"cannot listen on {host}:{port}: the port is in use (another ebbflow up?); pick another with --router-port")
        self.port = bound
        return bound

    async def start(self) -> None:
        await self.server.start()
        await self._set_serving(health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        await self._set_serving(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)

    async def _set_serving(self, status: int) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
