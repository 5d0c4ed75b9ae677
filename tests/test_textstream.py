from __future__ import annotations

from exlsp.runtime.textstream import StopStringMatcher


def feed_all(m: StopStringMatcher, pieces: list[bytes]) -> str:
    return "".join(m.feed(p) for p in pieces)


def test_stop_string_split_over_tokens_is_held_back_then_cut():
    m = StopStringMatcher(["\n\n"])
    out = feed_all(m, [b"a", b"b\n"])
    assert out == "ab" and not m.stopped  # the "\n" may start the stop string: held back
    out += m.feed(b"\ncd")
    assert m.stopped and out == "ab" and m.text == "ab"


def test_held_back_text_is_released_when_the_stop_does_not_complete():
    m = StopStringMatcher(["END"])
    assert m.feed(b"xE") == "x"
    assert m.feed(b"N") == ""
    assert m.feed(b"d") == "ENd"
    assert m.feed(b"E") == ""
    assert m.flush() == "E"


def test_utf8_split_across_tokens():
    m = StopStringMatcher()
    data = "é😀".encode()
    out = feed_all(m, [data[:1], data[1:3], data[3:]]) + m.flush()
    assert out == "é😀"


def test_earliest_stop_wins():
    m = StopStringMatcher(["b", "a"])
    m.feed(b"xxab")
    assert m.stopped and m.text == "xx"
