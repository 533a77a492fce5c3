"""Starting a real `tritonserver` from the nvidia-pytriton wheel, with its quirks handled.

- The Python-backend stub links libpython3.X: it must match the interpreter
  running ebbflow, so we assemble a backend folder with the matching stub and
  put LIBDIR and the wheel's bundled libraries on LD_LIBRARY_PATH.
- The stub finds packages through PATH: the venv's bin goes first, or another
  interpreter's numpy yields empty outputs with no error.
- tritonserver waits up to 30 s on shutdown for clients: pass --exit-timeout-secs.
- Python-backend stubs talk to their server through /dev/shm regions named
  from a prefix; two servers with the same prefix corrupt each other's
  messages ("Received unexpected response from Python backend stub"), so each
  replica gets its own prefix. A server that dies without unloading its
  models (SIGKILL, a crash) leaves those regions behind, and its stubs for a
  moment: the actuator kills the replica's process group and removes them.
- A replica that keeps dying must not leave one log file per attempt: each
  replica slot of a model has one log that keeps a bounded tail of earlier runs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import util
from pathlib import Path

import aiohttp
from google.protobuf import json_format, text_format
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue
from tritonclient.grpc import model_config_pb2

from ebbflow import REPO_ROOT
from ebbflow.placement import parse_slot
from ebbflow.runtime.errors import ConfigError, UnavailableError
from ebbflow.runtime.process import free_ports, venv_environment
from ebbflow.v1 import registry_pb2

SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path
    stub: Path
    libs: Path


def find_triton() -> TritonInstall:
    """Locate tritonserver and the Python backend inside the installed nvidia-pytriton wheel."""
    spec = util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise ConfigError("nvidia-pytriton is not installed: run `make install` (it ships the tritonserver binary)")
    package = Path(spec.origin).parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=package / "tritonserver" / "bin" / "tritonserver",
        python_backend=package / "tritonserver" / "backends" / "python",
        stub=package / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=package.parent / "nvidia_pytriton.libs",
    )
    for path in (install.binary, install.python_backend, install.stub):
        if not path.exists():
            raise ConfigError(f"tritonserver part missing at {path}: this Python ({version}) may not be supported by nvidia-pytriton")
    return install


def prepare_backend_dir(install: TritonInstall, state_dir: Path) -> Path:
    """A --backend-directory whose python backend carries the stub built for this interpreter."""
    backend_dir = state_dir / "triton-backends"
    python_dir = backend_dir / "python"
    stub_target = python_dir / "triton_python_backend_stub"
    if not stub_target.exists():
        python_dir.mkdir(parents=True, exist_ok=True)
        for item in install.python_backend.iterdir():
            if item.is_file():
                shutil.copy2(item, python_dir / item.name)
        shutil.copy2(install.stub, stub_target)
    return backend_dir


def default_model_repository() -> Path:
    return REPO_ROOT / "deploy" / "model-repository"


def read_model_configs(repository: Path) -> dict[str, model_config_pb2.ModelConfig]:
    """Every model's config.pbtxt in a Triton repository, parsed (name defaults to the folder's)."""
    configs: dict[str, model_config_pb2.ModelConfig] = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        try:
            config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        except text_format.ParseError as error:
            raise ConfigError(f"{path} is not a valid Triton model config: {error}") from None
        if not config.name:
            config.name = path.parent.name
        configs[config.name] = config
    return configs


async def publish_model_configs(models: KeyValue, repository: Path) -> None:
    """Put each repository model's config in the `models` bucket, so routers answer metadata at zero replicas.

    Models no longer in the repository leave the bucket: it is the list of models a policy may name."""
    configs = read_model_configs(repository)
    for name, config in configs.items():
        await models.put(name, config.SerializeToString())
    try:
        stale = [key for key in await models.keys() if key not in configs]
    except NoKeysError:
        stale = []
    for key in stale:
        await models.delete(key)


def new_replica_entry(
    model: str, speed_factor: float = 1.0, instances: int = 1, max_batch_size: int = 0, generation: int = 0
) -> registry_pb2.ReplicaEntry:
    """A registry entry for a replica about to start on this host, with fresh ports and id."""
    grpc_port, http_port, metrics_port = free_ports(3)
    return registry_pb2.ReplicaEntry(
        model=model,
        replica_id=uuid.uuid4().hex[:8],
        host="127.0.0.1",
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        instances=instances,
        max_batch_size=max_batch_size,
        applied_generation=generation,
        started_at_unix_s=time.time(),
        speed_factor=speed_factor,
    )


async def model_ready(session: aiohttp.ClientSession, entry: registry_pb2.ReplicaEntry) -> bool:
    """One probe of the replica's Triton model-readiness endpoint (False while it cannot answer)."""
    url = f"http://{entry.host}:{entry.http_port}/v2/models/{entry.model}/ready"
    try:
        async with session.get(url) as response:
            return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


@dataclass(frozen=True)
class TritonLaunch:
    """Everything needed to start one replica."""

    argv: list[str]
    env: dict[str, str]


def triton_launch(
    install: TritonInstall,
    backend_dir: Path,
    model_repository: Path,
    models: list[str],
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    exit_timeout_s: int,
    shm_prefix: str,
    extra_env: dict[str, str] | None = None,
) -> TritonLaunch:
    argv = [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_dir}",
        "--model-control-mode=explicit",
        *(f"--load-model={model}" for model in models),
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--metrics-interval-ms=1000",
        f"--exit-timeout-secs={exit_timeout_s}",
        "--log-verbose=0",
        "--strict-readiness=true",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
    ]
    env = venv_environment()
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [env.get("LD_LIBRARY_PATH", ""), str(install.libs)] if p)
    # The emulated model imports ebbflow.emulator: make the package importable for the stub.
    services_dir = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = ":".join(p for p in [services_dir, env.get("PYTHONPATH", "")] if p)
    env.update(extra_env or {})
    return TritonLaunch(argv=argv, env=env)


def replica_launch(
    install: TritonInstall,
    backend_dir: Path,
    repository: Path,
    entry: registry_pb2.ReplicaEntry,
    exit_timeout_s: int,
    time_scale: float,
    markers: dict[str, str] | None = None,
) -> TritonLaunch:
    """The tritonserver of one registry entry: its ports, its own shared-memory prefix, the emulator's time scale and speed,
    and `markers` in its environment (inherited by its stubs and their children)."""
    return triton_launch(
        install,
        backend_dir,
        repository,
        [entry.model],
        entry.grpc_port,
        entry.http_port,
        entry.metrics_port,
        exit_timeout_s,
        shm_prefix(entry.replica_id),
        {"EBBFLOW_TIME_SCALE": str(time_scale), "EBBFLOW_SPEED_FACTOR": str(entry.speed_factor), **gpu_environment(entry.gpu_slot), **(markers or {})},
    )


def gpu_environment(slot: str) -> dict[str, str]:
    """The replica sees only its own GPU ("node/gpuN" -> CUDA_VISIBLE_DEVICES=N); nothing without a slot."""

    gpu = parse_slot(slot)
    return {"CUDA_VISIBLE_DEVICES": str(gpu[1])} if gpu is not None else {}


def vertical_of(config: model_config_pb2.ModelConfig) -> tuple[int, int]:
    """(instances, max_batch_size) a model config gives a replica: the instance_group counts summed (1 if none)."""
    instances = sum(group.count or 1 for group in config.instance_group) or 1
    return instances, config.max_batch_size


def with_vertical(config: model_config_pb2.ModelConfig, instances: int, max_batch_size: int) -> model_config_pb2.ModelConfig:
    """The config with `instances` model instances (one group, the first group's kind) and `max_batch_size`."""
    changed = model_config_pb2.ModelConfig()
    changed.CopyFrom(config)
    kind = config.instance_group[0].kind if config.instance_group else model_config_pb2.ModelInstanceGroup.KIND_CPU
    del changed.instance_group[:]
    changed.instance_group.add(count=instances, kind=kind)
    changed.max_batch_size = max_batch_size
    return changed


async def reload_with(session: aiohttp.ClientSession, entry: registry_pb2.ReplicaEntry, config: model_config_pb2.ModelConfig) -> tuple[int, int]:
    """Reload the replica's model with a config override (Triton swaps instances without failing requests),
    then read the config back; returns the (instances, max_batch_size) Triton reports."""
    base = f"http://{entry.host}:{entry.http_port}"
    body = {"parameters": {"config": json_format.MessageToJson(config, preserving_proto_field_name=True)}}
    async with session.post(f"{base}/v2/repository/models/{entry.model}/load", json=body, timeout=aiohttp.ClientTimeout(total=120)) as response:
        if response.status != 200:
            raise UnavailableError(f"reloading {entry.model} on {entry.host}:{entry.http_port} failed ({response.status}): {await response.text()}")
    async with session.get(f"{base}/v2/models/{entry.model}/config", timeout=aiohttp.ClientTimeout(total=10)) as response:
        applied = json_format.Parse(await response.text(), model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
    return vertical_of(applied)


def shm_prefix(replica_id: str) -> str:
    """The shared-memory region prefix of one replica (its Python-backend stubs' regions start with it)."""
    return f"ebbflow_{replica_id}_"


def remove_shm_regions(prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink the shared-memory regions left by a replica that is gone; returns their names."""
    removed = []
    for path in shm_dir.glob(f"{prefix}*"):
        try:
            path.unlink()
            removed.append(path.name)
        except FileNotFoundError:
            pass
    return removed


def replica_log_path(logs_dir: Path, model: str, slot: int) -> Path:
    """The one log of a model's replica slot: every replica started in the slot writes here, one after another."""
    return logs_dir / f"triton-{model}-{slot}.log"


def start_replica_log(path: Path, keep_bytes: int, header: str) -> int:
    """Cut the slot's log to the last keep_bytes of earlier runs (whole lines), append `header`,
    and return the offset where the new run's output begins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "rb") as old:
            old.seek(0, 2)
            size = old.tell()
            old.seek(max(0, size - keep_bytes))
            kept = old.read()
        if size > keep_bytes:
            kept = kept[kept.find(b"\n") + 1 :]  # start at a whole line
    except FileNotFoundError:
        kept = b""
    with open(path, "wb") as log_file:
        log_file.write(kept)
        log_file.write(f"==== {header}\n".encode())
        return log_file.tell()


def log_tail(path: Path, offset: int, lines: int, max_line_chars: int = 400) -> tuple[str, ...]:
    """The last `lines` non-blank lines written to `path` since `offset` (one run's output), each cut to max_line_chars."""
    try:
        with open(path, "rb") as log_file:
            end = log_file.seek(0, 2)
            log_file.seek(max(offset, end - 64 * 1024))  # a long run's log: its end is enough
            text = log_file.read().decode(errors="replace")
    except OSError:
        return ()
    tail = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return tuple(line if len(line) <= max_line_chars else line[: max_line_chars - 3] + "..." for line in tail)


_ERROR_LINE = re.compile(r"^(E\d{4} |error: )|error", re.IGNORECASE)


def last_error(lines: tuple[str, ...]) -> str:
    """The last line of a log tail that reports an error (Triton's `E....` lines, `error: ...`), "" when none does."""
    return next((line.strip() for line in reversed(lines) if _ERROR_LINE.search(line)), "")
