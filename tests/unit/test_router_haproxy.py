"""The HAProxy front's pure parts: its configuration, and reading its statistics and log lines."""

from pathlib import Path

from ebbflow.router.core import ModelMeter
from dataclasses import replace

import pytest

from ebbflow.router.haproxy import (
    OVERLOAD_GRPC,
    OVERLOAD_HTTP,
    TOO_LARGE_LUA,
    EarlierFront,
    FrontBackend,
    FrontRecord,
    FrontServer,
    FrontSpec,
    FrontTenant,
    choose_adoption,
    config_digest,
    parse_log_line,
    parse_map,
    parse_stats,
    render,
    tenant_maps,
    running_configuration,
    servers_in,
)

SPEC = FrontSpec(
    listen="0.0.0.0:8001", fallback="127.0.0.1:9000", admin_socket=Path("/s/admin.sock"), map_path=Path("/s/models.map"),
    log_address="127.0.0.1:5140", retries=2,
)


def test_each_model_gets_a_backend_of_its_ready_replicas_with_its_balance_and_the_router_as_backup():
    text, models = render(
        SPEC,
        [
            FrontBackend("llm", "power_of_two", (FrontServer("b2", "10.0.0.2:8001"), FrontServer("a1", "10.0.0.1:8001"))),
            FrontBackend("embed", "round_robin", ()),
        ],
    )
    assert models == "embed model_0\nllm model_1\n"  # sorted, so the same fleet renders the same text
    llm = text.split("backend model_1\n")[1]
    assert "balance random(2)" in llm and "retries 2" in llm and "retry-on conn-failure empty-response" in llm
    assert llm.index("server a1 10.0.0.1:8001 proto h2 check") < llm.index("server b2 10.0.0.2:8001 proto h2 check")
    assert "observe layer4 error-limit 3 on-error mark-down" in llm
    assert "server router 127.0.0.1:9000 proto h2 backup" in llm
    embed = text.split("backend model_0\n")[1].split("backend model_1")[0]
    assert "balance roundrobin" in embed and embed.count("server ") == 1  # at zero only the Python router, which holds
    assert "bind 0.0.0.0:8001 proto h2" in text and "default_backend router" in text
    assert "req.body_len lt 63488" in text  # only bodies that fit the buffer take the fast path
    assert render(SPEC, [FrontBackend("x", "least_outstanding", ())])[0].count("balance leastconn") == 1


def test_a_request_over_the_message_limit_is_answered_by_the_front_with_resource_exhausted():
    spec = replace(SPEC, max_message_bytes=1000, lua_path=Path("/s/too_large.lua"))
    text, _ = render(spec, [])
    assert "  lua-load /s/too_large.lua\n" in text.split("defaults")[0]  # a global setting
    frontend = text.split("frontend triton\n")[1].split("\n\n")[0]
    # the gRPC length prefix, read before anything routes on the body
    assert frontend.index("req.body,bytes(1,4),be2dec(,4)") < frontend.index("use-service lua.grpc_too_large") < frontend.index("use_backend")
    assert "{ var(txn.msg_bytes) -m int gt 1000 }" in frontend and "int(1000)" in frontend
    assert 'add_header("grpc-status", "8")' in TOO_LARGE_LUA and "applet:receive()" in TOO_LARGE_LUA  # drained, then answered
    assert "lua" not in render(SPEC, [])[0]  # without the service file nothing refers to it


def test_a_model_that_sheds_caps_each_replica_and_answers_what_waits_too_long_itself():
    spec = replace(SPEC, overload_dir=Path("/s"), http_listen="0.0.0.0:8000", http_fallback="127.0.0.1:9001")
    servers = (FrontServer("a1", "10.0.0.1:8001", "10.0.0.1:8000"),)
    text, _ = render(spec, [FrontBackend("llm", "least_outstanding", servers, max_in_flight=3), FrontBackend("free", "least_outstanding", servers)])
    shedding = text.split("backend model_1\n")[1].split("\n\n")[0]
    assert "server a1 10.0.0.1:8001 proto h2 check" in shedding and "maxconn 3" in shedding
    assert "timeout queue 10ms" in shedding and "errorfile 503 /s/overload_grpc.http" in shedding
    http = text.split("backend model_1_http\n")[1].split("\n\n")[0]
    assert "maxconn 3" in http and "errorfile 503 /s/overload_http.http" in http
    free = text.split("backend model_0\n")[1].split("\n\n")[0]
    assert "maxconn" not in free and "errorfile" not in free
    assert "grpc-status: 8" in OVERLOAD_GRPC and OVERLOAD_GRPC.endswith("\r\n\r\n")
    head, body = OVERLOAD_HTTP.split("\r\n\r\n")
    assert head.startswith("HTTP/1.1 429") and f"content-length: {len(body)}" in head and "retry-after: 1" in head
    assert "maxconn" not in render(replace(spec, overload_dir=None), [FrontBackend("llm", "least_outstanding", servers, max_in_flight=3)])[0]


def test_statistics_give_each_replica_server_its_calls_and_in_flight():
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin\n"
        "triton,FRONTEND,,,3,8,100,50,0\n"
        "model_0,a1,0,0,2,5,,120,0\n"
        "model_0,router,0,0,0,0,,4,0\n"
        "model_0,BACKEND,0,0,2,5,,124,0\n"
    )
    stats = parse_stats(text)
    assert set(stats) == {("model_0", "a1"), ("model_0", "router")}
    assert stats[("model_0", "a1")].requests_total == 120 and stats[("model_0", "a1")].in_flight == 2


def test_log_lines_give_latency_and_the_grpc_outcome():
    ok = parse_log_line("llm a1 12 200 -\n")
    assert ok is not None and (ok.model, ok.server, ok.seconds, ok.ok, ok.code) == ("llm", "a1", 0.012, True, "OK")
    assert parse_log_line("llm a1 3 200 3").code == "INVALID_ARGUMENT"  # trailers-only error
    assert parse_log_line("llm a1 3 200 99").code == "UNKNOWN"
    assert parse_log_line("llm <NOSRV> 0 503 -").code == "HTTP_503"
    for junk in ("", "- router 1 200 -", "llm a1 x 200 -", "llm a1 1 200", "a b c d e f"):
        assert parse_log_line(junk) is None
    tenant = parse_log_line("llm a1 3 200 - alice -")
    assert tenant is not None and (tenant.tenant, tenant.refused, tenant.code) == ("alice", "", "OK")
    refused = parse_log_line("llm <lua.grpc_over_rate> 0 200 - alice rate")
    assert refused is not None and (refused.tenant, refused.refused) == ("alice", "rate")
    assert parse_log_line("llm a1 3 200 - - -").tenant == ""  # type: ignore[union-attr]


def test_checking_keys_the_fast_path_is_only_for_a_known_key_calling_a_model_its_tenant_may_call():
    tenants = [
        FrontTenant("alice", "aa11", ("llm",), requests_per_minute=3),
        FrontTenant("bob", "bb22", ()),
        FrontTenant("carol", "cc33", (), fast=False),  # a token budget: the Python router reads every request
    ]
    maps = tenant_maps(tenants)
    assert maps == {"tenants.map": "aa11 alice\nbb22 bob\n", "allowed.map": "alice/llm 1\nbob/* 1\n", "rates.map": "alice 3\n"}
    spec = replace(SPEC, tenant_dir=Path("/s"), http_listen="0.0.0.0:8000", http_fallback="127.0.0.1:9001")
    text, _ = render(spec, [FrontBackend("llm", "least_outstanding", ())], tenants)
    grpc_frontend = text.split("frontend triton\n")[1].split("\n\n")[0]
    assert grpc_frontend.index("sha2(256),hex,lower,map(/s/tenants.map)") < grpc_frontend.index("use_backend")
    assert "map(/s/models.map) -m found } { var(txn.allowed) -m found }" in grpc_frontend
    assert "use-service lua.grpc_over_rate if { var(txn.rpm) -m found } { sc_http_req_rate(0),sub(txn.rpm) gt 0 }" in grpc_frontend
    http_frontend = text.split("frontend triton_http\n")[1].split("\n\n")[0]
    assert "http-request return status 429" in http_frontend and "{ var(txn.allowed) -m found }" in http_frontend
    assert "stick-table type string len 64 size 100k expire 2m store http_req_rate(60s)" in text
    # a change of tenants is a change of the configuration (HAProxy reads its maps when it starts)
    assert render(spec, [], tenants)[0] != render(spec, [], tenants[:1])[0] == render(spec, [], tenants[:1])[0]
    plain = render(SPEC, [FrontBackend("llm", "least_outstanding", ())])[0]
    assert "tenants" not in plain and "txn.allowed" not in plain


def test_a_meter_fed_by_statistics_and_logs_averages_in_flight_over_time():
    meter = ModelMeter(window_start_s=0.0)
    meter.observe(0.0, arrivals=4, in_flight=4)
    meter.observe(0.5, arrivals=0, in_flight=0)
    for _ in range(4):
        meter.completed(0.5, ok=True)
    stats = meter.close_window(1.0)
    assert stats.arrivals == 4 and stats.in_flight_avg == 2.0 and stats.in_flight_now == 0 and sum(stats.latency_counts) == 4


RECORD = FrontRecord(pid=100, listen="127.0.0.1:8001", admin_socket="/s/admin.sock", log_port=5140, config_sha256="c")
BINARY = "/usr/sbin/haproxy"


@pytest.mark.parametrize(
    "earlier, host, port, adopted, why",
    [
        (EarlierFront(RECORD, 100, BINARY, frozenset({100, 90})), "127.0.0.1", 8001, 100, "answers on /s/admin.sock"),
        (EarlierFront(RECORD, 100, BINARY, frozenset({100})), "127.0.0.1", 0, 100, "listens on 127.0.0.1:8001"),  # port 0: any
        # A reload finished after the record was written: the process that answers is the one to adopt.
        (EarlierFront(RECORD, 101, BINARY, frozenset({100, 101})), "127.0.0.1", 8001, 101, "pid 101"),
        (EarlierFront(None, None, "", frozenset({100})), "127.0.0.1", 8001, None, "no front is recorded"),
        (EarlierFront(RECORD, None, "", frozenset({100})), "127.0.0.1", 8001, None, "nothing answers"),
        # The socket answers for a process not started on this state directory's configuration (another front's).
        (EarlierFront(RECORD, 555, BINARY, frozenset({100})), "127.0.0.1", 8001, None, "does not run this state directory"),
        (EarlierFront(RECORD, 100, "/opt/old/haproxy", frozenset({100})), "127.0.0.1", 8001, None, "runs /opt/old/haproxy"),
        (EarlierFront(RECORD, 100, BINARY, frozenset({100})), "127.0.0.1", 9001, None, "configured for 127.0.0.1:9001"),
        (EarlierFront(RECORD, 100, BINARY, frozenset({100})), "0.0.0.0", 8001, None, "listens on 127.0.0.1:8001"),
    ],
)
def test_a_front_is_adopted_only_when_it_is_ours_answers_and_listens_where_configured(earlier, host, port, adopted, why):
    pid, reason = choose_adoption(earlier, BINARY, host, port)
    assert pid == adopted and why in reason, reason


def test_the_pid_file_round_trips_and_a_torn_one_reads_as_none():
    assert FrontRecord.from_json(RECORD.to_json()) == RECORD
    assert FrontRecord.from_json(RECORD.to_json()[:20]) is None
    assert FrontRecord.from_json('{"pid": 1}') is None


def test_an_adopted_front_reloads_unless_the_files_on_disk_are_what_it_runs():
    text, models = render(SPEC, [FrontBackend("llm", "round_robin", (FrontServer("r1", "10.0.0.1:8001"),)), FrontBackend("embed", "round_robin", ())])
    record = replace(RECORD, config_sha256=config_digest(text))
    assert running_configuration(record, 100, text) == text
    assert running_configuration(record, 101, text) == "", "another process than the recorded one: its configuration is unknown"
    assert running_configuration(record, 100, text + "# changed\n") == ""
    # What it runs is read back from the files: backends and the replicas in them (for drain acknowledgements).
    backends = parse_map(models)
    assert backends == {"model_0": "embed", "model_1": "llm", "model_0_http": "embed", "model_1_http": "llm"}
    assert servers_in(text, backends) == {("llm", "r1")}


def test_the_front_closes_client_connections_a_second_after_their_goaway():
    """A stopping HAProxy waits for its client connections; one whose client keeps it open after the GOAWAY
    would hold the drain to its bound."""
    assert "timeout client-fin 1s" in render(SPEC, [])[0]


HTTP_SPEC = replace(SPEC, http_listen="0.0.0.0:8000", http_fallback="127.0.0.1:9001", max_message_bytes=4096)


def test_the_http_frontend_sends_inference_of_a_model_with_replicas_to_their_http_ports_and_the_rest_to_the_router():
    text, models = render(
        HTTP_SPEC,
        [
            FrontBackend("llm", "least_outstanding", (FrontServer("a1", "10.0.0.1:8001", "10.0.0.1:8000"), FrontServer("b2", "10.0.0.2:8001"))),
            FrontBackend("embed", "round_robin", ()),
        ],
    )
    assert models == "embed model_0\nllm model_1\n", "one map for both frontends"
    frontend = text.split("frontend triton_http\n")[1].split("\n\n")[0]
    assert "bind 0.0.0.0:8000\n" in frontend, "HTTP/1.1, not h2 only"
    assert "path,field(4,/) if { method POST } { path_beg /v2/models/ } { path_end /infer /generate /generate_stream }" in frontend
    assert "use_backend %[var(txn.model),map(/s/models.map)]_http if { var(txn.model),map(/s/models.map) -m found }" in frontend
    assert "default_backend router_http" in frontend
    # a body declared over router.max_message_bytes: 413 in Triton's error shape, before anything routes
    assert frontend.index("return status 413 content-type application/json") < frontend.index("use_backend")
    assert "req.hdr_val(content-length) gt 4096" in frontend
    llm = text.split("backend model_1_http\n")[1].split("\n\n")[0]
    assert "balance leastconn" in llm and "retry-on conn-failure empty-response" in llm
    assert "server a1 10.0.0.1:8000 check" in llm and "b2" not in llm, "a replica without an HTTP port is left out"
    assert llm.rstrip().endswith("server router 127.0.0.1:9001 backup")
    embed = text.split("backend model_0_http\n")[1].split("\n\n")[0]
    assert embed.count("server ") == 1 and "balance roundrobin" in embed, "at zero only the Python router, which holds"
    assert "server router 127.0.0.1:9001\n" in text.split("\nbackend router_http\n")[1]
    assert "triton_http" not in render(SPEC, [FrontBackend("llm", "least_outstanding", ())])[0], "no http_listen: no HTTP frontend"


def test_adoption_asks_the_http_port_to_match_as_well():
    earlier = EarlierFront(replace(RECORD, http_listen="127.0.0.1:8000"), 100, BINARY, frozenset({100}))
    assert choose_adoption(earlier, BINARY, "127.0.0.1", 8001, 8000)[0] == 100
    assert choose_adoption(earlier, BINARY, "127.0.0.1", 8001, 0)[0] == 100, "0: any HTTP port"
    pid, reason = choose_adoption(earlier, BINARY, "127.0.0.1", 8001, 8080)
    assert pid is None and "serves HTTP on 127.0.0.1:8000" in reason
    assert choose_adoption(earlier, BINARY, "127.0.0.1", 8001)[0] is None, "it serves HTTP, the router wants none"
    without = EarlierFront(RECORD, 100, BINARY, frozenset({100}))
    assert choose_adoption(without, BINARY, "127.0.0.1", 8001, 0)[0] is None, "the router wants HTTP, it serves none"
    # a record written before the HTTP frontend existed reads as serving none
    old = '{"pid": 1, "listen": "h:1", "admin_socket": "/a", "log_port": 2, "config_sha256": "c"}'
    assert FrontRecord.from_json(old) == FrontRecord(1, "h:1", "/a", 2, "c", "")
    assert FrontRecord.from_json(replace(RECORD, http_listen="h:3").to_json()).http_listen == "h:3"  # type: ignore[union-attr]
