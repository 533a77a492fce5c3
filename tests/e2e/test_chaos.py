"""The chaos suite's short form: under steady load through a running `ebbflow up`, each service (and the whole
control plane, and the nats-server) is SIGKILLed or SIGSTOPped, one fault at a time, and serving must not notice.

For each fault `benchmarks/chaos.py` (the long form, with 20 s stops and every fault) records requests sent,
succeeded and failed with codes, and the seconds until the supervisor has the service back (it fails when a
killed service does not come back, restart counted, within 90 s). Asserted here: 0 failed requests, desired ==
ready again, no scale-down caused by the missing data (a fixed fleet of 2), no replica started by a fault (the
restarted actuator adopts them), and no process left once the stack has stopped; then SIGTERM of `ebbflow up`
itself under the same load fails no call it had admitted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import CONTROL_PLANE, run, table

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STOP_S = 5.0
"""How long a SIGSTOPped process stays frozen in the short form (the long form: 20 s)."""


def test_killing_or_freezing_any_service_fails_no_request(tmp_path: Path):
    outcomes, left = run((*CONTROL_PLANE, "router", "control-plane", "nats"), ("SIGKILL", "SIGSTOP"), STOP_S, tmp_path)
    print("\n" + table(outcomes))
    *faults, stopping = outcomes
    for o in faults:
        assert o.sent > 0, f"no requests went through during {o.signal} of {o.fault}"
        assert not o.failed, f"{o.signal} of {o.fault}: {o.failed}"
        assert o.desired == o.ready == 2, f"{o.signal} of {o.fault}: desired {o.desired}, ready {o.ready}"
        assert o.new_replicas == 0, f"{o.signal} of {o.fault} started {o.new_replicas} replica(s)"
    assert len(faults) == 13
    # SIGTERM of `ebbflow up` itself under load: every call it had admitted is answered.
    assert (stopping.fault, stopping.signal) == ("ebbflow up", "SIGTERM") and stopping.notes[0] == "exit code 0", stopping
    assert not stopping.failed, f"calls admitted before SIGTERM of ebbflow up failed: {stopping.notes}"
    assert not left, f"left running after ebbflow up stopped: {left}"
