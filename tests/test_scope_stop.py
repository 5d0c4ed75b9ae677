from __future__ import annotations

import pytest

from exlsp.plugins.assistant import scope_stop


@pytest.mark.parametrize(
    ("prefix", "text", "expected"),
    [
        ("def f(n):\n    if n", " <= 1:\n        return n\n    return f(n - 1)\n", None),
        ("def f(n):\n    if n", " <= 1:\n        return n\n\ndef g():\n", len(" <= 1:\n        return n\n\n")),
        ("    x = 1", "\n    y = 2\nz = 3", len("\n    y = 2\n")),
        ("  if (a) {\n    ", "b();\n  }\n  c();\n}\nint d;", len("b();\n  }\n")),
        ("    ", "pass", None),
        ("\tif x:", "\n\t\ty()\n\tz()\nw()", len("\n\t\ty()\n\tz()\n")),
    ],
)
def test_scope_stop(prefix, text, expected):
    assert scope_stop(prefix)(text) == expected
