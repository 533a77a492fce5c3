"""The scheduler's APIs: policies (read, write, delete, import a Kubernetes HPA) and the decision audit trail (list, explain)."""

from __future__ import annotations

import hmac
import logging
import time
from collections import deque
from dataclasses import replace
from typing import Collection

import grpc
import yaml
from google.protobuf.message import DecodeError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from ebbflow.policy import (
    POLICY_FIELDS,
    ModelPolicy,
    dropped_pin,
    keep_pin,
    merge_policy,
    patch_from_proto,
    policy_changes,
    policy_from_proto,
    policy_to_proto,
    unknown_models,
)
from ebbflow.runtime import subjects
from ebbflow.runtime.bus import Bus, replay_subject
from ebbflow.runtime.errors import ConfigError
from ebbflow.runtime.registry import RegistryView
from ebbflow.runtime.triton import vertical_of
from ebbflow.runtime.wire import state_name
from ebbflow.scheduler.budget import budget_for
from ebbflow.scheduler.curves import read_stored
from ebbflow.scheduler.explain import curves_read, recompute
from ebbflow.scheduler.hpa import policy_from_hpa
from ebbflow.scheduler.service import Scheduler
from ebbflow.v1 import policy_pb2, policy_pb2_grpc, scheduling_pb2, scheduling_pb2_grpc


async def require_admin(token: str, context: grpc.aio.ServicerContext, what: str = "changing policies") -> None:
    """With an admin token configured, the call must carry `authorization: Bearer <token>`."""
    if not token:
        return
    sent = dict(context.invocation_metadata() or ()).get("authorization", "")
    if not sent:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{what} needs the admin token: metadata 'authorization: Bearer <token>'")
    scheme, _, value = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the admin token sent is not the configured one")


log = logging.getLogger(__name__)

DELETE_SETTLE_S = 5.0
"""How long DeletePolicy waits for the scheduler's view to drop the policy before it removes the desired state."""


def patched_fields(request: policy_pb2.SetPolicyRequest) -> list[str]:
    """The fields a SetPolicy patch changes: its update_mask, or (AIP-134) every field of the policy that is not zero."""
    if request.HasField("update_mask") and request.update_mask.paths:
        names = list(request.update_mask.paths)
    else:
        names = [descriptor.name for descriptor, _ in request.policy.ListFields()]
    unknown = sorted(set(names) - set(POLICY_FIELDS))
    if unknown:
        raise ConfigError(f"update_mask names unknown field(s): {', '.join(unknown)}; known: {', '.join(POLICY_FIELDS)}")
    return [name for name in names if name != "model"]


async def config_policies(bus: Bus, policies: tuple[ModelPolicy, ...], repository: Collection[str]) -> tuple[ModelPolicy, ...]:
    """The config file's policies as they are to be imported at start.

    A policy for a model the repository lacks is refused (ConfigError naming the models there are); a pin set
    at run time that is still active is kept over a config file that has none, so a restart never drops it.
    """
    why = unknown_models((p.model for p in policies), repository)
    if why:
        raise ConfigError(f"config file models: {why}")
    kept = []
    for policy in policies:
        stored = None
        try:
            entry = await bus.policies.get(policy.model)
            stored = policy_from_proto(policy_pb2.ScalingPolicy.FromString(entry.value or b""))
        except (KeyNotFoundError, DecodeError, ConfigError):
            pass
        merged = keep_pin(policy, stored, time.time())
        if merged is not policy:
            log.info("policy of %s: keeping the pin at %d by %s (%s) over the config file", policy.model, merged.pin_replicas, merged.pin_by, merged.pin_reason)
        kept.append(merged)
    return tuple(kept)


async def import_policies(bus: Bus, policies: tuple[ModelPolicy, ...]) -> None:
    """Write the config file's policies into the `policies` bucket, logging what changed."""
    for policy in policies:
        value = policy_to_proto(policy.validate()).SerializeToString()
        try:
            old = await bus.policies.get(policy.model)
            if old.value == value:
                continue
            log.info("policy of %s changed by the config file", policy.model)
        except KeyNotFoundError:
            log.info("policy of %s imported from the config file", policy.model)
        await bus.policies.put(policy.model, value)


class PolicyApi(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, bus: Bus, view: RegistryView, admin_token: str = "") -> None:
        self.bus = bus
        self.view = view
        self.admin_token = admin_token

    async def _stored(self, model: str, context: grpc.aio.ServicerContext) -> policy_pb2.ScalingPolicy:
        try:
            entry = await self.bus.policies.get(model)
        except KeyNotFoundError:
            known = ", ".join(sorted(self.view.policies)) or "none"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no policy for model '{model}'; policies exist for: {known}")
        return policy_pb2.ScalingPolicy.FromString(entry.value or b"")

    async def _require_model(self, model: str, context: grpc.aio.ServicerContext, hint: str = "") -> None:
        """A policy only for a model the repository serves (the `models` bucket): NOT_FOUND naming the ones it does."""
        why = unknown_models([model], self.view.model_configs)
        if why:
            await context.abort(grpc.StatusCode.NOT_FOUND, why + hint)

    async def _read(self, model: str, context: grpc.aio.ServicerContext) -> tuple[ModelPolicy | None, int]:
        """The stored policy and its revision (None, 0 when there is none)."""
        try:
            entry = await self.bus.policies.get(model)
        except KeyNotFoundError:
            return None, 0
        try:
            return policy_from_proto(policy_pb2.ScalingPolicy.FromString(entry.value or b"")), entry.revision or 0
        except (DecodeError, ConfigError) as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"the stored policy of '{model}' is unreadable ({error}); set it whole with replace")
        raise AssertionError("unreachable")

    async def _write(self, policy: ModelPolicy, revision: int, context: grpc.aio.ServicerContext) -> policy_pb2.ScalingPolicy:
        """Compare-and-set on the revision read, so two concurrent patches cannot lose one another's fields."""
        stored = policy_to_proto(policy)
        try:
            if revision:
                await self.bus.policies.update(policy.model, stored.SerializeToString(), last=revision)
            else:
                await self.bus.policies.create(policy.model, stored.SerializeToString())
        except KeyWrongLastSequenceError:
            await context.abort(grpc.StatusCode.ABORTED, f"the policy of '{policy.model}' changed while this call read it; send the change again")
        return stored

    async def GetPolicy(self, request: policy_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext) -> policy_pb2.GetPolicyResponse:
        return policy_pb2.GetPolicyResponse(policy=await self._stored(request.model, context))

    async def ListPolicies(self, request: policy_pb2.ListPoliciesRequest, context: grpc.aio.ServicerContext) -> policy_pb2.ListPoliciesResponse:
        return policy_pb2.ListPoliciesResponse(policies=[self.view.policies[m] for m in sorted(self.view.policies)])

    async def SetPolicy(self, request: policy_pb2.SetPolicyRequest, context: grpc.aio.ServicerContext) -> policy_pb2.SetPolicyResponse:
        """A patch over the stored policy (or the defaults), or with `replace` the policy whole; a pin is never dropped silently."""
        await require_admin(self.admin_token, context)
        model = request.policy.model
        if not model:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "policy.model is empty: name the model the policy scales")
        await self._require_model(model, context)
        stored, revision = await self._read(model, context)
        try:
            if request.replace:
                policy = policy_from_proto(request.policy)
            else:
                changes = patch_from_proto(request.policy, patched_fields(request))
                policy = merge_policy(stored or ModelPolicy(model=model), changes)
        except ConfigError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if request.replace and not request.unpin:
            why = dropped_pin(stored, policy, time.time())
            if why:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
        changes_made = policy_changes(stored, policy)
        if stored is not None and not changes_made:
            return policy_pb2.SetPolicyResponse(policy=policy_to_proto(policy))
        return policy_pb2.SetPolicyResponse(policy=await self._write(policy, revision, context), changes=changes_made)

    async def DeletePolicy(self, request: policy_pb2.DeletePolicyRequest, context: grpc.aio.ServicerContext) -> policy_pb2.DeletePolicyResponse:
        """Stop managing the model: the policy goes, then its desired state, so the actuator drains and stops every replica."""
        await require_admin(self.admin_token, context)
        await self._stored(request.model, context)
        await self.bus.policies.delete(request.model)
        # The scheduler decides only for models with a policy: once its view has dropped this one it writes no new
        # desired state (a write it had under way fails its revision check), and removing the desired state is what
        # the actuator reads as zero replicas.
        deadline = time.monotonic() + DELETE_SETTLE_S
        while request.model in self.view.policies and time.monotonic() < deadline:
            await self.view.wait_changed(max(0.0, deadline - time.monotonic()))
        await self.bus.desired.delete(request.model)
        return policy_pb2.DeletePolicyResponse()

    async def ImportHpa(self, request: policy_pb2.ImportHpaRequest, context: grpc.aio.ServicerContext) -> policy_pb2.ImportHpaResponse:
        if request.apply:
            await require_admin(self.admin_token, context)
        try:
            manifest = yaml.safe_load(request.manifest)
        except yaml.YAMLError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the manifest is not YAML or JSON: {error}")
        try:
            verticals = {name: vertical_of(config) for name, config in self.view.model_configs.items()}
            policy, notes = policy_from_hpa(manifest, request.model, verticals=verticals)
        except ConfigError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        await self._require_model(policy.model, context, "" if request.model else "; name it with the request's model (ebbflow policy import --model)")
        stored, revision = await self._read(policy.model, context)
        kept = keep_pin(policy, stored, time.time())
        if kept is not policy:
            notes.append(f"the active pin at {kept.pin_replicas} replicas by {kept.pin_by} ({kept.pin_reason}) is kept; `ebbflow policy unpin` releases it")
            policy = kept
        if request.apply:
            stored_proto = await self._write(policy, revision, context)
        else:
            stored_proto = policy_to_proto(policy)
        return policy_pb2.ImportHpaResponse(policy=stored_proto, notes=notes, applied=request.apply)


class SchedulerApi(scheduling_pb2_grpc.SchedulerServiceServicer):
    """The plan (desired state, budget, slots) and the audit trail: decisions from the `DECISIONS` stream, and their recomputation."""

    def __init__(self, bus: Bus, view: RegistryView | None = None, scheduler: Scheduler | None = None) -> None:
        self.bus = bus
        self.view = view
        self.scheduler = scheduler

    async def GetPlan(self, request: scheduling_pb2.GetPlanRequest, context: grpc.aio.ServicerContext) -> scheduling_pb2.GetPlanResponse:
        if self.view is None or self.scheduler is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this process runs no scheduler")
        view, scheduler = self.view, self.scheduler
        response = scheduling_pb2.GetPlanResponse(nodes=[f"{n.name}:{n.gpus}x{n.gpu_memory_gb:g}" for n in scheduler.nodes], gpu_budget=scheduler.budget_gpus)
        # A standby answers from the desired state in KV (its wanted replicas are the desired ones): leading says which.
        response.leading, response.leader, response.instance_id = scheduler.leads(), scheduler.leadership.holder, scheduler.leadership.instance_id
        slots = set()
        for model in sorted(view.policies):
            policy = scheduler.resolved(model, policy_from_proto(view.policies[model]))
            plan = scheduling_pb2.ModelPlan(model=model, priority=policy.priority, advisory=policy.mode == "advisory")
            try:
                entry = await self.bus.desired.get(model)
                plan.desired.ParseFromString(entry.value or b"")
                plan.desired.generation = entry.revision or 0
            except (KeyNotFoundError, DecodeError):
                pass
            if plan.desired.vertical.instances_per_replica:  # the shape in force (vertical_auto may have chosen it)
                policy = replace(policy, instances_per_replica=plan.desired.vertical.instances_per_replica)
            plan.gpus_per_replica = scheduler.gpus_per_replica(policy)
            demand = scheduler.demand_of(model)
            plan.wanted_replicas = demand.replicas if demand is not None else plan.desired.horizontal.replicas
            budget = scheduler.budget_inputs(model)
            if budget is not None:
                plan.budget_note = budget_for(budget, policy)[1]
            for replica in sorted(view.of_model(model), key=lambda r: r.replica_id):
                state = state_name(replica.state)
                plan.replicas.add(replica_id=replica.replica_id, gpu_slot=replica.gpu_slot, state=state)
                if replica.gpu_slot:
                    slots.add(replica.gpu_slot)
            response.gpus_wanted += plan.wanted_replicas * plan.gpus_per_replica
            response.gpus_desired += plan.desired.horizontal.replicas * plan.gpus_per_replica
            response.models.append(plan)
        response.gpus_in_use = len(slots)
        return response

    async def _decisions(self, model: str, keep: int) -> list[scheduling_pb2.ScalingDecision]:
        """The newest `keep` decisions of a model, oldest first (undecodable ones skipped)."""
        found: deque[scheduling_pb2.ScalingDecision] = deque(maxlen=keep)
        for _, data in await replay_subject(self.bus.js, subjects.DECISIONS_STREAM, subjects.decision_subject(model)):
            try:
                found.append(scheduling_pb2.ScalingDecision.FromString(data))
            except DecodeError:
                continue
        return list(found)

    async def ListDecisions(self, request: scheduling_pb2.ListDecisionsRequest, context: grpc.aio.ServicerContext) -> scheduling_pb2.ListDecisionsResponse:
        return scheduling_pb2.ListDecisionsResponse(decisions=await self._decisions(request.model, request.limit or 20))

    async def Explain(self, request: scheduling_pb2.ExplainRequest, context: grpc.aio.ServicerContext) -> scheduling_pb2.ExplainResponse:
        # Without a generation: the latest evaluation (a hold or a no-change too), so the answer is why the model
        # has what it has now; the latest recorded change where no scheduler runs in this process, or where it
        # stands by (a standby evaluates nothing; it forgets its evaluations when it loses the lease).
        evaluation = self.scheduler.evaluations.get(request.model) if self.scheduler is not None and not request.generation else None
        if evaluation is not None:
            decision = evaluation
        else:
            decisions = await self._decisions(request.model, 100_000 if request.generation else 1)
            chosen = [d for d in decisions if not request.generation or d.generation == request.generation]
            if not chosen:
                what = f"generation {request.generation}" if request.generation else "any decision"
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no recorded decision for model '{request.model}' at {what}")
            decision = chosen[-1]
        inputs = request.inputs if request.HasField("inputs") else decision.inputs
        if not inputs.HasField("policy"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this decision was recorded without its inputs (an older scheduler); it cannot be recomputed")
        try:
            policy = policy_from_proto(inputs.policy)
        except ConfigError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the inputs' policy is invalid: {error}")
        curves = {}
        for key, calibration in sorted(curves_read(inputs)):
            capacity = await read_stored(self.bus.capacity, key, calibration)
            if capacity is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"the capacity curves {key} this decision was sized on are no longer stored")
            curves[key, calibration] = capacity
        recomputed = recompute(inputs, policy, curves)
        replicas, reason = recomputed.replicas, recomputed.reason
        return scheduling_pb2.ExplainResponse(
            decision=decision,
            recomputed_replicas=replicas,
            recomputed_reason=reason,
            matches=replicas == decision.desired.horizontal.replicas and reason == decision.desired.reason,
            evaluation=evaluation is not None,
        )
