"""Emulated LLM, one response per token (decoupled): see ebbflow.emulator.triton_llm."""

import os
import sys

# Triton's Python-backend stub ignores PYTHONPATH (its interpreter starts from the venv's site-packages), so the
# ebbflow package the replica was launched with (runtime/triton.py puts it on PYTHONPATH) is put first here; else
# the stub imports whichever ebbflow the venv has installed, which need not be the one serving this repository.
sys.path[:0] = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]

from ebbflow.emulator.triton_llm import StreamingLLM as TritonPythonModel  # noqa: E402,F401
