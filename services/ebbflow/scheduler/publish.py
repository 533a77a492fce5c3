"""Where the scheduler's decisions go: the desired state, the `DECISIONS` stream, and each model's latest evaluation.

The desired state is written with compare-and-set on the KV revision it was
read at (its generation), so two schedulers cannot interleave: a write based
on a stale revision fails and is recomputed on the next tick. Each change is
published with its inputs (scheduler.explain) under a message id of its
generation, so a retried publish is not a second decision; a publish NATS does
not take is retried until it does (runtime.landing), so a decision whose
desired state was written is not missing from the record.

Only the scheduler holding the leadership lease writes: `leads` is asked
again just before each write, and a write refused by compare-and-set (a
deposed leader's in flight) is dropped, never retried; the next leader
decides from what is in KV.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Sequence

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, Status, StatusCode

from ebbflow.runtime import subjects, tracing
from ebbflow.runtime.bus import Bus
from ebbflow.runtime.landing import Landing
from ebbflow.scheduler.core import Decision, driver
from ebbflow.v1 import scheduling_pb2

if TYPE_CHECKING:
    from ebbflow.scheduler.service import SchedulerMetrics

log = logging.getLogger(__name__)
TRACER = tracing.tracer(__name__)


def _desired(model: str, decision: Decision, decided_at_unix_s: float, vertical: scheduling_pb2.VerticalDecision | None = None) -> scheduling_pb2.DesiredState:
    return scheduling_pb2.DesiredState(
        model=model,
        horizontal=scheduling_pb2.HorizontalDecision(replicas=decision.replicas),
        vertical=vertical,
        reason=decision.reason,
        decided_at_unix_s=decided_at_unix_s,
    )


class Publisher:
    """Writes and publishes one scheduler's decisions, and keeps what `explain` asks about."""

    def __init__(self, bus: Bus, metrics: "SchedulerMetrics", leads: Callable[[], bool] = lambda: True) -> None:
        self.bus = bus
        self.metrics = metrics
        self.leads = leads
        """Whether this scheduler may decide now (scheduler.leadership)."""
        self.evaluations: dict[str, scheduling_pb2.ScalingDecision] = {}
        """Each model's latest evaluation (holds and no-changes included), with the inputs it can be recomputed from."""
        self._advice: dict[str, tuple[int, int]] = {}
        self.records = Landing(bus, None, "decision record")

    def forget(self) -> None:
        """Leadership lost: the latest evaluations and advice are the next leader's to make."""
        self.evaluations.clear()
        self._advice.clear()

    async def record_missed(self, model: str, current: scheduling_pb2.DesiredState, revision: int) -> None:
        """On taking over (or starting): a desired state whose writer stopped between writing it and recording it
        is recorded now, so `DECISIONS` holds every generation. Its inputs died with that scheduler: `explain`
        says it cannot recompute it."""
        try:
            last = await self.bus.js.get_last_msg(subjects.DECISIONS_STREAM, subjects.decision_subject(model))
            recorded: scheduling_pb2.ScalingDecision | None = scheduling_pb2.ScalingDecision.FromString(last.data or b"")
        except NotFoundError:
            recorded = None
        except Exception as error:  # best effort (an undecodable record too): the decision itself is in KV
            log.debug("reading the last decision of %s failed: %s", model, error)
            return
        if recorded is not None and (recorded.advisory or recorded.generation >= revision):
            return
        previous = recorded.desired.horizontal.replicas if recorded is not None else 0
        desired = scheduling_pb2.DesiredState()
        desired.CopyFrom(current)
        desired.generation = revision
        record = scheduling_pb2.ScalingDecision(model=model, generation=revision, previous_replicas=previous, desired=desired)
        log.warning("%s: generation %d was written but never recorded (its scheduler stopped in between); recording it now", model, revision)
        await self.bus.js.publish(subjects.decision_subject(model), record.SerializeToString(), headers={"Nats-Msg-Id": f"{model}:{revision}"})

    def note_evaluation(
        self, model: str, revision: int, current: int, decision: Decision, inputs: scheduling_pb2.DecisionInputs, advisory: bool
    ) -> None:
        """Keep the model's latest evaluation, changed or not, so `explain` can say why it has what it has now."""
        self.evaluations[model] = scheduling_pb2.ScalingDecision(
            model=model,
            generation=revision,
            previous_replicas=current,
            desired=_desired(model, decision, time.time()),
            inputs=inputs,
            advisory=advisory,
        )

    async def advise(self, model: str, decision: Decision, inputs: scheduling_pb2.DecisionInputs, current: int) -> None:
        """Advisory mode: publish the decision (when the advice changes), write nothing, carry out nothing."""
        if self._advice.get(model) == (decision.replicas, current) or not self.leads():
            return
        self._advice[model] = (decision.replicas, current)
        decided = time.time()
        record = scheduling_pb2.ScalingDecision(model=model, previous_replicas=current, desired=_desired(model, decision, decided), inputs=inputs, advisory=True)
        log.info("%s (advisory): would go %d -> %d replicas: %s", model, current, decision.replicas, decision.reason)
        self.records.publish(subjects.decision_subject(model), record.SerializeToString(), f"{model}:advice:{decided:.6f}")
        await self.records.land()

    async def write(
        self,
        model: str,
        revision: int,
        current: int,
        decision: Decision,
        vertical: scheduling_pb2.VerticalDecision,
        inputs: scheduling_pb2.DecisionInputs,
        create: bool,
        read: Sequence[SpanContext | None] = (),
    ) -> None:
        """Write the desired state over `revision` (or create it), then publish the decision with its generation.

        With tracing on, the write is a `decide` span, the root of the decision's trace, linked to what it `read`
        (the load snapshot's and the forecast's spans); its context travels in the desired state.
        """
        desired = _desired(model, decision, time.time(), vertical)
        if not self.leads():
            log.info("%s: not written: this scheduler no longer leads", model)
            return
        span = None
        if tracing.enabled():
            span = TRACER.start_span("decide", context=Context(), links=tracing.links(*read))
            tracing.set_attributes(span, {
                "ebbflow.model": model, "ebbflow.replicas.from": current, "ebbflow.replicas.to": decision.replicas,
                "ebbflow.reason": decision.reason, "ebbflow.revision": revision,
            })
            desired.traceparent = tracing.traceparent(span)
        try:
            await self._write(model, revision, current, desired, inputs, create, span, driver(decision, current))
        finally:
            if span is not None:
                span.end()

    async def _write(
        self,
        model: str,
        revision: int,
        current: int,
        desired: scheduling_pb2.DesiredState,
        inputs: scheduling_pb2.DecisionInputs,
        create: bool,
        span: Span | None,
        driven_by: str,
    ) -> None:
        try:
            if create:
                generation = await self.bus.desired.create(model, desired.SerializeToString())
            else:
                generation = await self.bus.desired.update(model, desired.SerializeToString(), last=revision)
        except KeyWrongLastSequenceError:
            self.metrics.conflicts.labels(model).inc()
            log.warning("desired state of %s changed under us (another scheduler?); recomputing next tick", model)
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, "refused: the desired state changed under us"))
            return
        except Exception as error:  # the JetStream "key exists" error on create races too
            log.warning("writing desired state of %s failed: %s", model, error)
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, f"write failed: {error}"))
            return
        if span is not None:
            span.set_attribute("ebbflow.generation", generation)
        desired.generation = generation
        self.metrics.decisions.labels(model).inc()
        direction = "up" if desired.horizontal.replicas > current else "down" if desired.horizontal.replicas < current else "shape"
        self.metrics.drivers.labels(model, direction, driven_by).inc()
        self.metrics.desired.labels(model).set(desired.horizontal.replicas)
        log.info("%s: %d -> %d replicas (generation %d): %s", model, current, desired.horizontal.replicas, generation, desired.reason)
        record = scheduling_pb2.ScalingDecision(model=model, generation=generation, previous_replicas=current, desired=desired, inputs=inputs)
        self.records.publish(subjects.decision_subject(model), record.SerializeToString(), f"{model}:{generation}")
        await self.records.land()
