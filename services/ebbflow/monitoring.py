"""`ebbflow up --prometheus`: a real Prometheus scraping the whole stack, with deploy/prometheus's rules loaded.

The targets are discovered, not configured. Every REFRESH_S this module writes one file_sd file from what NATS
knows: the announcements in the KV bucket `services` (each service's /metrics address, runtime.discovery) and
the replica registry (each live replica's Triton metrics port). Prometheus watches the file, so a restarted
service on a new address or a replica started a moment ago is scraped without a reload. Service targets carry
job="ebbflow" and `service`; replicas job="triton" and `replica` (Triton's own series already carry `model`).
The rules in deploy/prometheus assume exactly these labels.

Prometheus runs as a child of `ebbflow up` on 127.0.0.1 and a free port, its data under <state-dir>/prometheus,
and stops with the stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ebbflow import REPO_ROOT
from ebbflow.runtime.errors import EbbflowError
from ebbflow.runtime.loops import wait_any
from ebbflow.runtime.process import ChildProcess, free_port, spawn
from ebbflow.v1 import discovery_pb2, registry_pb2

log = logging.getLogger(__name__)

RULES_DIR = REPO_ROOT / "deploy" / "prometheus"
SCRAPE_INTERVAL_S = 2.0
"""Scrape and rule-evaluation interval: short, so a few seconds of load already show on every panel."""
REFRESH_S = 2.0
"""How often the file_sd targets are rewritten from NATS (the services' heartbeat period)."""
READY_TIMEOUT_S = 30.0
TARGETS_FILE = "targets.json"
LIVE_STATES = (registry_pb2.REPLICA_STATE_STARTING, registry_pb2.REPLICA_STATE_READY, registry_pb2.REPLICA_STATE_DRAINING)


def scrape_targets(services: Iterable[discovery_pb2.ServiceInstance], replicas: Iterable[registry_pb2.ReplicaEntry]) -> list[dict[str, object]]:
    """file_sd groups: one per service instance and one per live replica, sorted so an unchanged fleet gives the
    same file (Prometheus then has nothing to reload)."""
    groups: list[dict[str, object]] = []
    for instance in services:
        if instance.metrics_address:
            groups.append({"targets": [instance.metrics_address], "labels": {"job": "ebbflow", "service": instance.service}})
    for entry in replicas:
        if entry.metrics_port and entry.state in LIVE_STATES:
            groups.append({"targets": [f"{entry.host or '127.0.0.1'}:{entry.metrics_port}"], "labels": {"job": "triton", "replica": entry.replica_id}})
    return sorted(groups, key=lambda g: (str(g["labels"]), str(g["targets"])))


def prometheus_config(targets_file: Path, rule_files: Iterable[Path], interval_s: float = SCRAPE_INTERVAL_S) -> str:
    """prometheus.yml (JSON is YAML): one scrape config over the file_sd file; job and labels come from it."""
    interval = f"{interval_s:g}s"
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": "ebbflow", "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}]},
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace path with text (Prometheus never reads half a file); False when it already says that."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return True


def find_prometheus() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise EbbflowError("--prometheus needs the prometheus binary (2.42+) on PATH: run scripts/install_prometheus.sh (make prometheus)")
    return found


@dataclass
class Prometheus:
    """One Prometheus child process and the file_sd file that feeds it."""

    directory: Path
    child: ChildProcess
    url: str

    @property
    def targets_file(self) -> Path:
        return self.directory / TARGETS_FILE

    @classmethod
    async def start(cls, state_dir: Path, host: str = "127.0.0.1", rules_dir: Path = RULES_DIR) -> Prometheus:
        binary = find_prometheus()
        directory = state_dir / "prometheus"
        (directory / "data").mkdir(parents=True, exist_ok=True)
        targets = directory / TARGETS_FILE
        write_if_changed(targets, "[]\n")
        rules = sorted(rules_dir.glob("*.rules.yaml"))
        (directory / "prometheus.yml").write_text(prometheus_config(targets, rules))
        port = free_port(host)
        argv = [
            binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=2d", "--web.enable-lifecycle",
        ]
        child = await spawn("prometheus", argv, state_dir / "logs" / "prometheus.log")
        prometheus = cls(directory, child, f"http://{host}:{port}")
        try:
            await prometheus._wait_ready()
        except BaseException:
            await child.stop(5.0)
            raise
        return prometheus

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await asyncio.to_thread(self._ready):
            if not self.child.running:
                raise EbbflowError(f"prometheus exited during start:\n{self.child.tail(10)}")
            if time.monotonic() > deadline:
                raise EbbflowError(f"prometheus not ready {READY_TIMEOUT_S:.0f} s after start; see {self.child.log_path}")
            await asyncio.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def follow(self, nats_url: str, stop: asyncio.Event) -> None:
        """Rewrite the targets from NATS every REFRESH_S until stop (NATS away: keep the last targets)."""
        from ebbflow.runtime.discovery import list_services
        from ebbflow.runtime.registry import connected

        while not stop.is_set():
            try:
                async with connected(nats_url, f"ebbflow-prometheus-{os.getpid()}") as (bus, view):
                    while not stop.is_set():
                        groups = scrape_targets(await list_services(bus), list(view.replicas.values()))
                        if write_if_changed(self.targets_file, json.dumps(groups, indent=1) + "\n"):
                            log.info("prometheus targets: %d", len(groups))
                        await wait_any(REFRESH_S, stop)
            except Exception as error:  # NATS away or restarting: try again shortly, the file keeps the last targets
                log.warning("refreshing prometheus targets failed: %s", error)
                await wait_any(REFRESH_S, stop)

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self.child.stop(timeout_s)
