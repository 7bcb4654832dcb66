"""Tokenizer for VNN-LIB text, built for speed on multi-megabyte files.

Tokens are produced by one ``re.findall`` pass (no per-token Python objects
beyond the tuples ``findall`` returns).  The overwhelmingly common comparison
atom ``(op a b)`` -- ``op`` one of ``<= >= < > =`` and ``a``, ``b`` plain
symbols or numbers -- is matched as a *single* token, which cuts the token
count of large files by about five.  Everything else is ``(``, ``)`` or a bare
symbol.

Token offsets are not kept: errors are rare, so :meth:`TokenStream.offset`
re-scans the text up to the failing token to find its position.  Line and
column (both 1-based) are derived from the offset only when an error message
is built.

Comments (``;`` to end of line) are blanked with spaces before scanning, so
offsets stay those of the original text.  (VNN-LIB has no string literals, so a
``;`` always starts a comment.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from vnnlib.errors import VnnlibError

COMPARISONS = ("<=", ">=", "<", ">", "=")

# Groups: 1 = operator, 2 = left operand, 3 = right operand of a simple atom;
# 4 = any other token.  Exactly one of (1) and (4) is non-empty per match.
_TOKEN_PATTERN = re.compile(
    r"\(\s*(<=|>=|<|>|=)\s+([^\s()]+)\s+([^\s()]+)\s*\)"
    r"|([()]|[^\s()]+)"
)
_COMMENT_PATTERN = re.compile(r";[^\n]*")

# Indices into a token tuple (and match groups) for readability.
ATOM_OP, ATOM_LEFT, ATOM_RIGHT, PLAIN = 0, 1, 2, 3


def _blank_comments(text: str) -> str:
    """Replace each comment by as many spaces, keeping every offset."""
    if ";" not in text:
        return text
    return _COMMENT_PATTERN.sub(lambda m: " " * len(m.group()), text)


@dataclass
class TokenStream:
    """The token tuples of one text, with position look-up for messages."""

    text: str
    source: str
    tokens: list[tuple[str, str, str, str]] = field(init=False)
    _scan_text: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._scan_text = _blank_comments(self.text)
        self.tokens = _TOKEN_PATTERN.findall(self._scan_text)

    def offset(self, index: int, part: int = PLAIN) -> int:
        """Character offset of token ``index`` (or of one operand of a simple
        atom token when ``part`` is ATOM_OP/ATOM_LEFT/ATOM_RIGHT); the end of
        the text for ``index == len(tokens)``."""
        if index >= len(self.tokens):
            return len(self.text.rstrip())
        for position, match in enumerate(_TOKEN_PATTERN.finditer(self._scan_text)):
            if position == index:
                if match.group(1) is not None and part != PLAIN:
                    return match.start(part + 1)
                return match.start()
        raise AssertionError("token index out of range")  # pragma: no cover

    def location(self, offset: int) -> str:
        """``file:line:col`` (1-based) of a character offset."""
        line = self.text.count("\n", 0, offset) + 1
        line_start = self.text.rfind("\n", 0, offset) + 1
        return f"{self.source}:{line}:{offset - line_start + 1}"

    def error(self, index: int, message: str, part: int = PLAIN) -> VnnlibError:
        """A one-line :class:`VnnlibError` located at token ``index``."""
        one_line = " ".join(message.split())
        return VnnlibError(f"{self.location(self.offset(index, part))}: {one_line}")
