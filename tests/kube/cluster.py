"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The binaries are the ones `make kube` builds from Debian's source (scripts/build-kube.sh) into
~/.cache/ebbflow/kubernetes-1.20.2/bin, and Debian's etcd. Everything listens on 127.0.0.1 on free ports and keeps
its files under one directory: etcd's data, the API server's self-signed serving certificate (its file carries the
CA that signed it, which the clients trust), a token file with one admin token (group system:masters), and the
ServiceAccount signing key. Authorization is RBAC, as in a real cluster. The controller-manager runs every
controller but `nodelifecycle`: the loopback kubelet does not heartbeat, and that controller would mark its nodes
unreachable after ~40 s and evict their pods.

Each process leads its own process group, dies with the test process (PR_SET_PDEATHSIG), and carries the
replica-owner marker naming the cluster's directory, so the session's leftover check (tests/conftest.py) finds
any that a failed teardown left.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from ebbflow.actuator.leftovers import OWNER_ENV
from ebbflow.kube.client import KubeClient, KubeCredentials, KubeError
from ebbflow.runtime.errors import UnavailableError
from ebbflow.runtime.process import ChildProcess, free_ports, spawn

KUBE_VERSION = "1.20.2"


def cache_dir() -> Path:
    """Where scripts/build-kube.sh puts the binaries (same rule as the script)."""
    root = os.environ.get("EBBFLOW_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ebbflow")
    return Path(root) / f"kubernetes-{KUBE_VERSION}" / "bin"


@dataclass(frozen=True)
class KubeBinaries:
    apiserver: Path
    controller_manager: Path
    scheduler: Path
    etcd: Path


def find_binaries() -> KubeBinaries | None:
    """The built control plane and etcd, or None when `make kube` has not run on this machine."""
    bin_dir = cache_dir()
    etcd = next((Path(d) / "etcd" for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"] if (Path(d) / "etcd").is_file()), None)
    found = KubeBinaries(bin_dir / "kube-apiserver", bin_dir / "kube-controller-manager", bin_dir / "kube-scheduler", etcd or Path("etcd"))
    if etcd is None or not (bin_dir / ".complete").exists():
        return None
    return found


class KubeCluster:
    """Start with `start()`, use `credentials` (the admin token) or `client()`, end with `stop()`."""

    def __init__(self, root: Path, binaries: KubeBinaries, users: tuple[str, ...] = ()) -> None:
        self.root = root
        self.binaries = binaries
        self.tokens = {user: secrets.token_hex(16) for user in users}
        """Other users' bearer tokens, by user name: no groups, so they may do only what RBAC grants them."""
        self.children: list[ChildProcess] = []
        self.credentials: KubeCredentials | None = None
        self.ready_s = 0.0
        """Seconds from starting etcd to a control plane that schedules (leases held, default ServiceAccount made)."""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[OWNER_ENV] = str(self.root.resolve())
        return env

    async def _spawn(self, name: str, argv: list[str]) -> ChildProcess:
        child = await spawn(name, argv, self.root / "logs" / f"{name}.log", self._env(), own_group=True)
        self.children.append(child)
        return child

    def _check_running(self) -> None:
        for child in self.children:
            if not child.running:
                raise UnavailableError(f"{child.name} exited with code {child.process.returncode}:\n{child.tail(30)}")

    async def start(self, timeout_s: float = 90.0) -> KubeCredentials:
        started = time.monotonic()
        deadline = started + timeout_s
        self.root.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = free_ports(3)
        token = secrets.token_hex(16)
        lines = [f'{token},admin,admin,"system:masters"'] + [f"{t},{user},{user}" for user, t in self.tokens.items()]
        (self.root / "tokens.csv").write_text("\n".join(lines) + "\n")
        key, pub = self.root / "sa.key", self.root / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        await self._spawn("etcd", [
            str(self.binaries.etcd), "--name=default", f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}", f"--initial-cluster=default={peer_url}",
            "--log-level=warn",
        ])  # fmt: skip
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            await self._until(deadline, lambda: _get_ok(session, f"{etcd_url}/health"), "etcd to be healthy")

        certs = self.root / "certs"
        await self._spawn("kube-apiserver", [
            str(self.binaries.apiserver), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}", "--insecure-port=0",
            f"--cert-dir={certs}", f"--token-auth-file={self.root / 'tokens.csv'}", "--authorization-mode=RBAC",
            f"--service-account-key-file={pub}", f"--service-account-signing-key-file={key}",
            "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/24",
            "--profiling=false", "--logtostderr=true", "--v=0",
        ])  # fmt: skip
        cert = certs / "apiserver.crt"
        # The certificate is written before its key: with the key there, the certificate is whole.
        await self._until(deadline, lambda: _exists(certs / "apiserver.key"), "the API server's serving certificate")
        credentials = KubeCredentials(f"https://127.0.0.1:{api_port}", token, cert.read_text())
        async with KubeClient(credentials, timeout_s=2.0) as client:
            await self._until(deadline, lambda: _api_ok(client, "/readyz"), "the API server to be ready")

        kubeconfig = self.root / "admin.kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: loopback\n  cluster:\n    server: {credentials.server}\n    certificate-authority: {cert}\n"
            f"users:\n- name: admin\n  user:\n    token: {token}\n"
            "contexts:\n- name: loopback\n  context:\n    cluster: loopback\n    user: admin\n"
            "current-context: loopback\n"
        )
        common = [f"--kubeconfig={kubeconfig}", "--leader-elect=true", "--leader-elect-resource-lock=leases", "--port=0", "--secure-port=0",
                  "--logtostderr=true", "--v=0"]  # fmt: skip
        await self._spawn("kube-controller-manager", [
            str(self.binaries.controller_manager), *common, "--controllers=*,-nodelifecycle",
            f"--service-account-private-key-file={key}", f"--root-ca-file={cert}", "--use-service-account-credentials=false",
        ])  # fmt: skip
        await self._spawn("kube-scheduler", [str(self.binaries.scheduler), *common])
        async with KubeClient(credentials, timeout_s=2.0) as client:
            for lease in ("kube-controller-manager", "kube-scheduler"):
                path = f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}"
                await self._until(deadline, lambda: _api_ok(client, path), f"{lease} to hold its lease")
            await self._until(deadline, lambda: _api_ok(client, "/api/v1/namespaces/default/serviceaccounts/default"), "the default ServiceAccount")
        self.credentials = credentials
        self.ready_s = time.monotonic() - started
        return credentials

    def client(self, timeout_s: float = 10.0, user: str = "") -> KubeClient:
        """A client as the admin, or as one of `users`."""
        assert self.credentials is not None, "start the cluster first"
        credentials = replace(self.credentials, token=self.tokens[user]) if user else self.credentials
        return KubeClient(credentials, timeout_s)

    async def _until(self, deadline: float, probe, what: str) -> None:  # type: ignore[no-untyped-def]
        while not await probe():
            self._check_running()
            if time.monotonic() > deadline:
                raise UnavailableError(f"timed out waiting for {what}; logs in {self.root / 'logs'}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop in reverse order of start; every process group is killed, whatever a process left."""
        for child in reversed(self.children):
            await child.stop(10.0)
            child.kill_group()
        self.children.clear()


async def _get_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as response:
            return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


async def _exists(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def _api_ok(client: KubeClient, path: str) -> bool:
    try:
        await (client.get_text(path) if path == "/readyz" else client.get(path))
        return True
    except (KubeError, UnavailableError):
        return False
