"""The router's compiled fast path, as pure functions: HAProxy's configuration and what HAProxy reports.

With `router.front: haproxy`, clients connect to an HAProxy (Debian's 2.6)
instead of the Python router. It reads `model_name` (field 1 of
`ModelInferRequest`) off the gRPC body with its `ungrpc` converter, looks the
model up in a map, and sends the call to that model's backend: the model's
ready replicas, balanced as the model's routing policy says (least
outstanding is HAProxy's `leastconn`, power of two choices `random(2)`,
round robin `roundrobin`). A call that fails to connect or gets no response
at all is resent to another replica (`retry-on conn-failure empty-response`).

Everything else goes to the Python router behind it, which answers exactly
as without the front: other methods (metadata, statistics, readiness,
streaming, the refused ones), unknown models and unreadable requests (no map
entry), bodies that do not fit HAProxy's buffer (over 62 KiB), and a model with no ready replica (the
Python router is each model backend's `backup` server, so it holds the
request while the model scales from zero).

A ModelInfer request whose gRPC message is over `router.max_message_bytes`
(read from the message's length prefix) is answered by the front itself:
RESOURCE_EXHAUSTED, after its body has been read to the end (a small Lua
service), because an early answer makes HAProxy reset the stream and the
client would see CANCELLED.

With `router.http_port`, a second frontend serves KServe v2 HTTP/1.1:
`POST /v2/models/{model}[/versions/{v}]/infer`,
`generate` and `generate_stream` of a model with ready replicas go to that
model's HTTP backend (the same replicas' HTTP ports, the same balance), the
model read off the path (its fourth `/` field, no body parsing), answers
relayed as they arrive (a `generate_stream` event by event). A body whose
Content-Length is over `router.max_message_bytes` gets 413 from the front
itself. Everything else (health, metadata, statistics, readiness, unknown
models, held requests at zero replicas) goes to the Python router's HTTP
port (router.rest), the backup server of every HTTP backend.

A replica whose connections fail `eject_after_failures` times in a row is
marked down until two TCP checks (one a second) succeed again.

What the fast path does not do, and the Python router does: OpenTelemetry
spans (trace headers still pass through to the replica), and refusing a
body whose model name is readable but whose rest is broken (the replica
answers it as Triton does: INTERNAL "Unable to parse request"). Latencies in
its telemetry have HAProxy's millisecond resolution.

The shell (router.front) renders the configuration from the registry,
reloads HAProxy when it changes, reads HAProxy's statistics for arrivals and
in-flight, and its per-request log lines for latency and outcome. HAProxy
outlives the shell: the shell records it in a pid file (`FrontRecord`), and a
shell started later on the same state directory adopts it by the rule of
`choose_adoption` instead of starting another.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

BALANCE = {"least_outstanding": "leastconn", "power_of_two": "random(2)", "round_robin": "roundrobin"}
"""Routing policy (config.ROUTING names) → HAProxy balance algorithm."""
FALLBACK = "router"
"""Name of the Python router as a server in every backend."""
HARD_STOP_S = 300
"""How long an HAProxy replaced by a reload, or soft-stopped with no shell left to bound it, may finish the calls it holds."""
LOG_FORMAT = "%[var(txn.model)] %s %Ta %ST %[var(txn.grpc_status)] %[var(txn.tenant)] %[var(txn.refused)]"


@dataclass(frozen=True)
class FrontServer:
    name: str  # the replica id
    address: str  # host:port of its gRPC endpoint
    http_address: str = ""  # host:port of its HTTP endpoint ("" when it has none)


@dataclass(frozen=True)
class FrontBackend:
    model: str
    routing: str
    servers: tuple[FrontServer, ...]
    max_in_flight: int = 0
    """Overload (router.shedding): each replica's `maxconn`, a request that waits SHED_QUEUE_MS for a free slot
    answered RESOURCE_EXHAUSTED / 429 by the front; 0: no limit."""


@dataclass(frozen=True)
class FrontSpec:
    listen: str
    fallback: str
    admin_socket: Path
    map_path: Path
    log_address: str
    retries: int
    eject_after: int = 3
    buffer_bytes: int = 65536
    max_message_bytes: int = 64 * 1024 * 1024
    """router.max_message_bytes: a larger ModelInfer request gets RESOURCE_EXHAUSTED from the front itself."""
    lua_path: Path | None = None
    """Where TOO_LARGE_LUA is written; None: oversized requests go to the Python router like other large ones."""
    http_listen: str = ""
    """host:port of the KServe v2 HTTP frontend; "" serves no HTTP."""
    http_fallback: str = ""
    """host:port of the Python router's HTTP API (router.rest)."""
    tls_pem: Path | None = None
    """router.tls_cert_file: the certificate chain and key in one file; the client ports speak TLS only."""
    tls_client_ca: Path | None = None
    """router.tls_client_ca_file: clients must present a certificate this CA signed."""
    overload_dir: Path | None = None
    """Where the overload answers (OVERLOAD_GRPC, OVERLOAD_HTTP) are written; None: no backend sheds."""
    tenant_dir: Path | None = None
    """router.require_api_key: the directory of the tenant maps (TENANT_MAPS) the fast path checks keys against;
    None: keys are not checked."""


@dataclass(frozen=True)
class FrontTenant:
    """A tenant as the front sees it (router.tenants has the rule; this is its fast-path part)."""

    name: str
    key_sha256: str
    models: tuple[str, ...]
    """Empty: every model."""
    requests_per_minute: int = 0
    fast: bool = True
    """False (a token budget, which needs the request read): its requests always go to the Python router."""


TENANT_MAPS = ("tenants.map", "allowed.map", "rates.map")
"""key hash → tenant; `tenant/model` (or `tenant/*`) → 1 for what it may call; tenant → requests per minute."""


def tenant_maps(tenants: list[FrontTenant]) -> dict[str, str]:
    """The contents of TENANT_MAPS for the tenants the fast path serves (active ones without a token budget)."""
    fast = sorted((t for t in tenants if t.fast), key=lambda t: t.name)
    keys = "".join(f"{t.key_sha256} {t.name}\n" for t in fast)
    allowed = "".join(f"{t.name}/{model} 1\n" for t in fast for model in (t.models or ("*",)))
    rates = "".join(f"{t.name} {t.requests_per_minute}\n" for t in fast if t.requests_per_minute)
    return dict(zip(TENANT_MAPS, (keys, allowed, rates)))


TOO_LARGE_SERVICE = "grpc_too_large"
TOO_LARGE_LUA = f"""-- ebbflow: answer a ModelInfer request over router.max_message_bytes with gRPC RESOURCE_EXHAUSTED.
-- The body is read to its end first: answering early makes HAProxy reset the stream with CANCEL, which a gRPC
-- client reports as CANCELLED whatever the answer said.
core.register_service("{TOO_LARGE_SERVICE}", "http", function(applet)
  local size = applet:get_var("txn.msg_bytes") or "?"
  local limit = applet:get_var("txn.msg_limit") or "?"
  repeat local chunk = applet:receive() until chunk == nil or chunk == ""
  applet:set_status(200)
  applet:add_header("content-type", "application/grpc")
  applet:add_header("content-length", "0")
  applet:add_header("grpc-status", "8")
  applet:add_header("grpc-message", "request of " .. size .. " bytes is larger than the router accepts (" .. limit .. " bytes, router.max_message_bytes)")
  applet:start_response()
end)
"""
OVER_RATE_SERVICE = "grpc_over_rate"
OVER_RATE_LUA = f"""-- ebbflow: answer a tenant's request over its limit (router.require_api_key) with gRPC RESOURCE_EXHAUSTED.
core.register_service("{OVER_RATE_SERVICE}", "http", function(applet)
  local tenant = applet:get_var("txn.tenant") or "?"
  local limit = applet:get_var("txn.rpm") or "?"
  local retry = applet:get_var("txn.retry") or "1"
  repeat local chunk = applet:receive() until chunk == nil or chunk == ""
  applet:set_status(200)
  applet:add_header("content-type", "application/grpc")
  applet:add_header("content-length", "0")
  applet:add_header("grpc-status", "8")
  applet:add_header("retry-after", tostring(retry))
  applet:add_header("grpc-message", "tenant " .. tenant .. " is over its limit of " .. limit .. " requests per minute; retry after " .. retry .. " s")
  applet:start_response()
end)
"""
"""A trailers-only gRPC answer (headers with grpc-status and END_STREAM) after draining the request."""
FRONT_LUA = TOO_LARGE_LUA + OVER_RATE_LUA


SHED_QUEUE_MS = 10
"""How long a request may wait at the front for a replica slot of a model that sheds before it is refused."""
OVERLOAD_MESSAGE = "the model is overloaded: its max_replicas replicas each have shed_in_flight_per_replica requests in flight; retry after 1 s"
OVERLOAD_GRPC = (
    "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: 8\r\n"
    f"grpc-message: {OVERLOAD_MESSAGE}\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"
)
"""The front's answer to a gRPC request it sheds: trailers-only RESOURCE_EXHAUSTED (HAProxy's 503 errorfile)."""
_OVERLOAD_BODY = '{"error": "' + OVERLOAD_MESSAGE + '"}'
OVERLOAD_HTTP = (
    "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    f"content-length: {len(_OVERLOAD_BODY)}\r\n\r\n{_OVERLOAD_BODY}"
)


def backend_name(index: int) -> str:
    return f"model_{index}"


HTTP_SUFFIX = "_http"
"""A model's HTTP backend is its gRPC backend's name with this suffix (one map serves both frontends)."""
HTTP_FALLBACK = FALLBACK + HTTP_SUFFIX
HTTP_FORWARDED = "/infer /generate /generate_stream"
"""Path endings of the HTTP requests the front forwards to a model's replicas itself."""


def render(spec: FrontSpec, backends: list[FrontBackend], tenants: list[FrontTenant] | None = None) -> tuple[str, str]:
    """HAProxy's configuration and its model map (model name → backend), for these backends (and, checking keys,
    these tenants: their maps' digest is in the text, so a change of tenants is a change of configuration)."""
    ordered = sorted(backends, key=lambda b: b.model)
    digest = hashlib.sha256(json.dumps(tenant_maps(tenants or []), sort_keys=True).encode()).hexdigest()[:16]
    lines = [
        *([f"# tenants {digest}"] if spec.tenant_dir is not None else []),
        "global",
        f"  stats socket {spec.admin_socket} mode 600 level admin expose-fd listeners",
        "  nbthread 1",
        f"  hard-stop-after {HARD_STOP_S}s",
        f"  tune.bufsize {spec.buffer_bytes}",
        f"  log {spec.log_address} len 1024 format raw local0 info",
        *([f"  lua-load {spec.lua_path}"] if spec.lua_path else []),
        "",
        "defaults",
        "  mode http",
        "  log global",
        f'  log-format "{LOG_FORMAT}"',
        "  option http-no-delay",
        "  http-reuse always",
        "  timeout connect 2s",
        "  timeout http-request 60s",
        "  timeout client 3600s",
        # Once HAProxy has sent a GOAWAY (a soft stop, a reload) and the connection's last call is done, the client
        # should close; a gRPC client whose last answer was an error did not, and held the stopping process for
        # `timeout client` (an hour) instead of a second.
        "  timeout client-fin 1s",
        "  timeout server 3600s",
        "",
        "frontend triton",
        f"  bind {spec.listen} {_bind_options(spec, 'h2')}",
        # Wait for a unary call's body (never for a stream's: it stays open) before reading the model name.
        "  http-request wait-for-body time 30s if { path /inference.GRPCInferenceService/ModelInfer }",
        *_too_large_rules(spec),
        # Only a body that fit in the buffer whole: it is all there to read and to resend; a larger one goes to
        # the Python router, which enforces router.max_message_bytes.
        f"  http-request set-var(txn.model) req.body,ungrpc(1) if {{ path /inference.GRPCInferenceService/ModelInfer }} "
        f"{{ req.body_len lt {spec.buffer_bytes - 2048} }}",
        *_tenant_rules(spec, "grpc"),
        f"  use_backend %[var(txn.model),map({spec.map_path})] if {{ var(txn.model),map({spec.map_path}) -m found }}{_allowed(spec)}",
        f"  default_backend {FALLBACK}",
        "",
        *_tenant_table(spec),
        "",
        f"backend {FALLBACK}",
        f"  server {FALLBACK} {spec.fallback} proto h2",
        *_http_frontend(spec),
    ]
    map_lines = []
    for index, backend in enumerate(ordered):
        name = backend_name(index)
        map_lines.append(f"{backend.model} {name}")
        lines += [
            "",
            f"backend {name}",
            f"  balance {BALANCE.get(backend.routing, 'leastconn')}",
            f"  retries {spec.retries}",
            "  retry-on conn-failure empty-response",
            "  option redispatch 1",
            "  http-response set-var(txn.grpc_status) res.hdr(grpc-status)",
            *_shedding(spec, backend, "grpc"),
        ]
        # Ejection: eject_after connection failures in a row mark a replica down; a TCP check every second
        # (two successes) brings it back.
        health = f"check inter 1s fall 3 rise 2 observe layer4 error-limit {spec.eject_after} on-error mark-down"
        if backend.max_in_flight and spec.overload_dir is not None:
            health += f" maxconn {backend.max_in_flight}"
        lines += [f"  server {server.name} {server.address} proto h2 {health}" for server in sorted(backend.servers, key=lambda s: s.name)]
        lines.append(f"  server {FALLBACK} {spec.fallback} proto h2 backup")
        if spec.http_listen:
            lines += [
                "",
                f"backend {name}{HTTP_SUFFIX}",
                f"  balance {BALANCE.get(backend.routing, 'leastconn')}",
                f"  retries {spec.retries}",
                "  retry-on conn-failure empty-response",
                "  option redispatch 1",
                *_shedding(spec, backend, "http"),
            ]
            lines += [f"  server {server.name} {server.http_address} {health}" for server in sorted(backend.servers, key=lambda s: s.name) if server.http_address]
            lines.append(f"  server {FALLBACK} {spec.http_fallback} backup")
    return "\n".join(lines) + "\n", "".join(line + "\n" for line in map_lines)


def _http_frontend(spec: FrontSpec) -> list[str]:
    """The KServe v2 HTTP frontend and its fallback backend (nothing without http_listen)."""
    if not spec.http_listen:
        return []
    forwarded = f"{{ method POST }} {{ path_beg /v2/models/ }} {{ path_end {HTTP_FORWARDED} }}"
    too_large = (
        f'{{"error":"request body is larger than the router accepts ({spec.max_message_bytes} bytes, router.max_message_bytes)"}}'
    )
    return [
        "",
        "frontend triton_http",
        f"  bind {spec.http_listen}{' ' + _bind_options(spec, 'http/1.1') if spec.tls_pem else ''}",
        f"  http-request return status 413 content-type application/json string '{too_large}' "
        f"if {{ req.hdr_val(content-length) gt {spec.max_message_bytes} }}",
        f"  http-request set-var(txn.model) path,field(4,/) if {forwarded}",
        *_tenant_rules(spec, "http"),
        f"  use_backend %[var(txn.model),map({spec.map_path})]{HTTP_SUFFIX} if {{ var(txn.model),map({spec.map_path}) -m found }}{_allowed(spec)}",
        f"  default_backend {HTTP_FALLBACK}",
        "",
        f"backend {HTTP_FALLBACK}",
        f"  server {FALLBACK} {spec.http_fallback}",
    ]


def _shedding(spec: FrontSpec, backend: FrontBackend, kind: str) -> list[str]:
    """A shedding backend's queue bound and its answer when a request waited it out (HAProxy's 503)."""
    if not backend.max_in_flight or spec.overload_dir is None:
        return []
    return [f"  timeout queue {SHED_QUEUE_MS}ms", f"  errorfile 503 {spec.overload_dir / f'overload_{kind}.http'}"]


def _bind_options(spec: FrontSpec, alpn: str) -> str:
    """Plain gRPC is HTTP/2 without TLS (`proto h2`); with TLS, the protocol is negotiated (ALPN)."""
    if spec.tls_pem is None:
        return "proto h2"
    verify = f" ca-file {spec.tls_client_ca} verify required" if spec.tls_client_ca else ""
    return f"ssl crt {spec.tls_pem} alpn {alpn}{verify}"


TENANT_TABLE = "tenant_rates"


def _allowed(spec: FrontSpec) -> str:
    """Checking keys, the fast path is only for a known key calling a model its tenant may call."""
    return " { var(txn.allowed) -m found }" if spec.tenant_dir is not None else ""


def _tenant_table(spec: FrontSpec) -> list[str]:
    if spec.tenant_dir is None:
        return []
    return [f"backend {TENANT_TABLE}", "  stick-table type string len 64 size 100k expire 2m store http_req_rate(60s)", ""]


def _tenant_rules(spec: FrontSpec, kind: str) -> list[str]:
    """The tenant check on the fast path (router.tenants' rule, for tenants without a token budget).

    The key's SHA-256 finds the tenant, `tenant/model` or `tenant/*` whether it may call the model; only then is
    the request the fast path's. A tenant with a request limit is tracked in a stick table (requests in the last
    60 s) and answered RESOURCE_EXHAUSTED / 429 by the front when over it, with a retry hint of 60 / limit s.
    Anything else (no key, an unknown or revoked one, a model not allowed, a token budget) goes to the Python
    router, which refuses it precisely or serves it."""
    if spec.tenant_dir is None:
        return []
    tenants, allowed, rates = (spec.tenant_dir / name for name in TENANT_MAPS)
    over = "{ var(txn.rpm) -m found } { sc_http_req_rate(0),sub(txn.rpm) gt 0 }"
    lines = [
        f'  http-request set-var(txn.tenant) req.hdr(authorization),regsub("^[Bb]earer +",""),sha2(256),hex,lower,map({tenants}) '
        "if { req.hdr(authorization) -m found }",
        f"  http-request set-var(txn.allowed) int(1) if {{ var(txn.tenant),concat(/,txn.model),map({allowed}) -m found }}",
        f"  http-request set-var(txn.allowed) int(1) if {{ var(txn.tenant),concat(/*),map({allowed}) -m found }}",
        f"  http-request set-var(txn.rpm) var(txn.tenant),map({rates}) if {{ var(txn.allowed) -m found }}",
        f"  http-request track-sc0 var(txn.tenant) table {TENANT_TABLE} if {{ var(txn.rpm) -m found }}",
        # ceil(60 / limit): the mean gap between requests at the limit
        "  http-request set-var(txn.retry) int(59),add(txn.rpm),div(txn.rpm) if { var(txn.rpm) -m found }",
        f"  http-request set-var(txn.refused) str(rate) if {over}",
    ]
    if kind == "grpc":
        lines.append(f"  http-request use-service lua.{OVER_RATE_SERVICE} if {over}")
    else:
        message = '{"error":"tenant %[var(txn.tenant)] is over its limit of %[var(txn.rpm)] requests per minute; retry after %[var(txn.retry)] s"}'
        lines.append(f'  http-request return status 429 content-type application/json hdr retry-after "%[var(txn.retry)]" lf-string \'{message}\' if {over}')
    return lines


def _too_large_rules(spec: FrontSpec) -> list[str]:
    """Read the gRPC message length (bytes 1-4 of the body, big-endian) and refuse one over the limit.

    Passed on, such a request would reach the Python router, whose refusal HAProxy turns into a reset stream
    (the client sees CANCELLED, not RESOURCE_EXHAUSTED)."""
    if spec.lua_path is None:
        return []
    infer = "{ path /inference.GRPCInferenceService/ModelInfer }"
    return [
        f"  http-request set-var(txn.msg_bytes) req.body,bytes(1,4),be2dec(,4) if {infer}",
        f"  http-request set-var(txn.msg_limit) int({spec.max_message_bytes}) if {infer}",
        f"  http-request use-service lua.{TOO_LARGE_SERVICE} if {infer} {{ var(txn.msg_bytes) -m int gt {spec.max_message_bytes} }}",
    ]


@dataclass(frozen=True)
class ServerStats:
    requests_total: int  # stot: calls sent to the server since HAProxy started
    in_flight: int  # scur
    status: str = ""  # UP, DOWN, MAINT, ... (with check details, e.g. "DOWN 1/2")


def parse_stats(text: str) -> dict[tuple[str, str], ServerStats]:
    """`show stat` CSV → per (backend, server), the replica servers only (not FRONTEND/BACKEND rows)."""
    body = text.lstrip("# ")
    out = {}
    for row in csv.DictReader(io.StringIO(body)):
        server = row.get("svname", "")
        if server in ("FRONTEND", "BACKEND", "") or not row.get("pxname"):
            continue
        out[(row["pxname"], server)] = ServerStats(int(row.get("stot") or 0), int(row.get("scur") or 0), row.get("status", ""))
    return out


@dataclass(frozen=True)
class Completed:
    model: str
    server: str
    seconds: float
    ok: bool
    code: str  # the gRPC status name, or HTTP_<status> when HAProxy itself answered
    tenant: str = ""  # router.require_api_key: the tenant of the key ("" when none was found)
    refused: str = ""  # why the front answered the call itself: "rate" (a tenant over its request limit)


_GRPC_CODES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED RESOURCE_EXHAUSTED "
    "FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
).split()


def parse_log_line(line: str) -> Completed | None:
    """One raw log line (LOG_FORMAT) → the finished call; None for a line that is not one (or a malformed one).

    A call answered normally carries its grpc-status in trailers, which HAProxy does not log: it counts as OK
    when HTTP says 200 and no grpc-status header came early (Triton sends errors as trailers-only responses).
    """
    parts = line.strip().split(" ")
    if len(parts) not in (5, 7) or parts[0] in ("", "-"):  # 5: an HAProxy started on the format before tenants
        return None
    model, server, active_ms, http_status, grpc_status = parts[:5]
    tenant, refused = (part if part != "-" else "" for part in (parts[5:] or ["-", "-"]))
    try:
        seconds = max(0.0, float(active_ms)) / 1000.0
        status = int(http_status)
    except ValueError:
        return None
    if math.isnan(seconds):
        return None
    if status != 200:
        code = f"HTTP_{status}"
    elif grpc_status in ("-", ""):
        code = "OK"
    elif grpc_status.isdigit() and int(grpc_status) < len(_GRPC_CODES):
        code = _GRPC_CODES[int(grpc_status)]
    else:
        code = "UNKNOWN"
    return Completed(model, server, seconds, code == "OK", code, tenant, refused)


# ---- adoption: finding the front an earlier shell left running ---------------------------------------------


@dataclass(frozen=True)
class FrontRecord:
    """The front's pid file (`haproxy/front.json`), rewritten after every (re)load: how a later shell, or
    `ebbflow down`, finds the HAProxy serving and the files it runs on."""

    pid: int
    """The serving HAProxy (replaced ones still finishing calls are found by their command line)."""
    listen: str
    """host:port it listens on."""
    admin_socket: str
    log_port: int
    """UDP port its log lines go to (the shell's receiver; a later shell takes it again when it is free)."""
    config_sha256: str
    """Of the configuration `pid` was started on."""
    http_listen: str = ""
    """host:port of its KServe v2 HTTP frontend ("" when it serves none)."""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FrontRecord | None:
        """None for a record that cannot be read (torn, or from another version)."""
        try:
            raw = json.loads(text)
            return cls(
                int(raw["pid"]), str(raw["listen"]), str(raw["admin_socket"]), int(raw["log_port"]), str(raw["config_sha256"]),
                str(raw.get("http_listen", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class EarlierFront:
    """What a starting shell finds of an earlier front on its state directory."""

    record: FrontRecord | None
    answering_pid: int | None
    """The pid `show info` on the recorded admin socket names; None: no record, or no answer."""
    answering_binary: str
    """That process's executable, resolved ("" when unknown)."""
    processes: frozenset[int]
    """Live processes started on this state directory's configuration file (the serving one and replaced ones)."""


def choose_adoption(earlier: EarlierFront, binary: str, host: str, port: int, http_port: int = -1) -> tuple[int | None, str]:
    """The HAProxy to adopt (None: start a new one) and why, for the log.

    Adopted is the process that answers on the recorded admin socket, runs this state directory's configuration
    file with the installed binary, and listens where the router is configured to (port 0: anywhere; HTTP on
    http_port, or not at all for -1). Anything
    less could be a pid reused by another program, a front of an older installation, or one on a port the
    configuration no longer names."""
    record, pid = earlier.record, earlier.answering_pid
    if record is None:
        return None, "no front is recorded"
    if pid is None:
        return None, f"nothing answers on its admin socket {record.admin_socket}"
    if pid not in earlier.processes:
        return None, f"pid {pid} on its admin socket does not run this state directory's configuration"
    if earlier.answering_binary != binary:
        return None, f"pid {pid} runs {earlier.answering_binary or 'an unknown binary'}, not {binary}"
    recorded_host, _, recorded_port = record.listen.rpartition(":")
    if recorded_host != host or (port != 0 and recorded_port != str(port)):
        return None, f"pid {pid} listens on {record.listen}, the router is configured for {host}:{port}"
    http_host, _, recorded_http = record.http_listen.rpartition(":")
    if http_port < 0 and record.http_listen:
        return None, f"pid {pid} serves HTTP on {record.http_listen}, the router is configured for none"
    if http_port >= 0 and (http_host != host or (http_port != 0 and recorded_http != str(http_port))):
        return None, f"pid {pid} serves HTTP on {record.http_listen or 'no port'}, the router is configured for {host}:{http_port}"
    return pid, f"pid {pid} answers on {record.admin_socket} and listens on {record.listen}"


def config_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def running_configuration(record: FrontRecord, pid: int, text: str) -> str:
    """The configuration file's text when it is what `pid` runs, else "" (the adopting shell then reloads)."""
    return text if record.pid == pid and config_digest(text) == record.config_sha256 else ""


def parse_map(text: str) -> dict[str, str]:
    """A model map (`render`'s second half) → backend name → model."""
    pairs = [line.split(" ", 1) for line in text.splitlines() if " " in line]
    return {**{backend: model for model, backend in pairs}, **{backend + HTTP_SUFFIX: model for model, backend in pairs}}


def servers_in(config_text: str, backends: dict[str, str]) -> frozenset[tuple[str, str]]:
    """(model, replica id) of every replica server in a rendered configuration; `backends` from `parse_map`."""
    found, model = set(), None
    for line in config_text.splitlines():
        words = line.split()
        if line.startswith("backend "):
            model = backends.get(words[1])
        elif model is not None and len(words) >= 2 and words[0] == "server" and words[1] != FALLBACK:
            found.add((model, words[1]))
    return frozenset(found)
