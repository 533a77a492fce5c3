"""The fleet GPU budget: what a replica of a policy costs in GPUs, and how the budget is shared out. Pure.

Models of higher priority take what they want first (ties by name); a model
gets the room left after them. The scheduler's shell keeps what each model
last wanted (its `Demand`) and passes the others' to `budget_for`; a decision
records those inputs (the budget, the inventory's largest GPU, the others'
demands), so `explain` shares the budget out again instead of trusting the
cap it was given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ebbflow.policy import ModelPolicy


@dataclass(frozen=True)
class Demand:
    """What one model wants from the fleet budget."""

    model: str
    priority: int
    replicas: int
    gpus_per_replica: float


@dataclass(frozen=True)
class BudgetInputs:
    """What one model's share of the fleet budget is computed from."""

    budget_gpus: float
    """The fleet budget, GPUs (> 0)."""
    others: tuple[Demand, ...]
    """What every other model with a policy last wanted (before the budget)."""
    largest_gpu_gb: float = 0.0
    """The inventory's largest GPU, GB (0: no inventory, a replica per GPU): what this model's replica costs."""


def replica_memory_gb(largest_gpu_gb: float, policy: ModelPolicy) -> float:
    """GPU memory one replica of the policy takes: its instances' memory, or a whole (largest) GPU when the policy
    gives none; 0 without an inventory (largest_gpu_gb 0)."""
    if largest_gpu_gb <= 0:
        return 0.0
    instances = max(1, policy.instances_per_replica)
    per_instance = policy.gpu_memory_gb_per_instance
    return min(largest_gpu_gb, instances * per_instance) if per_instance > 0 else largest_gpu_gb


def gpus_per_replica(largest_gpu_gb: float, policy: ModelPolicy) -> float:
    """Fraction of a GPU one replica of the policy takes (1 without an inventory: a replica per GPU)."""
    return replica_memory_gb(largest_gpu_gb, policy) / largest_gpu_gb if largest_gpu_gb > 0 else 1.0


def budget_caps(demands: Sequence[Demand], budget_gpus: float) -> dict[str, tuple[int, str]]:
    """Replicas each model may have under a fleet budget of GPUs: higher priority first (ties by name), each
    taking what it wants of what is left. Returns model -> (cap, why), the why naming who took the rest."""
    caps: dict[str, tuple[int, str]] = {}
    left, takers = float(budget_gpus), []
    for demand in sorted(demands, key=lambda d: (-d.priority, d.model)):
        room = math.floor(left / demand.gpus_per_replica + 1e-9) if demand.gpus_per_replica > 0 else demand.replicas
        taken = budget_gpus - left
        who = ", ".join(takers[:3]) + (" ..." if len(takers) > 3 else "")
        why = f"fleet budget {budget_gpus:g} GPUs, {taken:g} taken by models of higher priority or earlier name ({who or 'none'}): room for {room}"
        caps[demand.model] = (room, why)
        take = min(demand.replicas, room)
        left -= take * demand.gpus_per_replica
        if take:
            takers.append(f"{demand.model} {take}x{demand.gpus_per_replica:g}")
    return caps


def budget_for(inputs: BudgetInputs, policy: ModelPolicy) -> tuple[int, str]:
    """The most replicas of the (resolved, shaped) policy the budget leaves its model after models of higher
    priority, and why."""
    own = Demand(policy.model, policy.priority, 0, gpus_per_replica(inputs.largest_gpu_gb, policy))
    return budget_caps([*inputs.others, own], inputs.budget_gpus)[policy.model]
