"""Prompt layouts per model family, in one place.

Qwen2.5-Coder's repository format: `<|repo_name|>` header, one `<|file_sep|>`
segment per file, then a FIM tail for completion or a ChatML turn for chat.
File text is always tokenized with `special=False`, so a file that contains
"<|file_sep|>" cannot forge structure.
"""

from __future__ import annotations

from dataclasses import dataclass

from banked.daemon.context import prompts
from banked.daemon.engines.base import Engine, EngineError

QWEN_SPECIALS = (
    "<|repo_name|>",
    "<|file_sep|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|fim_pad|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
)


@dataclass
class QwenCoderTemplate:
    engine: Engine
    family: str = "qwen2.5-coder"

    def __post_init__(self) -> None:
        ids = {s: self.engine.special_id(s) for s in QWEN_SPECIALS}
        missing = [s for s, i in ids.items() if i is None]
        if missing:
            raise EngineError(
                f"model {self.engine.info.model} lacks the special tokens {missing}; banked needs "
                "a Qwen2.5-Coder-family model (FIM + ChatML)"
            )
        self.sp: dict[str, int] = {s: i for s, i in ids.items() if i is not None}

    def tokens(self, text: str) -> list[int]:
        """Plain text as tokens: special-token text in files stays text."""
        return self.engine.tokenize(text, special=False)

    def header(self, repo_name: str) -> list[int]:
        return [self.sp["<|repo_name|>"], *self.tokens(repo_name + "\n")]

    def file(self, path: str, text: str) -> list[int]:
        """One file of the repository layout; files are separated by a blank line, as Qwen2.5-Coder's
        documented repo-level format has it."""
        body = text if text.endswith("\n") or not text else text + "\n"
        return [self.sp["<|file_sep|>"], *self.tokens(f"{path}\n{body}\n")]

    def fim(self, path: str, before: list[int], after: list[int], order: str = "psm") -> list[int]:
        """The FIM turn. PSM (prefix, suffix, middle) is what Qwen2.5-Coder documents; SPM puts the suffix
        first, so typing at the cursor only appends to what is cached (see `fim_order` in config)."""
        prefix, suffix = [self.sp["<|fim_prefix|>"], *before], [self.sp["<|fim_suffix|>"], *after]
        body = [*suffix, *prefix] if order == "spm" else [*prefix, *suffix]
        return [self.sp["<|file_sep|>"], *self.tokens(path + "\n"), *body, self.sp["<|fim_middle|>"]]

    def chat(self, user: str, system: str = prompts.SYSTEM) -> list[int]:
        s, e = self.sp["<|im_start|>"], self.sp["<|im_end|>"]
        return [
            s,
            *self.tokens(f"system\n{system}"),
            e,
            *self.tokens("\n"),
            s,
            *self.tokens(f"user\n{user}"),
            e,
            *self.tokens("\n"),
            s,
            *self.tokens("assistant\n"),
        ]

    @property
    def fim_stops(self) -> set[int]:
        names = (
            "<|endoftext|>",
            "<|fim_pad|>",
            "<|file_sep|>",
            "<|repo_name|>",
            "<|im_end|>",
            "<|im_start|>",
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
        )
        return {self.sp[n] for n in names} | self.engine.eos_ids

    @property
    def chat_stops(self) -> set[int]:
        return {self.sp["<|im_end|>"], self.sp["<|endoftext|>"]} | self.engine.eos_ids


def template_for(engine: Engine) -> QwenCoderTemplate:
    """The template for the engine's model family (only Qwen2.5-Coder is supported today)."""
    return QwenCoderTemplate(engine)
