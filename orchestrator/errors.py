"""One-line error texts for users: the error class of scenario files and overrides, and how a
value or text is echoed in one (escaped, shortened, never a huge integer's digits)."""

from __future__ import annotations

import math
import reprlib

SHOW_CHARS = 80


class ScenarioError(ValueError):
    """A scenario file or override is invalid; the message is one line."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = SHOW_CHARS
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple = 3, 4, 4, 4
_SHORT.maxset = _SHORT.maxfrozenset = 4


def show(value: object, limit: int = SHOW_CHARS) -> str:
    """`value` for an error line: escaped like repr (no raw newline or control character),
    at most `limit` characters, and never an int-to-str conversion of a huge integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = int(value.bit_length() * math.log10(2)) + 1
        text = f"{'a negative' if value < 0 else 'an'} integer of about {digits} digits"
    else:
        try:
            text = _SHORT.repr(value)
        except Exception:  # a value whose repr fails: say what it is instead
            text = f"a {type(value).__name__}"
    text = escape(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def escape(text: str) -> str:
    """`text` with newlines and other unprintable characters backslash-escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
