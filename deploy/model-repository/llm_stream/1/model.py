"""Emulated LLM, one response per token (decoupled): see ebbflow.emulator.triton_llm."""

from ebbflow.emulator.triton_llm import StreamingLLM as TritonPythonModel  # noqa: F401
