"""What the emulated LLM says: deterministic, so every caller can check a response.

One prompt token is one whitespace-separated word; output token i is prompt
word i modulo the prompt length ("<empty>" for an empty prompt).
"""

from __future__ import annotations

from typing import Sequence


def emit_tokens(prompt_words: Sequence[str], count: int) -> list[str]:
    if not prompt_words:
        return ["<empty>"] * count
    return [prompt_words[i % len(prompt_words)] for i in range(count)]


def expected_text(prompt: str, max_tokens: int) -> str:
    """The exact text_output the emulated LLM returns for this prompt."""
    return " ".join(emit_tokens(prompt.split(), max_tokens))
