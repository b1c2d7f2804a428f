"""Names a rewrite of Python code uses but defines nowhere, found with pyflakes.

A refactor that parses can still fail at import: the model writes `Callable` or `Mapping` without importing
them. A tree-sitter parse cannot see that; pyflakes resolves every name against the module's scopes and the
builtins. Only names the original file did not already leave undefined count (a star import, a name
injected at run time: not the rewrite's fault), so a file pyflakes dislikes for other reasons still
refactors.
"""

from __future__ import annotations

import ast
import warnings

from pyflakes import checker, messages


def undefined_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of each use of an undefined name; [] when the source is not Python that `ast` parses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings of the file's own (invalid escapes)
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found = checker.Checker(tree, filename="<rewrite>").messages
    return [(m.lineno, str(m.message_args[0])) for m in found if isinstance(m, messages.UndefinedName)]


def new_undefined_names(before: str, after: str) -> list[tuple[int, str]]:
    """The undefined names `after` uses that `before` did not: what a rewrite broke."""
    old = {name for _, name in undefined_names(before)}
    return [(line, name) for line, name in undefined_names(after) if name not in old]
