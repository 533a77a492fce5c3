"""NATS users of `ebbflow up`: who may write what, credentials in URLs, and URLs fit to show."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from ebbflow.runtime.nats_auth import USERS, NatsUsers, denied, redact, same_servers


def test_each_service_is_denied_the_writes_another_owns() -> None:
    assert "$KV.desired.>" in denied("router") and "$KV.desired.>" not in denied("scheduler")
    assert "$KV.replicas.>" in denied("scheduler") and "$KV.replicas.>" not in denied("actuator")
    assert "$KV.policies.>" not in denied("actuator") and "$KV.policies.>" in denied("collector")
    assert "$JS.API.STREAM.PURGE.KV_desired" in denied("collector") and "$JS.API.STREAM.DELETE.KV_tenants" in denied("router")
    assert "ebbflow.decisions.>" in denied("actuator") and "ebbflow.lifecycle.>" not in denied("actuator")
    assert "ebbflow.history.fine.>" not in denied("collector") and "ebbflow.history.fine.>" in denied("forecaster")
    assert denied("supervisor") == []
    assert not any(s.startswith("$KV.services") or s.startswith("ebbflow.router") for user in USERS for s in denied(user))  # open to all


def test_the_server_configuration_has_every_user_with_its_denials(tmp_path: Path) -> None:
    users = NatsUsers.generate()
    text = users.server_config()
    assert text.startswith("authorization ")
    parsed = json.loads(text[len("authorization ") :])
    by_user = {u["user"]: u for u in parsed["users"]}
    assert set(by_user) == set(USERS) and by_user["router"]["password"] == users.passwords["router"]
    assert by_user["router"]["permissions"]["publish"]["deny"] == denied("router")
    again = NatsUsers.for_state_dir(tmp_path)
    assert NatsUsers.for_state_dir(tmp_path) == again != users  # kept for the next run on the same state directory
    assert stat.S_IMODE((tmp_path / "nats-users.json").stat().st_mode) == 0o600


def test_urls_carry_credentials_and_show_none() -> None:
    users = NatsUsers({user: f"pw/{user}" for user in USERS})
    url = users.url("router", "nats://127.0.0.1:4222, nats://127.0.0.1:4223")
    assert url == "nats://router:pw%2Frouter@127.0.0.1:4222,nats://router:pw%2Frouter@127.0.0.1:4223"
    assert users.url("scheduler", url).startswith("nats://scheduler:pw%2Fscheduler@127.0.0.1:4222")  # credentials replaced
    assert redact(url) == "nats://router:***@127.0.0.1:4222,nats://router:***@127.0.0.1:4223"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert same_servers(url, "nats://127.0.0.1:4222,nats://127.0.0.1:4223") and not same_servers(url, "nats://127.0.0.1:4222")
