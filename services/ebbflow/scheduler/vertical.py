"""vertical_auto's choice of replica shape (instances x max batch size): pure, from every candidate shape's curves.

The shape chosen is the one that serves the demand (the current rate, or the
forecast's peak over the lead when higher) within the SLO for the fewest GPUs
(scheduler.capacity.choose_shape); the shape in force stays while any
candidate's curves are still being measured, while they cannot be measured at
all, or while load is unknown. The shell gathers the candidates' curves (and
starts measuring those it lacks) into `ShapeInputs`; a decision records them
by their keys in the `capacity` bucket, so `explain` chooses again from the
same curves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ebbflow.policy import ModelPolicy
from ebbflow.scheduler.budget import gpus_per_replica
from ebbflow.scheduler.capacity import Shape, choose_shape
from ebbflow.scheduler.core import LoadView, forecast_peak

if TYPE_CHECKING:
    from ebbflow.scheduler.capacity import CapacityModel


@dataclass(frozen=True)
class ShapeCurves:
    """One candidate shape's capacity curves."""

    shape: Shape
    key: str = ""
    """Where its curves are stored (the `capacity` bucket); "" while they are not measured."""
    model: "CapacityModel | None" = None
    """The curves; None while they are being measured."""


@dataclass(frozen=True)
class ShapeInputs:
    """What vertical_auto chooses from, besides the load."""

    policy: ModelPolicy
    """Resolved (settings left at 0 taken from the model's config), before the choice."""
    in_force: Shape
    """The shape of the desired state in force (the policy's before the first one)."""
    candidates: tuple[ShapeCurves, ...]
    """Every shape within the policy's bounds (candidate_shapes), with its curves."""
    unavailable: str = ""
    """Why no shape's curves can be measured (the model's config or its latency profile is missing); "" when they can."""
    largest_gpu_gb: float = 0.0
    """The inventory's largest GPU, GB (0: no inventory, a replica per GPU): what a shape costs."""


def batching(policy: ModelPolicy) -> bool:
    """A reload resizes batching, never switches it on or off."""
    return policy.max_batch_size > 0


def in_force_shape(policy: ModelPolicy, instances_in_force: int, max_batch_in_force: int) -> Shape:
    """The shape in force: the desired state's (0s: none yet), else the policy's."""
    instances = instances_in_force or max(1, policy.instances_per_replica)
    return Shape(instances, (max_batch_in_force or policy.max_batch_size) if batching(policy) else 1)


def candidate_shapes(policy: ModelPolicy) -> list[Shape]:
    """Every shape vertical_auto may choose: instances 1..most, batches the powers of two up to the largest."""
    most_instances, largest_batch = policy.vertical_bounds
    batches = [2**k for k in range(11) if 2**k <= largest_batch] if batching(policy) else [1]
    return [Shape(i, b) for i in range(1, most_instances + 1) for b in batches]


def with_shape(policy: ModelPolicy, shape: Shape) -> ModelPolicy:
    return replace(policy, instances_per_replica=shape.instances, max_batch_size=shape.max_batch if batching(policy) else policy.max_batch_size)


def choose_vertical(inputs: ShapeInputs, load: LoadView | None, lead_s: float, now_s: float) -> tuple[ModelPolicy, str]:
    """The policy with the shape chosen, and why."""
    policy, in_force = inputs.policy, inputs.in_force
    keeping = f"vertical: keeping {in_force.instances}x{in_force.max_batch}"
    if inputs.unavailable:
        return with_shape(policy, in_force), f"{keeping}: {inputs.unavailable}"
    models = {c.shape: c.model for c in inputs.candidates if c.model is not None}
    if len(models) < len(inputs.candidates):
        unmeasured = len(inputs.candidates) - len(models)
        return with_shape(policy, in_force), f"{keeping} while {unmeasured} of {len(inputs.candidates)} shapes' curves are measured"
    if load is None or not load.fresh:
        return with_shape(policy, in_force), ""
    peak, _ = forecast_peak(load, policy, lead_s, now_s)
    demand = max(load.arrival_rps, peak or 0.0)
    chosen, why = choose_shape(models, in_force, demand, lambda shape: gpus_per_replica(inputs.largest_gpu_gb, with_shape(policy, shape)))
    return with_shape(policy, chosen), why
