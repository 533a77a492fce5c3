"""The simulator's capacity models and shape choice, on curves measured by ebbflow.scheduler.measure.

The simulator measures the curves exactly as the live scheduler does (the
same function, the same pool emulation), so a policy sized on them in a
comparison is sized as it would be in the fleet.
"""

from __future__ import annotations

from ebbflow.emulator.service_time import Profile
from ebbflow.scheduler.capacity import CapacityModel, Shape, Slo
from ebbflow.scheduler.measure import measure_curve


def capacity_model(profile: Profile, shape: Shape, slo: Slo, prompts=None, outputs=None, speed_factor: float = 1.0, noise_sigma: float = 0.3, seed: int = 0) -> CapacityModel:
    return CapacityModel(measure_curve(profile, shape, slo, prompts, outputs, speed_factor, noise_sigma, seed=seed))


def best_shape(
    profile: Profile, shapes: list[Shape], slo: Slo, rps: float, prompts=None, outputs=None, noise_sigma: float = 0.3
) -> tuple[Shape, int, dict[Shape, int]]:
    """The vertical setting that meets the SLO at `rps` with the fewest replicas (one GPU each); ties go to
    fewer instances, then the smaller batch. A quick measurement (one pool of 8, 10 rates) per shape; also
    returns each feasible shape's replica count."""
    counts: dict[Shape, int] = {}
    for shape in shapes:
        curves = measure_curve(profile, shape, slo, prompts, outputs, noise_sigma=noise_sigma, pools=(8,), points=10, requests_per_point=3000)
        model = CapacityModel(curves)
        if model.rps_at_slo(8) > 0:
            counts[shape] = model.replicas_for(max(rps, 1e-9))
    if not counts:
        raise ValueError(f"no shape meets the SLO {slo.describe()} even at the lowest measured rate")
    chosen = min(counts, key=lambda s: (counts[s], s.instances, s.max_batch))
    return chosen, counts[chosen], counts


def default_shapes(max_instances: int = 4, batches: tuple[int, ...] = (1, 2, 4, 8, 16)) -> list[Shape]:
    return [Shape(n, b) for n in range(1, max_instances + 1) for b in batches]

