"""Every text banked says to the model, and how its answers are read back.

Layouts (where the special tokens go) are templates.py's; the words are here,
so a change of tone or instruction is one diff in one file.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from banked.daemon.ipc.protocol import Preset

ChatPrompt = Callable[[str, str, int, int], str]  # (path, code, first line, last line) -> the user's turn

SYSTEM = (
    "You are banked, a coding assistant running on the user's machine. The files above are "
    "the user's workspace; use them as context. Be precise and brief."
)

PRESET_INSTRUCTIONS: dict[Preset, str] = {
    Preset.SIMPLIFY: "Simplify this code without changing what it does",
    Preset.ANNOTATE: "Add type annotations",
    Preset.NAMES: "Improve the names",
    Preset.ERRORS: "Handle errors explicitly",
    Preset.DOCSTRING: (
        "Add a docstring (or doc comment) to each function and class that lacks one, in the language's usual "
        "style, describing only the parameters each one really has; change nothing else"
    ),
}


def retry_because(problems: list[str]) -> str:
    """What the one retry of a refactor is told about the first answer."""
    return (
        f"\n(Your previous answer was wrong: {'; '.join(problems[:5])}. "
        "Reply with code that parses and imports or defines every name it uses.)"
    )


def explain(rel: str, code: str, a: int, b: int) -> str:
    return (
        f"Explain what this code from {rel} (lines {a}-{b}) does, for a developer "
        f"reading it for the first time. Mention how it fits the workspace.\n\n"
        f"```\n{code}```"
    )


def refactor(instruction: str) -> ChatPrompt:
    def prompt(rel: str, code: str, a: int, b: int) -> str:
        return (
            f"Rewrite this code from {rel} (lines {a}-{b}) as follows: {instruction}\n"
            "Reply with only the complete new code for these lines in one fenced code "
            f"block, keeping the indentation.\n\n```\n{code}```"
        )

    return prompt


def write_tests(rel: str, code: str, a: int, b: int) -> str:
    return (
        f"Write unit tests for this code from {rel} (lines {a}-{b}), in the test framework the "
        "workspace already uses (pytest for Python). Import what they test from its module. "
        f"Reply with only the test code in one fenced code block.\n\n```\n{code}```"
    )


_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(answer: str) -> str:
    """The code of a chat answer: its first fenced block, else the whole answer."""
    m = _FENCE.search(answer)
    return m.group(1) if m else answer.strip("\n") + "\n"


def reindent(original: str, new: str) -> str:
    """Keep the selection's indentation if the model dropped it."""

    def indent(s: str) -> str:
        first = next((ln for ln in s.splitlines() if ln.strip()), "")
        return first[: len(first) - len(first.lstrip())]

    want, got = indent(original), indent(new)
    if len(got) >= len(want) or not want.startswith(got):
        return new
    pad = want[len(got) :]
    return "".join(pad + ln if ln.strip() else ln for ln in new.splitlines(keepends=True))
