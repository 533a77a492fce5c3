"""GPU placement: memory never exceeded, replicas spread over nodes, running replicas kept, budget by priority."""

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from ebbflow.scheduler.placement import Node, Want, place

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
