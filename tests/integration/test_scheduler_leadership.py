"""Two schedulers on one real nats-server: one decides through the lease, the standby takes over when the leader
dies (within a lease) or stops cleanly (at once), generations stay contiguous, and a deposed leader stops writing."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from ebbflow.policy import ModelPolicy
from ebbflow.runtime import subjects
from ebbflow.runtime.config import SchedulerConfig
from ebbflow.scheduler.api import SchedulerApi
from ebbflow.scheduler.core import Decision
from ebbflow.scheduler.service import Scheduler, SchedulerMetrics
from ebbflow.v1 import load_pb2, scheduling_pb2
from tests.conftest import wait_for
from tests.integration.conftest import SchedulerBed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

LEASE_S = 2.0
RENEW_S = 0.5
CONFIG = SchedulerConfig(interval_s=0.2, load_window_s=1.0, lease_s=LEASE_S, lease_renew_s=RENEW_S)
POLICY = ModelPolicy(model="llm", max_replicas=8, target_in_flight_per_replica=4, scale_down_delay_s=30, forecast_quantile=0, scale_tolerance=0)


class Running:
    """A scheduler with its own metrics registry, as a separate process would have."""

    def __init__(self, bed: SchedulerBed, name: str) -> None:
        self.registry = CollectorRegistry()
        self.scheduler = Scheduler(CONFIG, bed.bus, bed.view, SchedulerMetrics(self.registry), instance_id=name)
        self.stop, self.task = bed.run(self.scheduler)

    def leads(self) -> bool:
        return self.scheduler.leads()

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def fresh(in_flight: float) -> load_pb2.LoadSnapshot:
    return load_pb2.LoadSnapshot(model="llm", status=load_pb2.DATA_STATUS_FRESH, in_flight=in_flight, arrival_rps=20.0, ready_replicas=1)


def contiguous(decisions: list[scheduling_pb2.ScalingDecision]) -> list[int]:
    generations = [d.generation for d in decisions]
    assert generations == list(range(1, len(generations) + 1)), f"generations with a gap or a repeat: {generations}"
    assert [d.previous_replicas for d in decisions[1:]] == [d.desired.horizontal.replicas for d in decisions[:-1]]
    return generations


async def test_one_of_two_decides_the_standby_takes_over_a_dead_leader_and_at_once_after_a_clean_stop(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    await bed.put_policies(POLICY)
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    load = {"in_flight": 10.0}
    bed.feed(lambda: [fresh(load["in_flight"])])

    a = Running(bed, "a")
    await wait_for(a.leads, 5, "a leading")
    b = Running(bed, "b")
    await wait_for(lambda: any(d.desired.horizontal.replicas == 3 for d in decisions), 10, "10 in flight -> 3 replicas")
    await asyncio.sleep(1.0)  # b is subscribed and ticking: it must still decide nothing
    assert a.leads() and not b.leads()
    assert a.metric("ebbflow_scheduler_leader") == 1 and b.metric("ebbflow_scheduler_leader") == 0
    assert b.metric("ebbflow_scheduler_decisions_total", model="llm") == 0 and not b.scheduler.evaluations
    plan = await SchedulerApi(bed.bus, bed.view, b.scheduler).GetPlan(scheduling_pb2.GetPlanRequest(), None)  # type: ignore[arg-type]
    assert (plan.leading, plan.leader, plan.instance_id) == (False, "a", "b") and plan.models[0].desired.horizontal.replicas == 3

    a.task.cancel()  # dies: no release, its lease is left to expire
    died = time.monotonic()
    await asyncio.gather(a.task, return_exceptions=True)
    await wait_for(b.leads, LEASE_S + 3, "b taking over")
    took_over_s = time.monotonic() - died
    print(f"takeover after the leader's death: {took_over_s:.2f} s (lease {LEASE_S} s, renew {RENEW_S} s)")
    assert took_over_s <= LEASE_S + RENEW_S + 0.5
    assert b.metric("ebbflow_scheduler_leader") == 1
    load["in_flight"] = 30.0
    await wait_for(lambda: decisions[-1].desired.horizontal.replicas == 8, 10, "b deciding 30 in flight -> 8 replicas")
    assert b.metric("ebbflow_scheduler_decisions_total", model="llm") >= 1

    before_c = len(decisions)
    c = Running(bed, "c")
    await asyncio.sleep(0.5)  # c has looked: a standby
    assert not c.leads()
    b.stop.set()  # clean stop: the lease is released
    stopped = time.monotonic()
    await asyncio.gather(b.task, return_exceptions=True)
    await wait_for(c.leads, 5, "c taking over a released lease", poll_s=0.02)
    print(f"takeover after a clean stop: {time.monotonic() - stopped:.2f} s")
    assert time.monotonic() - stopped < LEASE_S / 2, "a released lease is taken at once, not after a lease"
    load["in_flight"] = 14.0  # 4 replicas wanted, but the scale-down waits its delay: c must hold 8, not decide again
    await asyncio.sleep(1.5)

    generations = contiguous(decisions)
    assert len(decisions) == before_c and decisions[-1].desired.horizontal.replicas == 8, "the new leader makes no decision of its own yet"
    assert (await bed.bus.desired.get("llm")).revision == generations[-1]


async def test_a_deposed_leader_stops_writing_at_once_and_a_stale_write_is_refused_not_retried(scheduler_bed: SchedulerBed) -> None:
    bed = scheduler_bed
    await bed.put_policies(POLICY)
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    load = {"in_flight": 10.0}
    bed.feed(lambda: [fresh(load["in_flight"])])
    a = Running(bed, "a")
    await wait_for(lambda: decisions and decisions[-1].desired.horizontal.replicas == 3, 10, "10 in flight -> 3 replicas")

    # Someone else takes the lease (a was paused past its lease, say): a's next look, or the watch at once, deposes it.
    current = await bed.bus.leases.get(subjects.SCHEDULER_LEASE)
    intruder = scheduling_pb2.SchedulerLease(holder="intruder", term=99, lease_s=60.0, renewed_at_unix_s=time.time())
    await bed.bus.leases.update(subjects.SCHEDULER_LEASE, intruder.SerializeToString(), last=current.revision)
    await wait_for(lambda: not a.leads(), RENEW_S + 1, "a deposed")
    assert a.metric("ebbflow_scheduler_leader") == 0 and not a.scheduler.evaluations
    load["in_flight"] = 30.0
    await asyncio.sleep(2.0)
    assert [d.desired.horizontal.replicas for d in decisions] == [1, 3], "a deposed leader decides nothing"

    # A write a deposed leader had in flight: refused before it is sent.
    entry = await bed.bus.desired.get("llm")
    await a.scheduler.evaluate("llm", POLICY)
    assert (await bed.bus.desired.get("llm")).revision == entry.revision

    # And a leader's write on a revision someone else moved past: refused by compare-and-set, counted, not retried.
    # a stops first: still looking, it would take the freed lease before b could.
    a.stop.set()
    await a.task
    b = Scheduler(CONFIG, bed.bus, bed.view, SchedulerMetrics(registry := CollectorRegistry()), instance_id="b")
    await bed.bus.leases.delete(subjects.SCHEDULER_LEASE)
    await b.leadership.look()
    assert b.leads()
    desired = scheduling_pb2.DesiredState(model="llm", horizontal=scheduling_pb2.HorizontalDecision(replicas=5), reason="someone else")
    moved = await bed.bus.desired.update("llm", desired.SerializeToString(), last=entry.revision)
    await b.publisher.write("llm", entry.revision, 3, Decision(valid=True, replicas=4, reason="stale"), scheduling_pb2.VerticalDecision(), scheduling_pb2.DecisionInputs(), create=False)
    assert registry.get_sample_value("ebbflow_scheduler_cas_conflicts_total", {"model": "llm"}) == 1
    assert (await bed.bus.desired.get("llm")).revision == moved
    await b.leadership.release()


async def test_a_generation_written_but_never_recorded_is_recorded_by_the_next_leader(scheduler_bed: SchedulerBed) -> None:
    """The leader died between its desired-state write and its DECISIONS publish: the next one fills the gap."""
    bed = scheduler_bed
    await bed.put_policies(POLICY)
    decisions = await bed.decisions(subjects.decision_subject("llm"))
    load = {"in_flight": 10.0}
    bed.feed(lambda: [fresh(load["in_flight"])])
    a = Running(bed, "a")
    await wait_for(lambda: decisions and decisions[-1].desired.horizontal.replicas == 3, 10, "10 in flight -> 3 replicas")
    a.task.cancel()
    await asyncio.gather(a.task, return_exceptions=True)
    entry = await bed.bus.desired.get("llm")
    unrecorded = scheduling_pb2.DesiredState(model="llm", horizontal=scheduling_pb2.HorizontalDecision(replicas=4), reason="written, then died")
    revision = await bed.bus.desired.update("llm", unrecorded.SerializeToString(), last=entry.revision)
    Running(bed, "b")
    await wait_for(lambda: decisions[-1].generation >= revision, LEASE_S + 5, "the unrecorded generation recorded")
    assert decisions[-1].generation == revision and decisions[-1].desired.reason == "written, then died" and decisions[-1].previous_replicas == 3
    contiguous(decisions)
