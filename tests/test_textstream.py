"""Streaming text: stop strings never leak, even split across tokens; line limits cut cleanly."""

from __future__ import annotations

from banked.daemon.engines.generation import TextStream, first_lines
from hypothesis import given
from hypothesis import strategies as st


class ByteEngine:
    """Detokenizes a token id as the byte with that value (unit test double for TextStream)."""

    def detokenize(self, ids: list[int]) -> bytes:
        return bytes(ids)


def feed(stream: TextStream, text: str) -> str:
    shown = ""
    for b in text.encode():
        shown += stream.feed(b)
        if stream.done:
            break
    return shown + stream.finish()


def test_stop_string_split_across_tokens_is_never_shown() -> None:
    s = TextStream(ByteEngine(), stop_strings=["\n\n\n"])  # type: ignore[arg-type]
    assert feed(s, "x = 1\n\n\nmore") == "x = 1"
    assert s.stopped_by.startswith("stop")


def test_max_lines_cuts_at_the_newline() -> None:
    s = TextStream(ByteEngine(), max_lines=1)  # type: ignore[arg-type]
    assert feed(s, "2 * math.pi * r\n```\n") == "2 * math.pi * r"
    assert s.stopped_by == "max_lines"


@given(st.text(alphabet="ab \n", max_size=40), st.integers(min_value=1, max_value=5))
def test_a_recorded_answer_cut_to_fewer_lines_is_what_decoding_would_have_shown(text: str, n: int) -> None:
    """The quality bench's replay cuts recorded answers with `first_lines`: it must match the live cut."""
    s = TextStream(ByteEngine(), max_lines=n)  # type: ignore[arg-type]
    assert feed(s, text) == first_lines(text, n)


def test_utf8_split_across_tokens() -> None:
    s = TextStream(ByteEngine())  # type: ignore[arg-type]
    assert feed(s, "café ☕") == "café ☕"


def test_byte_level_pieces_decode_back_to_bytes() -> None:
    from banked.daemon.engines.base import gpt2_byte_symbols
    from banked.daemon.engines.exl2 import _byte_decoder

    symbols = gpt2_byte_symbols()
    assert len(set(symbols)) == 256 and symbols[ord("A")] == "A" and symbols[ord(" ")] == "Ġ"
    dec = _byte_decoder()
    piece = "".join(symbols[b] for b in "  café ☕\n".encode())
    assert bytes(dec[ch] for ch in piece).decode() == "  café ☕\n"


@given(st.text(alphabet="ab \n", max_size=40), st.integers(min_value=1, max_value=12))
def test_lines_ahead_never_change_the_answer(text: str, budget: int) -> None:
    """A completion's lookahead goes on after its one-line answer; the answer (its first line) must be what
    a stream without lookahead, stopped at the same token budget, shows."""
    alone = TextStream(ByteEngine(), max_lines=1)  # type: ignore[arg-type]
    shown_alone = feed(alone, text.encode()[:budget].decode())  # the generation stops at its budget
    ahead = TextStream(ByteEngine(), max_lines=2, answer_lines=1, answer_tokens=budget)  # type: ignore[arg-type]
    shown_ahead = feed(ahead, text)
    assert first_lines(shown_ahead, 1) == shown_alone
    if "\n" not in text.encode()[:budget].decode():
        assert ahead.stopped_by == "answer_tokens" or len(text) <= budget
