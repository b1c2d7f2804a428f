"""Shaping a raw completion so it fits the code around the cursor.

Two parts, both plain functions so each rule is tested on a real snippet:

- `decide`: how much to generate: one line (mid-line, inside an argument list,
  a string or a comment) or a block (on an empty line, after a block opener).
- `clean`: what to keep of what came back: the enclosing block's end, no
  repetition of the code after the cursor, no duplicated closing line,
  balanced brackets, nothing empty or trivial.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from banked.daemon.context import syntax
from banked.daemon.context.cursor import Cursor

OPEN, CLOSE = "([{", ")]}"
PAIR = dict(zip(CLOSE, OPEN, strict=True))
_CLOSING_LINE = re.compile(r"^\s*(?:[\)\]\}]+[;,]?|end|fi|done|esac)\s*$")
_BRACE_LANGUAGES = {"javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp"}


@dataclass(frozen=True)
class Decision:
    max_lines: int
    why: str
    block_indent: int | None = None  # a later line indented less than this ends the block (indentation languages)
    braces: bool = False  # a line closing more brackets than the completion opened ends the block


DISTINCT_LINE = 12  # characters, stripped


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _brackets(s: str) -> Iterator[str]:
    """The brackets of `s` outside string literals (a rough lexer: quotes toggle, backslashes escape)."""
    quote, escaped = "", False
    for c in s:
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif c in OPEN or c in CLOSE:
            yield c


def _unclosed(s: str) -> list[str]:
    """The brackets `s` opens and leaves open, outermost first."""
    stack: list[str] = []
    for c in _brackets(s):
        if c in OPEN:
            stack.append(c)
        elif stack and stack[-1] == PAIR[c]:
            stack.pop()
    return stack


def _depth_change(s: str) -> int:
    """Brackets opened minus closed."""
    return sum(1 if c in OPEN else -1 for c in _brackets(s))


def decide(parsed: syntax.Parsed | None, cursor: Cursor, block_lines: int, multiline: str = "auto") -> Decision:
    """How much to write at `cursor`; `multiline` is the setting of that name ("auto", "always", "never")."""
    before, rest = cursor.before, cursor.rest
    if multiline == "never":
        return Decision(1, "one line (multiline = never)")
    braces = (parsed is not None and parsed.language in _BRACE_LANGUAGES) or (parsed is None and "{" in cursor.text)
    if any(c in "([" for c in _unclosed(before)):
        return Decision(1, "inside an open argument list or brackets: finish the line")
    if parsed is not None and syntax.in_inline_context(parsed, cursor):
        return Decision(1, "inside an argument list, a string or a comment: finish the line")
    stripped = before.rstrip()
    if stripped and rest.strip() in ("", "}", ")", "]") and stripped.endswith((":", "{", "=>")):
        return Decision(block_lines, "after a block opener: the block", indent_of(cursor.current) + 1, braces)
    if stripped:
        return Decision(1, "text before the cursor: finish the line")
    if multiline == "auto" and not empty_block_start(cursor):
        return Decision(1, "on an empty line among code: one line (a block only where the block is empty)")
    return Decision(
        block_lines,
        "at the start of an empty block: the block" if multiline == "auto" else "on an empty line: a block",
        len(before) if not rest.strip() else indent_of(cursor.current),
        braces,
    )


_COMMENT = ("#", "//", "--", ";")
_OPENERS = (":", "{", "=>", "(", "[")


def empty_block_start(cursor: Cursor, look: int = 40) -> bool:
    """True when the cursor's empty line opens a block with nothing in it yet: the code line above ends a
    block opener and the code below is not indented deeper than that opener.

    Copilot's rule (`isEmptyBlockStart`): a new body is where a user wants several lines at once; on an
    empty line among existing code the next line is what is wanted, and a block there runs on into code
    the model invents (measured in bench/README, "Completion shape"). It also decodes a fifth of the tokens.
    """
    above = [ln for ln in reversed(cursor.lines[max(0, cursor.line - look) : cursor.line]) if ln.strip()]
    opener = next((ln for ln in above if not ln.strip().startswith(_COMMENT)), None)
    if opener is None or not opener.rstrip().endswith(_OPENERS):
        return False
    nxt = next((ln for ln in cursor.below(look) if ln.strip()), None)
    return nxt is None or indent_of(nxt) <= indent_of(opener) or nxt.strip()[0] in CLOSE


_JUMP = re.compile(r"^\s*(?:return|raise|continue|break)\b")


def end_of_block(completion: str, d: Decision) -> str:
    """Cut the completion where it leaves the block it was started in, or where what follows could never
    run (a line at the indentation of a `return`, `raise`, `continue` or `break` just before it)."""
    lines = completion.split("\n")
    depth = 0
    jumped: int | None = None  # the indentation of the last line that leaves its block
    for i, ln in enumerate(lines):
        dedent = d.block_indent is not None and (indent_of(ln) < d.block_indent or indent_of(ln) == jumped)
        if i > 0 and ln.strip() and not d.braces and dedent:
            return "\n".join(lines[:i]).rstrip(" \t\n") + ("\n" if i > 1 else "")
        if ln.strip():  # the first line starts at the cursor: its indentation is the block's
            jumped = (indent_of(ln) if i else d.block_indent) if _JUMP.match(ln) else None
        if d.braces:
            depth += _depth_change(ln)
            if depth < 0:
                return "\n".join(lines[:i]).rstrip(" \t\n") + ("\n" if i > 0 else "")
    return completion


def ended(raw: str, cursor: Cursor, d: Decision) -> bool:
    """True when generating more cannot change what `clean` keeps: the block has ended, or the model has
    written a whole line that is the code below the cursor. Checked on whole lines only, after each token,
    so decoding stops where the answer would be cut anyway."""
    done = raw[: raw.rfind("\n") + 1]
    if "\n" not in done.rstrip("\n"):
        return False
    if d.max_lines > 1 and len(end_of_block(done, d).rstrip()) < len(done.rstrip()):
        return True
    nxt = next((ln.strip() for ln in cursor.below(20) if ln.strip()), "")
    lines = done.rstrip("\n").split("\n")
    return len(nxt) >= DISTINCT_LINE and any(ln.strip() == nxt for ln in lines[1:])


def clean(completion: str, cursor: Cursor, d: Decision | None = None, suffix: bool = True) -> str:
    """The completion with the rules above applied; "" when nothing worth showing is left.

    Without `suffix` the model saw nothing after the cursor, so nothing after it is compared.
    """
    before = cursor.before
    out = end_of_block(completion, d) if d is not None and d.max_lines > 1 else completion
    rest = cursor.rest.strip() if suffix else ""
    below = cursor.below(60) if suffix else ()
    # 1. Repeating the rest of the line: the editor keeps it, so drop it from the end of the insert.
    last_nl = out.rfind("\n")
    last = out[last_nl + 1 :]
    if rest and last.rstrip().endswith(rest):
        cut = last.rstrip()[: -len(rest)]
        out = out[: last_nl + 1] + cut
    # 2. Running on into the code below the cursor: cut where the generated lines start to equal it
    #    (blank lines aside: the model and the file may space them differently). A line as long as
    #    DISTINCT_LINE equal to the next line is enough on its own: the model reached code that is
    #    there, even if what it writes after that differs from the file.
    next_lines = [ln.strip() for ln in below if ln.strip()][:20]
    gen = out.rstrip("\n").split("\n")
    filled = [i for i, g in enumerate(gen) if g.strip()]
    for pos, i in enumerate(filled):
        k = min(len(filled) - pos, len(next_lines), 3)
        line = gen[i].strip()
        runs_on = k > 0 and len(line) >= 3 and [gen[j].strip() for j in filled[pos : pos + k]] == next_lines[:k]
        if i and (runs_on or (next_lines and len(line) >= DISTINCT_LINE and line == next_lines[0])):
            out = "\n".join(gen[:i]).rstrip()
            break
    # 3. A duplicated closing line: the suffix's next line already closes the block.
    gen = out.rstrip("\n").split("\n")
    first_below = next_lines[0] if next_lines and not rest else None
    if len(gen) > 1 and _CLOSING_LINE.match(gen[-1]) and gen[-1].strip() == first_below:
        out = "\n".join(gen[:-1]) + ("\n" if out.endswith("\n") else "")
    # 4. Balance brackets on a one-line completion the model left open (ran out of tokens).
    if "\n" not in out.rstrip("\n"):
        opened = _unclosed(before + out)
        already = _unclosed(before)
        missing = opened[len(already) :] if opened[: len(already)] == already else []
        closers = "".join({v: k for k, v in PAIR.items()}[c] for c in reversed(missing))
        if closers and not rest.startswith(closers):
            out = out.rstrip() + closers
    # 5. Nothing, or nothing but what the suffix already has.
    if not out.strip() or (rest and out.strip() == rest) or all(c in CLOSE + ";,: \t\n" for c in out):
        return ""
    return out
