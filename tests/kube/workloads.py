"""The Triton workload the Kubernetes tests and benchmark apply, and how they read its pods' state."""

from __future__ import annotations

from typing import Any

from tests.kube.kubelet import GPU_RESOURCE

NAMESPACE = "default"
DEPLOYMENT = "triton-llm"
SCALE_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
SELECTOR = {"labelSelector": f"app={DEPLOYMENT}"}


def triton_deployment(model: str = "llm", replicas: int = 0) -> dict[str, Any]:
    """What an operator would apply for Triton serving one model on one GPU per pod."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": {"app": DEPLOYMENT}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "triton",
                            "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                            "args": ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", f"--load-model={model}"],
                            "env": [{"name": "EBBFLOW_TIME_SCALE", "value": "0.02"}],
                            "ports": [{"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 8001}, {"name": "metrics", "containerPort": 8002}],
                            "readinessProbe": {"httpGet": {"path": f"/v2/models/{model}/ready", "port": "http"}, "periodSeconds": 1},
                            "resources": {"limits": {GPU_RESOURCE: 1}},
                        }
                    ],
                },
            },
        },
    }


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def unschedulable(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Pending" and any(
        c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable" for c in pod["status"].get("conditions", [])
    )
