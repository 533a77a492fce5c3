"""A Triton pod as ebbflow sees it (actuator/pods.py), on pods the real API server returned.

tests/data/kube_pods.json holds pods of the tests' Triton Deployment read from kube-apiserver 1.20 with the
loopback kubelet (managedFields dropped): ready, running but not ready, being deleted, and one the scheduler could
not place for want of a GPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ebbflow.actuator.core import Phase
from ebbflow.actuator.pods import pod_view, replica_entry, summarise
from ebbflow.v1 import registry_pb2

PODS = json.loads((Path(__file__).parent.parent / "data" / "kube_pods.json").read_text())


def test_a_ready_pod_is_a_ready_replica_at_its_pod_ip() -> None:
    view = pod_view(PODS["ready"])
    assert (view.phase, view.ip, view.node, view.unplaced, view.reason) == (Phase.READY, "127.0.1.2", "gpu-node-a", False, "")
    entry = replica_entry(view, "llm")
    assert entry is not None
    assert (entry.host, entry.grpc_port, entry.http_port, entry.metrics_port) == ("127.0.1.2", 8001, 8000, 8002)
    assert entry.state == registry_pb2.REPLICA_STATE_READY and entry.replica_id == view.name and entry.model == "llm"
    assert entry.started_at_unix_s > 1.6e9


def test_running_but_not_ready_is_starting() -> None:
    view = pod_view(PODS["running_not_ready"])
    assert (view.phase, view.reason) == (Phase.STARTING, "running, not ready")
    assert replica_entry(view, "llm").state == registry_pb2.REPLICA_STATE_STARTING  # type: ignore[union-attr]


def test_a_pod_being_deleted_is_draining_even_while_still_ready() -> None:
    view = pod_view(PODS["terminating"])
    assert view.phase == Phase.DRAINING
    assert replica_entry(view, "llm").state == registry_pb2.REPLICA_STATE_DRAINING  # type: ignore[union-attr]


def test_an_unschedulable_pod_is_unplaced_with_the_schedulers_reason_and_has_no_entry() -> None:
    view = pod_view(PODS["unplaced"])
    assert (view.phase, view.unplaced, view.ip, view.node) == (Phase.STARTING, True, "", "")
    assert view.reason == "unplaced: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert replica_entry(view, "llm") is None


def test_failed_and_named_ports() -> None:
    failed = copy.deepcopy(PODS["ready"])
    failed["status"].update(phase="Failed", message="tritonserver exited with code 1")
    assert (pod_view(failed).phase, pod_view(failed).reason) == (Phase.FAILED, "tritonserver exited with code 1")
    moved = copy.deepcopy(PODS["ready"])
    moved["spec"]["containers"][0]["ports"] = [{"name": "grpc", "containerPort": 9001}, {"name": "other", "containerPort": 1}]
    assert dict(pod_view(moved).ports) == {"http": 8000, "grpc": 9001, "metrics": 8002}


def test_summary_counts_unplaced_apart_from_starting() -> None:
    placement = summarise([pod_view(PODS[name]) for name in ("ready", "running_not_ready", "terminating", "unplaced")])
    assert (placement.ready, placement.starting, placement.unplaced, placement.draining, placement.failed) == (1, 1, 1, 1, 0)
