"""GPU placement: memory never exceeded, replicas spread over nodes, running replicas kept, budget by priority."""

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from ebbflow.policy import ModelPolicy
from ebbflow.scheduler.budget import Demand, budget_caps
from ebbflow.scheduler.core import DecisionInputs, LoadView, ScalingState, decide
from ebbflow.placement import Node, Placed, Want, choose_slot, consolidation_move, parse_node, parse_slot, place, slot_name

NODES = [Node(f"n{i}", 4, 80.0) for i in range(3)]


def memory_per_gpu(plan, wants):  # type: ignore[no-untyped-def]
    by_model = {w.model: w for w in wants}
    used = defaultdict(float)
    for (model, _), gpu in plan.slots.items():
        used[gpu] += by_model[model].memory_gb
    return used


@settings(max_examples=80)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from([10.0, 20.0, 40.0, 70.0]), st.integers(0, 3)), min_size=1, max_size=12))
def test_memory_never_exceeds_a_gpu_and_everything_that_fits_is_placed(specs):
    wants = [Want(f"m{i}", r, mem, prio) for i, (r, mem, prio) in enumerate(specs)]
    plan = place(NODES, wants)
    assert all(used <= 80.0 + 1e-9 for used in memory_per_gpu(plan, wants).values())
    for want in wants:
        placed = len(plan.replicas_of(want.model))
        missing = plan.unplaced.get(want.model, (0, ""))[0]
        assert placed + missing == want.replicas
    assert plan.gpus_used >= plan.lower_bound


def test_a_model_with_two_replicas_spans_two_nodes_and_small_ones_pack():
    plan = place(NODES, [Want("a", 2, 10.0), Want("b", 4, 10.0)])
    assert len({gpu[0] for gpu in plan.replicas_of("a")}) == 2
    assert len({gpu[0] for gpu in plan.replicas_of("b")}) >= 2
    assert plan.gpus_used == 2  # 60 GB packs onto two GPUs (one per node for the spread)


def test_running_replicas_stay_and_only_the_extra_ones_go():
    first = place(NODES, [Want("a", 3, 30.0)])
    second = place(NODES, [Want("a", 2, 30.0), Want("b", 1, 30.0)], current=first.slots)
    assert second.slots[("a", 0)] == first.slots[("a", 0)] and second.slots[("a", 1)] == first.slots[("a", 1)]
    assert ("a", 2) not in second.slots and second.moves == 0


def test_a_gpu_budget_gives_way_by_priority_and_says_so():
    wants = [Want("low", 3, 80.0, priority=0), Want("high", 3, 80.0, priority=5)]
    plan = place(NODES, wants, gpu_budget=4)
    assert len(plan.replicas_of("high")) == 3 and len(plan.replicas_of("low")) == 1
    count, reason = plan.unplaced["low"]
    assert count == 2 and "budget of 4" in reason and "high" not in plan.unplaced


# ---- one replica at a time, and the fleet budget -------------------------------

NODES = [parse_node("a:2x80"), parse_node("b:2x80")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([10.0, 20.0, 35.0, 40.0, 80.0]), min_size=1, max_size=30))
def test_one_at_a_time_slots_never_exceed_a_gpus_memory(sizes):
    used: dict = {}
    for i, memory in enumerate(sizes):
        gpu, why = choose_slot(NODES, used, {}, memory)
        free = {(n.name, k): n.gpu_memory_gb - used.get((n.name, k), 0.0) for n in NODES for k in range(n.gpus)}
        if gpu is None:
            assert max(free.values()) < memory and "GB free" in why
            continue
        assert free[gpu] >= memory
        used[gpu] = used.get(gpu, 0.0) + memory
    assert all(u <= 80.0 + 1e-9 for u in used.values())


def test_a_second_replica_goes_to_another_node_then_replicas_pack_best_fit():
    used = {("a", 0): 40.0}
    gpu, _ = choose_slot(NODES, used, {"a": 1}, 40.0)
    assert gpu is not None and gpu[0] == "b", "the model's second replica spans a second node"
    gpu, _ = choose_slot(NODES, {("a", 0): 40.0, ("b", 0): 40.0}, {"a": 1, "b": 1}, 40.0)
    assert gpu in (("a", 0), ("b", 0)), "with two nodes covered, fill a GPU in use before opening one"


def test_no_slot_without_memory_or_past_the_budget():
    gpu, why = choose_slot(NODES, {("a", 0): 50.0}, {}, 40.0, gpu_budget=1)
    assert gpu is None and "budget of 1" in why
    full = {(n.name, k): 80.0 for n in NODES for k in range(n.gpus)}
    gpu, why = choose_slot(NODES, full, {}, 10.0)
    assert gpu is None and "no GPU has 10 GB free" in why


def test_slot_names_read_back():
    assert parse_slot(slot_name(("gpu-node-1", 3))) == ("gpu-node-1", 3)
    assert parse_slot("") is None and parse_slot("cpu") is None


def test_the_budget_goes_to_higher_priority_first_and_says_who_took_it():
    caps = budget_caps([Demand("batch", 0, 4, 1.0), Demand("chat", 10, 3, 1.0), Demand("embed", 5, 4, 0.5)], 5)
    assert caps["chat"][0] == 5  # first: the whole budget is room
    assert caps["embed"][0] == 4  # 2 GPUs left, half a GPU each
    assert caps["batch"][0] == 0 and "chat 3x1" in caps["batch"][1] and "embed" in caps["batch"][1]


def test_a_capped_decision_gives_way_and_records_what_it_wanted():
    policy = ModelPolicy(model="batch", max_replicas=8, target_in_flight_per_replica=4, panic_threshold=0, forecast_quantile=0)
    load = LoadView(fresh=True, in_flight=24.0, arrival_rps=10.0)
    decision, _ = decide(DecisionInputs(load, policy, ScalingState(), 1, 0.0, budget=(2, "fleet budget 4 GPUs, 2 taken by chat")))
    assert decision.replicas == 2 and decision.demand == 6
    assert "GPU budget caps it at 2 of 6: fleet budget 4 GPUs, 2 taken by chat" in decision.reason
    free, _ = decide(DecisionInputs(load, policy, ScalingState(), 1, 0.0, budget=(8, "room")))
    assert free.replicas == free.demand == 6 and "GPU budget" not in free.reason


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.sampled_from([0.25, 0.5, 1.0])), min_size=1, max_size=6), st.integers(0, 12))
def test_the_budget_is_never_exceeded_and_a_model_only_gives_way_to_higher_ones(entries, budget):
    demands = [Demand(f"m{i}", prio, want, g) for i, (prio, want, g) in enumerate(entries)]
    caps = budget_caps(demands, budget)
    granted = {d.model: min(d.replicas, caps[d.model][0]) for d in demands}
    assert sum(granted[d.model] * d.gpus_per_replica for d in demands) <= budget + 1e-9
    for d in demands:
        if granted[d.model] < d.replicas:  # it gave way: the room went to models ordered before it
            before = [o for o in demands if (-o.priority, o.model) < (-d.priority, d.model)]
            assert sum(granted[o.model] * o.gpus_per_replica for o in before) > budget - (granted[d.model] + 1) * d.gpus_per_replica - 1e-9


def _apply(placed, move):
    replica, target = move
    return [p if p is not replica else Placed(p.replica_id, p.model, target, p.memory_gb) for p in placed]


def test_consolidation_empties_the_least_used_gpu_one_move_at_a_time():
    nodes = [parse_node("a:3x80")]
    placed = [Placed("r1", "x", ("a", 0), 40.0), Placed("r2", "y", ("a", 1), 20.0), Placed("r3", "z", ("a", 2), 10.0), Placed("r4", "w", ("a", 2), 10.0)]
    moves = 0
    while (move := consolidation_move(nodes, placed)) is not None:
        placed = _apply(placed, move)
        moves += 1
        assert moves <= 4
    gpus = {p.gpu for p in placed}
    assert len(gpus) == 1 and moves == 3, placed  # 80 GB of replicas on one 80 GB GPU


def test_consolidation_never_leaves_a_multi_replica_model_on_one_node():
    nodes = [parse_node("a:1x80"), parse_node("b:1x80")]
    placed = [Placed("r1", "m", ("a", 0), 20.0), Placed("r2", "m", ("b", 0), 20.0)]
    assert consolidation_move(nodes, placed) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("xyz"), st.sampled_from([10.0, 20.0, 30.0, 50.0])), min_size=1, max_size=16))
def test_consolidation_moves_never_exceed_memory_and_never_add_gpus(items):
    nodes = [parse_node("a:4x80"), parse_node("b:4x80")]
    used: dict = {}
    placed = []
    for i, (model, memory) in enumerate(items):
        counts: dict = {}
        for p in placed:
            if p.model == model:
                counts[p.gpu[0]] = counts.get(p.gpu[0], 0) + 1
        gpu, _ = choose_slot(nodes, used, counts, memory)
        if gpu is None:
            continue
        used[gpu] = used.get(gpu, 0.0) + memory
        placed.append(Placed(f"r{i}", model, gpu, memory))
    before = len({p.gpu for p in placed})
    for _ in range(20):
        move = consolidation_move(nodes, placed)
        if move is None:
            break
        placed = _apply(placed, move)
        load: dict = {}
        for p in placed:
            load[p.gpu] = load.get(p.gpu, 0.0) + p.memory_gb
        assert all(v <= 80.0 + 1e-9 for v in load.values())
    assert len({p.gpu for p in placed}) <= before
