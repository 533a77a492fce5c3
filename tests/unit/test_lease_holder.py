"""A restarted `ebbflow up` takes its dead predecessor's lease at once: the holder's id tells a process gone from this host."""

from __future__ import annotations

import os
import subprocess
import sys

from ebbflow.scheduler.leadership import holder_gone, new_instance_id


def test_a_holder_whose_process_is_gone_from_this_host_is_gone():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    host, namespace, _, _ = new_instance_id().split("/")
    assert holder_gone(f"{host}/{namespace}/{child.stdout.strip()}/abcdef")


def test_a_live_holder_another_host_or_namespace_or_a_foreign_id_is_not():
    host, namespace, pid, _ = new_instance_id().split("/")
    assert not holder_gone(f"{host}/{namespace}/{pid}/abcdef")  # this process: another scheduler here (tests)
    assert not holder_gone(f"{host}/{namespace}/{os.getppid()}/abcdef")  # alive
    assert not holder_gone(f"elsewhere/{namespace}/999999999/abcdef")
    assert not holder_gone(f"{host}/1/999999999/abcdef" if namespace != "1" else f"{host}/2/999999999/abcdef")
    assert not holder_gone("a") and not holder_gone("") and not holder_gone(f"{host}/{namespace}/x/y")


def test_instance_ids_are_unique_within_a_process():
    assert len({new_instance_id() for _ in range(100)}) == 100
