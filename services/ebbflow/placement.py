"""Which GPU each replica goes on: a pure placement core.

Objectives, in order:
1. memory fits (hard): a GPU is shared by memory; replicas on it never exceed it;
2. a model with two or more replicas spans two or more nodes when it can;
3. running replicas stay where they are (a move is a cold start): only
   replicas beyond a model's wanted count are removed, and new ones are added;
4. fewest GPUs: best fit among GPUs already in use before opening another.
A fleet GPU budget caps the GPUs in use; when demand exceeds it, models of
lower priority give way first, and the result says which replicas could not
be placed and why.

Greedy by priority, then memory (first-fit decreasing with best fit), with
GPUs in use kept sorted by free memory, so placing 10,000 replicas takes well
under a second (benchmarks/scheduler_scale.py --placement).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

GpuId = tuple[str, int]  # (node, index)


@dataclass(frozen=True)
class Node:
    name: str
    gpus: int
    gpu_memory_gb: float


@dataclass(frozen=True)
class Want:
    """A model's replicas: how many, how much GPU memory each, and how important it is (higher wins)."""

    model: str
    replicas: int
    memory_gb: float
    priority: int = 0


@dataclass
class Plan:
    # (model, replica index) -> GPU.
    slots: dict[tuple[str, int], GpuId] = field(default_factory=dict)
    # model -> replicas that could not be placed, with the reason.
    unplaced: dict[str, tuple[int, str]] = field(default_factory=dict)
    gpus_used: int = 0
    lower_bound: int = 0
    moves: int = 0

    def replicas_of(self, model: str) -> list[GpuId]:
        return [gpu for (m, _), gpu in sorted(self.slots.items()) if m == model]


def place(
    nodes: Sequence[Node],
    wants: Sequence[Want],
    current: Mapping[tuple[str, int], GpuId] | None = None,
    gpu_budget: int | None = None,
) -> Plan:
    """A placement for `wants` on `nodes`, keeping `current` slots that are still wanted and fit."""
    capacity = {(n.name, i): n.gpu_memory_gb for n in nodes for i in range(n.gpus)}
    free = dict(capacity)
    by_model = {w.model: w for w in wants}
    plan = Plan()
    nodes_of: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    in_use: set[GpuId] = set()

    # 3. Keep what runs and is still wanted (lowest replica indexes first), if it still fits.
    for (model, index), gpu in sorted((current or {}).items()):
        want = by_model.get(model)
        if want is None or index >= want.replicas or gpu not in free or free[gpu] < want.memory_gb:
            continue
        plan.slots[(model, index)] = gpu
        free[gpu] -= want.memory_gb
        nodes_of[model][gpu[0]] += 1
        in_use.add(gpu)

    # GPUs in use, sorted by free memory, for best fit; unused GPUs by node, for opening new ones.
    used_sorted = sorted((free[g], g) for g in in_use)
    unused_by_node: dict[str, list[GpuId]] = defaultdict(list)
    for gpu in sorted(capacity, reverse=True):
        if gpu not in in_use:
            unused_by_node[gpu[0]].append(gpu)
    node_order = sorted(unused_by_node, key=lambda n: -len(unused_by_node[n]))

    def take(gpu: GpuId, memory: float, fresh: bool) -> None:
        if fresh:
            unused_by_node[gpu[0]].remove(gpu)
            in_use.add(gpu)
        else:
            used_sorted.pop(bisect.bisect_left(used_sorted, (free[gpu], gpu)))
        free[gpu] -= memory
        bisect.insort(used_sorted, (free[gpu], gpu))

    def open_gpu(model: str, memory: float) -> GpuId | None:
        """An unused GPU big enough, on a node the model is not on yet when possible."""
        fallback = None
        for name in node_order:
            gpus = unused_by_node[name]
            if not gpus or capacity[gpus[-1]] < memory:
                continue
            if nodes_of[model][name] == 0:
                return gpus[-1]
            fallback = fallback or gpus[-1]
        return fallback

    for want in sorted(wants, key=lambda w: (-w.priority, -w.memory_gb, w.model)):
        for index in range(want.replicas):
            if (want.model, index) in plan.slots:
                continue
            spread_needed = want.replicas >= 2 and len(nodes_of[want.model]) < 2
            chosen: GpuId | None = None
            # 4. Best fit among GPUs in use (the fullest one that still fits) ...
            start = bisect.bisect_left(used_sorted, (want.memory_gb, ("", -1)))
            for position in range(start, min(start + 64, len(used_sorted))):
                _, gpu = used_sorted[position]
                # ... but 2. on a node the model is not on yet while it spans fewer than two.
                if spread_needed and nodes_of[want.model].get(gpu[0]):
                    continue
                chosen = gpu
                break
            fresh, reason = False, ""
            if chosen is None:
                if gpu_budget is None or len(in_use) < gpu_budget:
                    chosen = open_gpu(want.model, want.memory_gb)
                    fresh, reason = chosen is not None, f"no GPU with {want.memory_gb:g} GB free"
                else:
                    reason = f"GPU budget of {gpu_budget} reached; higher-priority models were placed first"
            if chosen is None and spread_needed:
                chosen, fresh = _any_fit(used_sorted, want.memory_gb), False  # spreading is a preference, memory is not
            if chosen is None:
                count, _ = plan.unplaced.get(want.model, (0, ""))
                plan.unplaced[want.model] = (count + 1, reason)
                continue
            take(chosen, want.memory_gb, fresh)
            plan.slots[(want.model, index)] = chosen
            nodes_of[want.model][chosen[0]] += 1
            if current is not None and (want.model, index) in current:
                plan.moves += 1

    plan.gpus_used = len({gpu for gpu in plan.slots.values()})
    memory_per_gpu = max((n.gpu_memory_gb for n in nodes), default=1.0)
    placed_memory = sum(by_model[m].memory_gb for (m, _) in plan.slots)
    plan.lower_bound = math.ceil(placed_memory / memory_per_gpu - 1e-9)
    return plan


def _any_fit(used_sorted: list[tuple[float, GpuId]], memory: float) -> GpuId | None:
    position = bisect.bisect_left(used_sorted, (memory, ("", -1)))
    return used_sorted[position][1] if position < len(used_sorted) else None


# ---- one replica at a time (the actuator); the fleet budget's share-out is scheduler.budget ----


def parse_node(text: str) -> Node:
    """A node from the config's `name:GPUSxMEMORY_GB` (e.g. `gpu-a:4x80`)."""
    name, _, spec = text.strip().partition(":")
    count, _, memory = spec.lower().partition("x")
    try:
        node = Node(name, int(count), float(memory))
    except ValueError:
        raise ValueError(f"a node is name:GPUSxMEMORY_GB (e.g. gpu-a:4x80), got {text!r}") from None
    if not name or node.gpus < 1 or node.gpu_memory_gb <= 0:
        raise ValueError(f"a node needs a name, >= 1 GPU and memory > 0 GB, got {text!r}")
    return node


def slot_name(gpu: GpuId) -> str:
    return f"{gpu[0]}/gpu{gpu[1]}"


def parse_slot(text: str) -> GpuId | None:
    node, _, index = text.rpartition("/gpu")
    return (node, int(index)) if node and index.isdigit() else None


def largest_gpu_gb(nodes: Sequence[Node]) -> float:
    """Memory of the inventory's largest GPU: what a replica of unknown size takes (1 without an inventory)."""
    return max((n.gpu_memory_gb for n in nodes), default=1.0)


def choose_slot(
    nodes: Sequence[Node], used_gb: Mapping[GpuId, float], model_nodes: Mapping[str, int], memory_gb: float, gpu_budget: int = 0
) -> tuple[GpuId | None, str]:
    """The GPU for one new replica of a model, by the placement objectives, or None and why.

    `used_gb`: memory taken on each GPU by live replicas (starting, ready and draining ones all hold it);
    `model_nodes`: the model's live replicas per node. Memory must fit; a model on one node goes to another
    when it can; then the fullest GPU in use that fits (best fit); else an unused GPU, on the node with the
    most of them, unless the fleet already uses `gpu_budget` GPUs (0: no budget).
    """
    gpus = [((n.name, i), n.gpu_memory_gb) for n in nodes for i in range(n.gpus)]
    fits = [(gpu, size - used_gb.get(gpu, 0.0)) for gpu, size in gpus if size - used_gb.get(gpu, 0.0) >= memory_gb - 1e-9]
    if not fits:
        most = max((size - used_gb.get(gpu, 0.0) for gpu, size in gpus), default=0.0)
        return None, f"no GPU has {memory_gb:g} GB free (the most free on one GPU is {most:g} GB, of {len(gpus)} GPUs)"
    spread = sum(1 for k in model_nodes.values() if k > 0) == 1  # on one node only: the next goes elsewhere

    def elsewhere(gpu: GpuId) -> bool:
        return not spread or not model_nodes.get(gpu[0])

    in_use = [(free, gpu) for gpu, free in fits if used_gb.get(gpu, 0.0) > 0]
    unused = [gpu for gpu, _ in fits if used_gb.get(gpu, 0.0) <= 0]
    gpus_in_use = sum(1 for gpu, _ in gpus if used_gb.get(gpu, 0.0) > 0)
    may_open = bool(unused) and (gpu_budget <= 0 or gpus_in_use < gpu_budget)
    unused_per_node: dict[str, int] = defaultdict(int)
    for gpu in unused:
        unused_per_node[gpu[0]] += 1

    def best_fit(candidates: list[tuple[float, GpuId]]) -> GpuId | None:
        return min(candidates)[1] if candidates else None

    def open_one(candidates: list[GpuId]) -> GpuId | None:
        return min(candidates, key=lambda g: (-unused_per_node[g[0]], g)) if candidates else None

    chosen = best_fit([c for c in in_use if elsewhere(c[1])])
    if chosen is None and may_open:
        chosen = open_one([g for g in unused if elsewhere(g)])
    # Spreading is a preference, memory and the budget are not.
    chosen = chosen or best_fit(in_use) or (open_one(unused) if may_open else None)
    if chosen is None:
        return None, f"the GPU budget of {gpu_budget} is in use and no GPU in use has {memory_gb:g} GB free"
    return chosen, ""


@dataclass(frozen=True)
class Placed:
    """A running replica on a GPU."""

    replica_id: str
    model: str
    gpu: GpuId
    memory_gb: float


def consolidation_move(nodes: Sequence[Node], placed: Sequence[Placed]) -> tuple[Placed, GpuId] | None:
    """One move toward fewer GPUs (the fourth objective), or None.

    The least-used GPU is emptied when every replica on it fits, best fit, on other GPUs in use, without
    leaving a model with 2+ replicas on a single node; the first of those moves is returned (one replica
    at a time, as each move is a cold start). Never opens a GPU.
    """
    size = {(n.name, i): n.gpu_memory_gb for n in nodes for i in range(n.gpus)}
    used: dict[GpuId, float] = defaultdict(float)
    on_gpu: dict[GpuId, list[Placed]] = defaultdict(list)
    nodes_of: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for replica in placed:
        used[replica.gpu] += replica.memory_gb
        on_gpu[replica.gpu].append(replica)
        nodes_of[replica.model][replica.gpu[0]] += 1
    if len(on_gpu) < 2:
        return None
    for source in sorted(on_gpu, key=lambda g: (used[g], g)):
        free = {g: size.get(g, 0.0) - used[g] for g in on_gpu if g != source}
        spread = {m: defaultdict(int, counts) for m, counts in nodes_of.items()}
        moves: list[tuple[Placed, GpuId]] = []
        for replica in sorted(on_gpu[source], key=lambda r: (-r.memory_gb, r.replica_id)):
            counts = spread[replica.model]

            def keeps_spread(target: GpuId) -> bool:
                if sum(counts.values()) < 2 or target[0] == replica.gpu[0]:
                    return True
                after = dict(counts)
                after[replica.gpu[0]] -= 1
                after[target[0]] = after.get(target[0], 0) + 1
                return sum(1 for k in after.values() if k) >= min(2, sum(1 for k in counts.values() if k))

            fits = [(free[g], g) for g in free if free[g] >= replica.memory_gb - 1e-9 and keeps_spread(g)]
            if not fits:
                break
            _, target = min(fits)
            free[target] -= replica.memory_gb
            counts[replica.gpu[0]] -= 1
            counts[target[0]] += 1
            moves.append((replica, target))
        else:
            return moves[0]
    return None
