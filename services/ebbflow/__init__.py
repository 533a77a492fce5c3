"""ebbflow: an autoscaling control plane for NVIDIA Triton inference fleets."""

from pathlib import Path

__version__ = "0.1.0"

# Repository root when running from a checkout (editable install, src layout).
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
