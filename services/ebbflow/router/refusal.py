"""Why the router did not deliver a request, as the gRPC status the client gets."""

from __future__ import annotations

import grpc


class Refusal(Exception):
    """A request ends here with `code` and a message saying why (raised anywhere, answered by the handler)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
