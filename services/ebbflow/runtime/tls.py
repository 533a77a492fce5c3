"""TLS on a listening port, from certificate files the operator provides: gRPC, aiohttp and HAProxy alike.

`router.tls_cert_file` and `router.tls_key_file` (PEM) turn TLS on for the
router's client ports, gRPC and HTTP; a plaintext client is then refused.
With `router.tls_client_ca_file` as well, clients must present a certificate
signed by that CA (mutual TLS). Files are read once, at start; a missing or
unreadable one is a ConfigError naming it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from ebbflow.runtime.errors import ConfigError


@dataclass(frozen=True)
class ServerTls:
    cert_file: str
    key_file: str
    client_ca_file: str = ""
    """Set: mutual TLS, a client must present a certificate this CA signed."""

    def grpc_credentials(self) -> grpc.ServerCredentials:
        client_ca = _read(self.client_ca_file, "tls_client_ca_file") if self.client_ca_file else None
        pair = (_read(self.key_file, "tls_key_file"), _read(self.cert_file, "tls_cert_file"))
        return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file:
                context.load_verify_locations(self.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"router TLS files ({self.cert_file}, {self.key_file}): {error}") from None
        return context

    def haproxy_pem(self) -> bytes:
        """The certificate chain and its key in one file, as HAProxy's `crt` takes them."""
        cert = _read(self.cert_file, "tls_cert_file")
        return cert + (b"" if cert.endswith(b"\n") else b"\n") + _read(self.key_file, "tls_key_file")


def server_tls(cert_file: str, key_file: str, client_ca_file: str = "", read: bool = True) -> ServerTls | None:
    """The TLS of a port from its settings (None: plaintext); ConfigError for a half-set pair or (read) a missing
    file. The config loader checks the pairing only: the files need be only where the router runs."""
    if not cert_file and not key_file:
        if client_ca_file:
            raise ConfigError("router.tls_client_ca_file needs router.tls_cert_file and router.tls_key_file (the server's own certificate)")
        return None
    if not cert_file or not key_file:
        raise ConfigError("router.tls_cert_file and router.tls_key_file go together: set both (PEM files) or neither")
    tls = ServerTls(cert_file, key_file, client_ca_file)
    for path, name in ((cert_file, "tls_cert_file"), (key_file, "tls_key_file"), (client_ca_file, "tls_client_ca_file")):
        if path and read:
            _read(path, name)
    return tls


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"router.{name} {path}: {error.strerror}") from None
