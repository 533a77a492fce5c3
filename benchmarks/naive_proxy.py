"""The baseline the router is measured against: a naive Python gRPC pass-through proxy.

grpcio aio, raw bytes, one generic handler that forwards every
GRPCInferenceService method to one upstream over one channel. No routing, no
metrics, no registry: what "just put a Python proxy in front" costs.

    python benchmarks/naive_proxy.py --listen 127.0.0.1:9000 --upstream 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio

import grpc


class Forward(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await self.channel.unary_unary(method)(request, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")

        return grpc.unary_unary_rpc_method_handler(unary)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    channel = grpc.aio.insecure_channel(args.upstream)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Forward(channel),))
    server.add_insecure_port(args.listen)
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
