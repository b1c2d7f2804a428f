"""Completion decisions and post-processing, each rule on a real snippet (tree-sitter, no model)."""

from __future__ import annotations

from banked.daemon.context import postprocess, syntax
from banked.daemon.context.cursor import Cursor
from banked.daemon.context.postprocess import Decision, clean, decide

PY = """import math


def area(r):
    return math.pi * r * r


def describe(shape, r):
    print("shape", shape.name, area(r))
    if r > 10:
        CURSOR
    return shape
""".replace("CURSOR", "")


def parsed(text: str, lang: str = "python") -> syntax.Parsed:
    return syntax.parse_text(lang, text)


def cur(before: str, after: str) -> Cursor:
    """The cursor after `before` (the text of its line up to it), with `after` everything that follows."""
    return Cursor.at(before + after, 0, len(before))


def test_inside_an_argument_list_only_the_line_is_completed() -> None:
    text = PY.replace("area(r))", "area(r), ")
    line = 8
    col = text.split("\n")[line].index("area(r), ") + len("area(r), ")
    d = decide(parsed(text), Cursor.at(text, line, col), 10)
    assert d.max_lines == 1 and "argument" in d.why


def test_after_a_block_opener_a_block_is_completed_and_ends_with_it() -> None:
    line = 9  # "    if r > 10:"
    d = decide(parsed(PY), Cursor.at(PY, line, len(PY.split("\n")[line])), 10)
    assert d.max_lines == 10 and d.block_indent == 5
    raw = "\n        r = 10\n        shape.clamp()\n    return shape\nprint('done')"
    assert postprocess.end_of_block(raw, d) == "\n        r = 10\n        shape.clamp()\n"


def test_on_an_empty_line_in_a_brace_language_the_block_ends_before_its_closing_brace() -> None:
    js = "function f(xs) {\n  for (const x of xs) {\n    \n  }\n  return xs;\n}\n"
    line, col = 2, 4
    d = decide(parsed(js, "javascript"), Cursor.at(js, line, col), 10)
    assert d.max_lines == 10 and d.braces
    raw = "console.log(x);\n    total += x;\n  }\n  return total;"
    assert postprocess.end_of_block(raw, d) == "console.log(x);\n    total += x;\n"


def test_a_block_only_where_the_block_is_empty() -> None:
    """Copilot's rule: several lines at the start of an empty body (the cursor's line in `PY` is the empty
    body of `if r > 10:`), one line on an empty line among existing code, where a block would run on."""
    line, col = 10, 8
    d = decide(parsed(PY), Cursor.at(PY, line, col), 10)
    assert d.max_lines == 10 and "empty block" in d.why
    among = PY.replace("        \n", "        shape.grow(r)\n        \n        shape.clamp()\n")
    d = decide(parsed(among), Cursor.at(among, 11, 8), 10)
    assert d.max_lines == 1, d.why
    commented = PY.replace("        \n", "        # grow it\n        \n")
    d = decide(parsed(commented), Cursor.at(commented, 11, 8), 10)  # a comment is not a statement
    assert d.max_lines == 10, d.why
    last = PY + "\n"  # a new line at the end of the module, under `return shape`: one line
    d = decide(parsed(last), Cursor.at(last, len(last.split("\n")) - 1, 0), 10)
    assert d.max_lines == 1, d.why
    # The `multiline` setting: "always" is the rule before (a block on any empty line), "never" one line.
    assert decide(parsed(among), Cursor.at(among, 11, 8), 10, "always").max_lines == 10
    assert decide(parsed(PY), Cursor.at(PY, line, col), 10, "never").max_lines == 1


def test_nothing_after_a_return_or_continue_in_the_same_block() -> None:
    """Code at the indentation of a `continue` just before it could never run: the block ends there (a
    completion markdown-it's own bench target got from the model: `continue`, then a loop it invented)."""
    d = Decision(10, "block", 16)
    raw = "continue\n\n                for child in token.children:\n                    child.content = ''"
    assert postprocess.end_of_block(raw, d).strip() == "continue"
    nested = "if x:\n                    return None\n                y = x + 1\n                return y"
    assert postprocess.end_of_block(nested, d) == nested  # the return is inside the `if`: the block goes on


def test_the_rest_of_the_line_is_not_repeated() -> None:
    before, after = "value = compute(", "a, b)\n"
    assert clean("a, b)", cur(before, after)) == ""  # only what is already there: trivial, dropped
    assert clean("x, a, b)", cur(before, after)) == "x, "


def test_lines_that_follow_the_cursor_are_not_repeated() -> None:
    before = "    "
    after = "\n    return shape\n"
    raw = "shape.grow(r)\n    return shape"
    assert clean(raw, cur(before, after), Decision(10, "block")) == "shape.grow(r)"


def test_a_completion_that_runs_on_into_the_next_lines_is_cut_there() -> None:
    # Seen in bench/quality.py on pytest-lsp's client.py: the hole, then the docstring that follows it.
    before = "        "
    after = '\n        """A task that forwards the server stderr."""\n\n    async def start_io(self):\n'
    raw = (
        "self._stderr_task: asyncio.Task | None = None\n"
        '        """A task that forwards the server stderr."""\n\n    async def start_io(self):\n'
    )
    assert clean(raw, cur(before, after), Decision(10, "block", 8)) == "self._stderr_task: asyncio.Task | None = None"


def test_running_on_is_cut_even_when_blank_lines_differ() -> None:
    # Seen in bench/quality.py on pytest-lsp's protocol.py: a different first line, then the code below.
    before = "        "
    after = "\n        if callback:\n\n            def wrapper(future):\n                callback(future)\n"
    raw = "future = make()\n        if callback:\n\n            def wrapper(future):\n                callback(future)"
    assert clean(raw, cur(before, after), Decision(10, "block", 8)) == "future = make()"


def test_reaching_a_distinctive_next_line_is_cut_there_even_if_the_rest_differs() -> None:
    # Seen in bench/quality.py on pluggy's _caller.py: the import list, re-typed past the hole.
    before = ""
    after = "\nfrom collections.abc import Sequence\nfrom collections.abc import Set as AbstractSet\n"
    raw = (
        "from collections.abc import Mapping\nfrom collections.abc import Sequence\n"
        "from typing import cast\nimport warnings\n"
    )
    assert clean(raw, cur(before, after), Decision(10, "block", 0)) == "from collections.abc import Mapping"


def test_a_short_line_that_equals_the_next_one_by_chance_is_kept() -> None:
    # Seen in bench/quality.py on pluggy's _execution.py: the model's own `try:` goes on differently.
    before = "        "
    after = "\n    try:\n        res = yield\n"
    raw = "teardown.close()\n    try:\n        teardown.send(result)"
    assert clean(raw, cur(before, after), Decision(10, "block", 4)) == raw


def test_a_duplicated_closing_line_is_removed() -> None:
    before = "    "
    after = "\n}\n"
    raw = "return a + b;\n}"
    assert clean(raw, cur(before, after), Decision(10, "block")) == "return a + b;"


def test_brackets_the_completion_opened_are_closed() -> None:
    assert clean("print(math.sqrt(x", cur("    ", "\n")) == "print(math.sqrt(x))"
    # Brackets opened before the cursor are the suffix's business, not the completion's.
    assert clean("x", cur("    f(g(", "))\n")) == "x"


def test_empty_and_trivial_completions_are_discarded() -> None:
    assert clean("   \n  ", cur("x = ", "\n")) == ""
    assert clean(")", cur("f(x", ")\n")) == ""
    assert clean(";", cur("a = 1", "\n")) == ""


def test_symbols_and_imports_per_language() -> None:
    p = parsed(
        "import os\nfrom .geo import area as a\n\n@cache\ndef f(x: int) -> int:\n    return x\n\n"
        "class C(B):\n    def m(self):\n        pass\n"
    )
    assert [(s.name, s.signature) for s in syntax.symbols(p)] == [
        ("f", "def f(x: int) -> int"),
        ("C", "class C(B)"),
        ("m", "def m(self)"),
    ]
    assert syntax.imports(p) == ["os", ".geo"]
    go = parsed(
        'package m\n\nimport (\n\t"fmt"\n\t"example.com/m/util"\n)\n\nfunc Add(a, b int) int {\n\treturn a + b\n}\n',
        "go",
    )
    assert syntax.imports(go) == ["fmt", "example.com/m/util"]
    assert [s.name for s in syntax.symbols(go)] == ["Add"]
    ts = parsed(
        "import { x } from './util';\nexport function f(a: number): number { return a; }\ninterface P { a: number }\n",
        "typescript",
    )
    assert syntax.imports(ts)[0] == "./util"
    assert {s.name for s in syntax.symbols(ts)} >= {"f", "P"}


def test_the_enclosing_definition_and_parse_errors() -> None:
    p = parsed(PY.replace("        \n", "        r = 10\n"))
    assert syntax.definition_at(p, 9) == (8, 12)  # the whole of describe()
    assert syntax.definition_at(p, 0) is None
    assert not syntax.error_lines(p)
    bad = parsed("def f(:\n    return (1,\n")
    assert bad.has_errors and syntax.error_lines(bad)


def test_incremental_reparse_matches_a_fresh_parse() -> None:
    cache = syntax.ParseCache()
    first = cache.parse("a.py", PY)
    assert first is not None
    edited = PY.replace("return math.pi * r * r", "return math.tau * r")
    again = cache.parse("a.py", edited)
    assert again is not None and str(again.tree.root_node) == str(parsed(edited).tree.root_node)
    assert cache.parse("notes.txt", "plain") is None  # unknown language: plain text


def test_without_a_grammar_the_indented_block_takes_decorators_and_stops_before_the_next_one() -> None:
    lines = "import os\n\n@cache\ndef f(x):\n    y = x\n\n    return y\n\n\ndef g():\n    pass\n".splitlines(True)
    assert syntax.indented_block(lines, 4) == (3, 7)  # cursor in f's body: decorator .. return
    assert syntax.indented_block(lines, 10) == (10, 11)
    js = "function a() {\n  return 1;\n}\nconst b = 2;\n".splitlines(True)
    assert syntax.indented_block(js, 1) == (1, 3)  # the closing brace stays with its block


def test_the_code_at_the_cursor_is_the_definition_its_line_starts_or_the_top_level_one() -> None:
    """Explain/refactor with no selection: never an inner closure the cursor merely sits in."""
    src = (
        "import x\n\n@dec\ndef outer(a):\n    def inner(b):\n        return b\n    return inner(a)\n\n"
        "class C:\n    def m(self):\n        return 1\n"
    )
    p = parsed(src)
    assert syntax.definition_at(p, 5) == (3, 7)  # inside the closure: the top-level function, decorator and all
    assert syntax.definition_at(p, 4) == (5, 6)  # on the closure's own `def` line: that closure
    assert syntax.definition_at(p, 9) == (10, 11)  # a method's `def` line: the method
    assert syntax.definition_at(p, 10) == (9, 11)  # inside the method: the class
    assert syntax.definition_at(p, 0) is None


def test_decoding_stops_where_the_answer_would_be_cut() -> None:
    """`ended` is checked after each token: once a whole line leaves the block, or a whole line is the code
    below the cursor, nothing the model writes after it could be kept, so decoding stops there."""
    line = 9  # "    if r > 10:"
    d = decide(parsed(PY), Cursor.at(PY, line, len(PY.split("\n")[line])), 10)
    cursor = Cursor.at(PY, line, len(PY.split("\n")[line]))
    assert not postprocess.ended("\n        r = 10\n        shape.cl", cursor, d)  # still inside the block
    assert postprocess.ended("\n        r = 10\nprint('done')\n", cursor, d)  # a line out of the block
    below = "        "
    after = '\n        """A task that forwards the server stderr."""\n'
    c = cur(below, after)
    assert not postprocess.ended("self._task = None\n        ", c, Decision(10, "block", 8))
    ran_on = 'self._task = None\n        """A task that forwards the server stderr."""\n'
    assert postprocess.ended(ran_on, c, Decision(10, "block", 8))
