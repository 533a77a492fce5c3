"""TLS on the router's client ports with certificates the operator provides (the test makes its own CA): gRPC and
HTTP, through the Python router and through the HAProxy front; a plaintext client is refused; with a client CA,
a client without a certificate it signed is refused (mutual TLS)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import tritonclient.grpc.aio as triton_aio
import trustme
from tritonclient.utils import InferenceServerException

from ebbflow.runtime.errors import ConfigError
from ebbflow.runtime.tls import server_tls
from tests.conftest import expected_output, llm_inputs
from tests.integration.conftest import RouterBed
from tests.integration.test_router_http import needs_haproxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PROMPT = "alpha beta"


class Certificates:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("client@example.com")
        self.ca_file, self.cert_file, self.key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.key_file))
        self.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
        client.private_key_pem.write_to_path(str(self.client_key))

    def client_context(self, with_certificate: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if with_certificate:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


async def grpc_infer(address: str, certificates: Certificates | None, client_cert: bool = False) -> str:
    options = {}
    if certificates is not None:
        options = {"ssl": True, "root_certificates": str(certificates.ca_file)}
        if client_cert:
            options.update(private_key=str(certificates.client_key), certificate_chain=str(certificates.client_cert))
    client = triton_aio.InferenceServerClient(address, **options)  # type: ignore[arg-type]
    try:
        result = await client.infer("llm", llm_inputs(PROMPT, 3), client_timeout=10)
        return result.as_numpy("text_output").reshape(-1)[0].decode()
    finally:
        await client.close()


async def http_generate(address: str, scheme: str, context: ssl.SSLContext | None) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{scheme}://{address}/v2/models/llm/generate", json={"text_input": PROMPT, "max_tokens": 3}, ssl=context) as r:
            assert r.status == 200, await r.text()
            return await r.json(content_type=None)


@pytest.mark.parametrize("front", [False, pytest.param(True, marks=needs_haproxy)], ids=["python", "front"])
async def test_tls_serves_tls_clients_and_refuses_plaintext(testbed: RouterBed, tmp_path: Path, front: bool) -> None:
    certificates = Certificates(tmp_path)
    await testbed.policy("llm")
    await testbed.replicas.start("llm")
    address = await testbed.router(front=front, tls_cert_file=str(certificates.cert_file), tls_key_file=str(certificates.key_file))
    await testbed.wait_routable("llm", 1)
    assert await grpc_infer(address, certificates) == expected_output(PROMPT, 3)
    answer = await http_generate(testbed.http_address, "https", certificates.client_context(False))
    assert answer["text_output"] == expected_output(PROMPT, 3)
    with pytest.raises(InferenceServerException):
        await grpc_infer(address, None)  # plaintext against a TLS port
    with pytest.raises(aiohttp.ClientError):
        await http_generate(testbed.http_address, "http", None)
    with pytest.raises(aiohttp.ClientError):  # a server the client does not trust
        await http_generate(testbed.http_address, "https", ssl.create_default_context())


@pytest.mark.parametrize("front", [False, pytest.param(True, marks=needs_haproxy)], ids=["python", "front"])
async def test_with_a_client_ca_only_clients_it_signed_are_served(testbed: RouterBed, tmp_path: Path, front: bool) -> None:
    certificates = Certificates(tmp_path)
    await testbed.policy("llm")
    await testbed.replicas.start("llm")
    settings = {"tls_cert_file": str(certificates.cert_file), "tls_key_file": str(certificates.key_file), "tls_client_ca_file": str(certificates.ca_file)}
    address = await testbed.router(front=front, **settings)
    await testbed.wait_routable("llm", 1)
    assert await grpc_infer(address, certificates, client_cert=True) == expected_output(PROMPT, 3)
    assert (await http_generate(testbed.http_address, "https", certificates.client_context(True)))["text_output"] == expected_output(PROMPT, 3)
    with pytest.raises(InferenceServerException):
        await grpc_infer(address, certificates, client_cert=False)
    with pytest.raises(aiohttp.ClientError):
        await http_generate(testbed.http_address, "https", certificates.client_context(False))


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    assert server_tls("", "") is None
    for args, message in ((("a.pem", ""), "go together"), (("", "", "ca.pem"), "needs router.tls_cert_file"), ((str(tmp_path / "none.pem"), "k"), "none.pem")):
        with pytest.raises(ConfigError, match=message):
            server_tls(*args)
