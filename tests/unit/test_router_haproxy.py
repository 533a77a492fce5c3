"""The HAProxy front's pure parts: its configuration, and reading its statistics and log lines."""

from pathlib import Path

from ebbflow.router.core import ModelMeter
from dataclasses import replace

from ebbflow.router.haproxy import TOO_LARGE_LUA, FrontBackend, FrontServer, FrontSpec, parse_log_line, parse_stats, render

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


def test_a_meter_fed_by_statistics_and_logs_averages_in_flight_over_time():
    meter = ModelMeter(window_start_s=0.0)
    meter.observe(0.0, arrivals=4, in_flight=4)
    meter.observe(0.5, arrivals=0, in_flight=0)
    for _ in range(4):
        meter.completed(0.5, ok=True)
    stats = meter.close_window(1.0)
    assert stats.arrivals == 4 and stats.in_flight_avg == 2.0 and stats.in_flight_now == 0 and sum(stats.latency_counts) == 4
