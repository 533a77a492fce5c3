"""ebbflow: an autoscaling control plane for NVIDIA Triton inference fleets."""

import os
from pathlib import Path

# Replicas and nats-server are started with fork+exec while gRPC threads run;
# gRPC's fork handlers only log that they skip themselves. Must precede any grpc import.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"

# Repository root when running from a checkout (editable install, src layout).
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
