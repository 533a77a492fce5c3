"""The router: a Triton-protocol gRPC front that picks the least-loaded ready replica."""
