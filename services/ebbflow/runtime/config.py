"""One validated configuration, built once at the edge (YAML file + environment) and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import jinja2.sandbox
import yaml

from ebbflow.placement import parse_node
from ebbflow.policy import ModelPolicy, policy_patch
from ebbflow.runtime.errors import ConfigError
from ebbflow.runtime.tls import server_tls
from ebbflow.runtime.typed import typed_values


DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message.role }}: {{ message.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
"""Messages → prompt when a model's mapping gives no template: one `role: content` line each, then `assistant:`."""


@dataclass(frozen=True)
class OpenAIModel:
    """How one model of the OpenAI-compatible API maps onto Triton LLM models (router.openai_http, docs/architecture.md)."""

    name: str
    """The name OpenAI clients pass as `model` (and `/v1/models` lists)."""
    model: str
    """The Triton model that answers requests without `stream` (Triton's generate endpoint)."""
    stream_model: str = ""
    """The Triton model that answers `stream: true` (generate_stream; a decoupled model streams token by token); "" = `model`."""
    prompt_input: str = "text_input"
    """The model's input that takes the prompt (BYTES)."""
    max_tokens_input: str = "max_tokens"
    """The model's input that takes the number of tokens to generate."""
    output: str = "text_output"
    """The model's output that holds the generated text (each streamed response's piece of it)."""
    stream_separator: str = ""
    """Put between streamed pieces, so the pieces join into the unary answer's text (" " for models that stream bare words)."""
    chat_template: str = DEFAULT_CHAT_TEMPLATE
    """Jinja2 template (as Hugging Face chat templates are written) turning `messages` into the prompt."""
    default_max_tokens: int = 16
    """Tokens generated when a request names no max_tokens (OpenAI's own default for completions)."""

    @property
    def streaming_model(self) -> str:
        return self.stream_model or self.model


DEFAULT_OPENAI_MODELS = (OpenAIModel(name="llm", model="llm", stream_model="llm_stream", stream_separator=" "),)
"""The emulated LLM as OpenAI model `llm`: unary `llm` answers, decoupled `llm_stream` streams (one word per token)."""


@dataclass(frozen=True)
class RouterConfig:
    port: int = 8001
    """TCP port of the Triton-protocol front (0 picks a free one)."""
    http_port: int = 8000
    """TCP port of the KServe v2 HTTP front (Triton's REST API, generate endpoints included); 0 picks a free one, -1 serves no HTTP."""
    host: str = "127.0.0.1"
    """Address the router listens on."""
    telemetry_interval_s: float = 1.0
    """How often arrivals, in-flight and latency are published, seconds (0.1-10)."""
    workers: int = 1
    """Router processes sharing the port (SO_REUSEPORT); 1 serves from the control-plane process itself."""
    hold_timeout_s: float = 60.0
    """Longest a request waits for a ready replica (scale from zero) before DEADLINE_EXCEEDED, seconds."""
    hold_max_requests: int = 1000
    """Requests held per model while no replica is ready; more get RESOURCE_EXHAUSTED."""
    hold_max_bytes: int = 256 * 1024 * 1024
    """Bytes of requests held per model while no replica is ready; more get RESOURCE_EXHAUSTED."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest request or response the router accepts, bytes (larger: RESOURCE_EXHAUSTED)."""
    max_retries: int = 2
    """Unary retries on another replica after a failure before any response (0 disables)."""
    retry_buffer_bytes: int = 256 * 1024 * 1024
    """Request bytes kept in memory for retries, over all requests in flight; a request beyond it is not retried."""
    eject_after_failures: int = 3
    """Consecutive connection-level failures that eject a replica from routing."""
    eject_s: float = 10.0
    """How long an ejected replica gets no requests, seconds."""
    tracing: bool = False
    """OpenTelemetry span per request through the process's tracer provider, trace context forwarded."""
    front: str = "auto"
    """What listens on the port: `haproxy` (HAProxy forwards ModelInfer of models with ready replicas itself,
    everything else to the Python router behind it; router.haproxy), `grpc` (the Python router alone), or
    `auto` (haproxy when a `haproxy` binary is installed and `tracing` is off, else grpc)."""
    drain_timeout_s: float = 10.0
    """Longest a stopping router lets calls in flight finish (HAProxy's soft stop, the gRPC server's grace), seconds (0-300)."""
    grpc_listen: str = "127.0.0.1:0"
    """host:port of this service's own gRPC API (health, reflection, status, its APIs) when it runs as its own process; port 0 picks one."""
    metrics_listen: str = "127.0.0.1:0"
    """host:port of this service's Prometheus /metrics when it runs as its own process; port 0 picks one."""
    tls_cert_file: str = ""
    """PEM certificate chain of the router's client ports (gRPC and HTTP, the HAProxy front's too): set with
    tls_key_file, those ports speak TLS only (runtime.tls)."""
    tls_key_file: str = ""
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: str = ""
    """PEM CA: clients must present a certificate it signed (mutual TLS); needs tls_cert_file."""
    require_api_key: bool = False
    """Every inference request must carry a tenant's API key (`authorization: Bearer <key>`, `ebbflow tenant add`); the
    tenant's models and limits are enforced (router.tenants). Off: anyone who reaches the router may call any model.
    On, the HAProxy front forwards every request to the Python router, which checks it."""
    openai: tuple[OpenAIModel, ...] = DEFAULT_OPENAI_MODELS
    """The OpenAI-compatible API's models (`/v1/...` on the HTTP port), in YAML a mapping of name → OpenAIModel
    settings under `router.openai`; empty serves none."""


@dataclass(frozen=True)
class CollectorConfig:
    interval_s: float = 1.0
    """Scrape and publish interval, seconds (0.1-10)."""
    scrape_timeout_s: float = 0.8
    """Timeout of one /metrics scrape, seconds; must be below interval_s."""
    stale_after_s: float = 3.0
    """Data older than this is stale (never read as zero), seconds."""
    windows_s: tuple[float, ...] = (6.0, 60.0)
    """Trailing windows each snapshot also reports (Knative's panic and stable windows), seconds."""
    history_fine_s: float = 3600.0
    """How long history keeps one row per interval, seconds."""
    history_coarse_step_s: float = 60.0
    """Step of the long-term history rows, seconds."""
    history_keep_s: float = 7 * 86400.0
    """How long the long-term history is kept (in memory and in JetStream), seconds."""
    history_flush_s: float = 10.0
    """How often new history rows are persisted to JetStream, seconds."""
    grpc_listen: str = "127.0.0.1:0"
    """host:port of this service's own gRPC API (health, reflection, status, its APIs) when it runs as its own process; port 0 picks one."""
    metrics_listen: str = "127.0.0.1:0"
    """host:port of this service's Prometheus /metrics when it runs as its own process; port 0 picks one."""


@dataclass(frozen=True)
class ForecasterConfig:
    resolutions_s: tuple[float, ...] = (10.0, 60.0, 600.0)
    """Bin widths of the forecast series, seconds; the first is the one published on NATS every bin."""
    horizon_steps: int = 12
    """Forecast horizon, in bins of each resolution (12 x 10 s = 2 min ... 12 x 10 min = 2 h)."""
    daily_season: bool = True
    """Model a daily season at resolutions where a day is at most 288 bins (once 3 days are known)."""
    refit_every_steps: int = 30
    """Refit each model's parameters every this many bins."""
    selection_window_steps: int = 60
    """Scored targets the model choice looks back over."""
    max_history_steps: int = 2000
    """Bins of history each resolution keeps (and refills from the collector at start)."""
    grpc_listen: str = "127.0.0.1:0"
    """host:port of this service's own gRPC API (health, reflection, status, its APIs) when it runs as its own process; port 0 picks one."""
    metrics_listen: str = "127.0.0.1:0"
    """host:port of this service's Prometheus /metrics when it runs as its own process; port 0 picks one."""


@dataclass(frozen=True)
class SchedulerConfig:
    interval_s: float = 1.0
    """Decision tick, seconds (0.1-60)."""
    stale_after_s: float = 3.0
    """A load snapshot older than this is stale and the scheduler holds, seconds."""
    react_to_snapshots: bool = True
    """Decide on a model as soon as its load snapshot arrives, or the routers push a sharp rise of its in-flight (else only every interval_s)."""
    router_push: bool = True
    """Panic also reads the in-flight each router worker pushes once a second, ahead of the collector's snapshot (Knative's push)."""
    min_forecast_observations: int = 30
    """A forecast based on fewer observed bins is not acted on (its calibration is not established yet)."""
    load_window_s: float = 30.0
    """The rule reads in-flight and arrival rate averaged over this many seconds of collector snapshots (the
    simulator's window; one-second snapshots made the scale-down window keep their noisy peaks), 1-300."""
    burst_window_s: float = 6.0
    """Panic reads in-flight averaged over this many seconds of the routers' pushes (Knative's panic window), 1-60."""
    lease_s: float = 5.0
    """Leadership lease (several schedulers on one NATS, one decides): a standby takes over once the leader has
    not renewed for this long, and the leader stops deciding lease_s - lease_renew_s after its last renewal,
    seconds (>= 2 x lease_renew_s). A lone scheduler leads from its first look."""
    lease_renew_s: float = 1.0
    """How often the leader renews its lease and a standby looks at it, seconds (0.1-10)."""
    admin_token: str = ""
    """When set, changing policies (SetPolicy, DeletePolicy, ImportHpa that stores) needs gRPC metadata
    `authorization: Bearer <token>` (the CLI sends $EBBFLOW_ADMIN_TOKEN); reads stay open. Prefer the
    environment (EBBFLOW_SCHEDULER__ADMIN_TOKEN) to the config file for it."""
    grpc_listen: str = "127.0.0.1:0"
    """host:port of this service's own gRPC API (health, reflection, status, its APIs) when it runs as its own process; port 0 picks one."""
    metrics_listen: str = "127.0.0.1:0"
    """host:port of this service's Prometheus /metrics when it runs as its own process; port 0 picks one."""


@dataclass(frozen=True)
class ActuatorConfig:
    model_repository: str = ""
    """Triton model repository; empty means the repository's deploy/model-repository."""
    time_scale: float = 1.0
    """Emulated seconds are multiplied by this (tests and demos run faster), (0, 10]."""
    reconcile_interval_s: float = 1.0
    """Level-triggered reconcile tick, seconds."""
    ready_timeout_s: float = 300.0
    """A replica not ready by then is failed and replaced, seconds."""
    drain_propagation_s: float = 1.0
    """Wait after marking a replica draining when no router is known to acknowledge it, seconds."""
    drain_timeout_s: float = 30.0
    """Longest wait for every router to acknowledge a drain with nothing left in flight there, seconds."""
    exit_timeout_s: int = 10
    """Drain bound: tritonserver --exit-timeout-secs lets in-flight requests finish, then SIGKILL, seconds."""
    crash_backoff_initial_s: float = 10.0
    """A model's replicas that keep dying are restarted after this, doubling per failure (the first is replaced at once), seconds (> 0)."""
    crash_backoff_max_s: float = 300.0
    """Longest wait between restarts of a crash-looping model, seconds (>= crash_backoff_initial_s)."""
    crash_backoff_reset_after_s: float = 600.0
    """A replica ready this long clears its model's failures (the back-off starts over), seconds (> 0)."""
    replica_log_keep_bytes: int = 256 * 1024
    """Each replica slot's log (logs/triton-<model>-<slot>.log) keeps at most this much of earlier runs when a replica starts in it, bytes (>= 4096)."""
    grpc_listen: str = "127.0.0.1:0"
    """host:port of this service's own gRPC API (health, reflection, status, its APIs) when it runs as its own process; port 0 picks one."""
    metrics_listen: str = "127.0.0.1:0"
    """host:port of this service's Prometheus /metrics when it runs as its own process; port 0 picks one."""


@dataclass(frozen=True)
class NatsConfig:
    url: str = ""
    """NATS server of `ebbflow serve` (e.g. nats://10.0.0.5:4222); empty: the one `ebbflow up` runs, or --nats."""
    credentials: str = ""
    """A NATS credentials (.creds) file the services connect with; empty: none."""


@dataclass(frozen=True)
class PlacementConfig:
    nodes: tuple[str, ...] = ()
    """GPU inventory, one `name:GPUSxMEMORY_GB` per node (e.g. gpu-a:4x80); empty: no GPU slots (CPU hosts)."""
    gpu_budget: float = 0.0
    """Fleet budget of GPUs; when demand exceeds it, lower-priority models give way (0: every GPU of the inventory, or none without one)."""
    max_moves_per_hour: int = 6
    """Running replicas moved to another GPU per hour to free GPUs (a move is a cold start), at most (0: never)."""


@dataclass(frozen=True)
class Config:
    router: RouterConfig = field(default_factory=RouterConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    forecaster: ForecasterConfig = field(default_factory=ForecasterConfig)
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    models: tuple[ModelPolicy, ...] = (ModelPolicy(model="llm"), ModelPolicy(model="llm_stream", min_replicas=0, max_replicas=2))


def _section(cls: type, raw: Mapping[str, Any] | None, where: str) -> Any:
    return cls(**typed_values(cls, raw, where))


def openai_models(raw: Any) -> tuple[OpenAIModel, ...]:
    """`router.openai` (name → settings) as OpenAIModel mappings, each template compiled once to name its errors."""
    if not isinstance(raw, Mapping):
        raise ConfigError("router.openai must map an OpenAI model name to its settings (model, stream_model, ...)")
    models = []
    for name, settings in raw.items():
        where = f"router.openai.{name}"
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where} must be a mapping of settings (at least `model`)")
        values = typed_values(OpenAIModel, {**settings, "name": str(name)}, where)
        if not values.get("model"):
            raise ConfigError(f"{where}.model is required: the Triton model that answers it")
        model = OpenAIModel(**values)
        if model.default_max_tokens < 1:
            raise ConfigError(f"{where}.default_max_tokens must be >= 1, got {model.default_max_tokens}")
        try:
            jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(model.chat_template)
        except jinja2.TemplateError as error:
            raise ConfigError(f"{where}.chat_template is not a valid Jinja2 template: {error}") from None
        models.append(model)
    return tuple(models)


def router_config(raw: Mapping[str, Any] | None, where: str = "router") -> RouterConfig:
    """The router section: its flat settings, and the OpenAI API's models under `openai`."""
    raw = dict(raw or {})
    mapping = raw.pop("openai", None)
    config = _section(RouterConfig, raw, where)
    if mapping is None:
        return config
    if isinstance(mapping, (list, tuple)) and all(isinstance(m, Mapping) and "name" in m for m in mapping):  # as asdict() writes it (a worker's)
        mapping = {m["name"]: {k: v for k, v in m.items() if k != "name"} for m in mapping}
    return replace(config, openai=openai_models(mapping))


def _check_ranges(config: Config) -> None:
    c = config.collector
    if not 0.1 <= c.interval_s <= 10:
        raise ConfigError(f"collector.interval_s must be 0.1-10, got {c.interval_s}")
    if not 0 < c.scrape_timeout_s < c.interval_s:
        raise ConfigError("collector.scrape_timeout_s must be > 0 and below collector.interval_s")
    if not c.windows_s or any(not c.interval_s <= w <= c.history_fine_s for w in c.windows_s):
        raise ConfigError(f"collector.windows_s must each lie between interval_s and history_fine_s, got {list(c.windows_s)}")
    if not c.interval_s <= c.history_coarse_step_s <= c.history_fine_s <= c.history_keep_s:
        raise ConfigError("collector: need interval_s <= history_coarse_step_s <= history_fine_s <= history_keep_s")
    if not 0 < c.history_flush_s <= c.history_fine_s:
        raise ConfigError(f"collector.history_flush_s must be in (0, history_fine_s], got {c.history_flush_s}")
    f = config.forecaster
    if not f.resolutions_s or any(r < c.interval_s for r in f.resolutions_s) or list(f.resolutions_s) != sorted(f.resolutions_s):
        raise ConfigError(f"forecaster.resolutions_s must be ascending and each >= collector.interval_s, got {list(f.resolutions_s)}")
    if not 1 <= f.horizon_steps <= 288 or f.refit_every_steps < 1 or f.selection_window_steps < 10 or f.max_history_steps < 100:
        raise ConfigError("forecaster: horizon_steps 1-288, refit_every_steps >= 1, selection_window_steps >= 10, max_history_steps >= 100")
    s = config.scheduler
    if not 1 <= s.load_window_s <= 300 or not 1 <= s.burst_window_s <= 60:
        raise ConfigError(f"scheduler.load_window_s must be 1-300 and scheduler.burst_window_s 1-60, got {s.load_window_s} and {s.burst_window_s}")
    if not 0.1 <= s.lease_renew_s <= 10 or s.lease_s < 2 * s.lease_renew_s:
        raise ConfigError(f"scheduler.lease_renew_s must be 0.1-10 and scheduler.lease_s at least twice it, got {s.lease_renew_s} and {s.lease_s}")
    if not 0.1 <= config.router.telemetry_interval_s <= 10:
        raise ConfigError(f"router.telemetry_interval_s must be 0.1-10, got {config.router.telemetry_interval_s}")
    if not 0 < config.actuator.time_scale <= 10:
        raise ConfigError(f"actuator.time_scale must be in (0, 10], got {config.actuator.time_scale}")
    a = config.actuator
    if not 0 < a.crash_backoff_initial_s <= a.crash_backoff_max_s or a.crash_backoff_reset_after_s <= 0:
        raise ConfigError(
            "actuator: crash_backoff_initial_s must be > 0 and <= crash_backoff_max_s, crash_backoff_reset_after_s > 0; "
            f"got {a.crash_backoff_initial_s}, {a.crash_backoff_max_s}, {a.crash_backoff_reset_after_s}"
        )
    if a.replica_log_keep_bytes < 4096:
        raise ConfigError(f"actuator.replica_log_keep_bytes must be >= 4096, got {a.replica_log_keep_bytes}")
    r = config.router
    if r.front not in ("auto", "grpc", "haproxy"):
        raise ConfigError(f"router.front must be auto, grpc or haproxy, got {r.front!r}")
    if not 1 <= r.workers <= 64:
        raise ConfigError(f"router.workers must be 1-64, got {r.workers}")
    if r.hold_timeout_s <= 0 or r.hold_max_requests < 1 or r.hold_max_bytes < 1:
        raise ConfigError("router.hold_timeout_s, hold_max_requests and hold_max_bytes must be positive")
    if not 0 <= r.drain_timeout_s <= 300:
        raise ConfigError(f"router.drain_timeout_s must be 0-300, got {r.drain_timeout_s}")
    server_tls(r.tls_cert_file, r.tls_key_file, r.tls_client_ca_file, read=False)  # a half-set pair: ConfigError now
    if r.max_retries < 0 or r.retry_buffer_bytes < 0 or r.eject_after_failures < 1 or r.eject_s < 0:
        raise ConfigError("router.max_retries, retry_buffer_bytes and eject_s must be >= 0 and eject_after_failures >= 1")

    try:
        names = [parse_node(text).name for text in config.placement.nodes]
    except ValueError as error:
        raise ConfigError(f"placement.nodes: {error}") from None
    if len(set(names)) != len(names):
        raise ConfigError(f"placement.nodes: node names must be unique, got {names}")
    if config.placement.gpu_budget < 0 or config.placement.max_moves_per_hour < 0:
        raise ConfigError("placement.gpu_budget and placement.max_moves_per_hour must be >= 0")
    for section in ("router", "collector", "forecaster", "scheduler", "actuator"):
        for name in ("grpc_listen", "metrics_listen"):
            _check_listen(f"{section}.{name}", getattr(getattr(config, section), name))
    if not 0 <= config.router.port <= 65535:
        raise ConfigError(f"router.port must be 0-65535, got {config.router.port}")
    if not -1 <= config.router.http_port <= 65535:
        raise ConfigError(f"router.http_port must be 0-65535 (-1: no HTTP), got {config.router.http_port}")
    if config.router.http_port > 0 and config.router.http_port == config.router.port:
        raise ConfigError(f"router.http_port and router.port must differ, both are {config.router.port}")


def _check_listen(name: str, listen: str) -> None:
    host, colon, port = listen.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port (port 0-65535, 0 picks one), got {listen!r}")


SECTIONS = tuple(f.name for f in fields(Config) if f.name != "models")
"""The config file's settings sections (every one can be overridden from the environment)."""


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Build a validated Config from a mapping shaped like the YAML file."""
    known = {*SECTIONS, "models"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown top-level section(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    models_raw = raw.get("models")
    models: tuple[ModelPolicy, ...] = Config().models
    if models_raw is not None:
        if not isinstance(models_raw, Mapping):
            raise ConfigError("models must map a model name to its policy")
        models = tuple(replace(ModelPolicy(model=str(name)), **policy_patch(str(name), policy)).validate() for name, policy in models_raw.items())
    config = Config(
        router=router_config(raw.get("router")),
        collector=_section(CollectorConfig, raw.get("collector"), "collector"),
        forecaster=_section(ForecasterConfig, raw.get("forecaster"), "forecaster"),
        scheduler=_section(SchedulerConfig, raw.get("scheduler"), "scheduler"),
        actuator=_section(ActuatorConfig, raw.get("actuator"), "actuator"),
        placement=_section(PlacementConfig, raw.get("placement"), "placement"),
        nats=_section(NatsConfig, raw.get("nats"), "nats"),
        models=models,
    )
    _check_ranges(config)
    return config


ENV_PREFIX = "EBBFLOW_"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """EBBFLOW_<SECTION>__<SETTING>=value, e.g. EBBFLOW_ACTUATOR__TIME_SCALE=0.1."""
    overrides: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
            if section in SECTIONS:
                overrides.setdefault(section, {})[name] = value
    return overrides


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file (if any), apply environment overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        raw = loaded
    for section, values in _env_overrides(os.environ if environ is None else environ).items():
        raw[section] = {**(raw.get(section) or {}), **values}
    return parse_config(raw)


def with_router_port(config: Config, port: int) -> Config:
    return replace(config, router=replace(config.router, port=port))
