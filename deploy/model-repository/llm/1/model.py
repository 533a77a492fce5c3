"""Emulated LLM, unary: see ebbflow.emulator.triton_llm."""

from ebbflow.emulator.triton_llm import UnaryLLM as TritonPythonModel  # noqa: F401
