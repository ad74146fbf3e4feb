"""Text that came from a person (an image's name, a class, a phrase, an error that quotes them) as Markdown that
gradio's `gr.Markdown` shows as exactly that text: never a link, a picture, HTML, a heading or a list.

gradio 6 renders Markdown with `marked` (GFM: autolinks, tables, strikethrough) and then lets a sanitizer keep
tags such as <img>, <a> and <iframe> with outside addresses: a name like `![b](http:host)` or `<img src=...>`
would make every visitor's browser fetch from that host. CommonMark lets a backslash escape any ASCII
punctuation, so escaping all of it leaves no markup, no tag and no autolink (`http\\:`, `www\\.`, `a\\@b` link
nothing). Newlines and other control characters would start new blocks or hide text: they are shown as their
escapes (`\\n`, `\\x01`); spaces at either end as entities (four would start a code block). LaTeX (`$$...$$`)
is read from the rendered text, after the escapes are gone: the components that show such text turn it off
(`latex_delimiters=[]`, ui/layout.py).
"""

from __future__ import annotations

import re
import unicodedata

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # all ASCII punctuation: CommonMark's escapable characters
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
_HIDDEN = {"Cc", "Cs", "Zl", "Zp"}  # control characters, lone surrogates, line and paragraph separators
_ENDS = re.compile(r"^\s+|\s+$")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    if char in _BIDI or unicodedata.category(char) in _HIDDEN:
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def plain(text: object) -> str:
    """One value as inline Markdown that renders as its literal text, on one line."""
    escaped = _PUNCTUATION.sub(r"\\\1", "".join(_visible(c) for c in str(text)))
    # spaces at either end as entities: leading ones would indent a code block, trailing ones break the line,
    # and the parser trims both
    return _ENDS.sub(lambda m: "".join(f"&#{ord(c)};" for c in m.group()), escaped)


def lines(text: object) -> str:
    """A message of one or more lines (ours, quoting a person's text) as Markdown that renders each line
    literally; a line that starts with "- " stays an item of a list (how our messages list problems)."""
    out = []
    for line in str(text).split("\n"):
        item = line.startswith("- ")
        out.append(("- " if item else "") + plain(line[2:] if item else line))
    return "\n".join(out)


def bold(text: object) -> str:
    """A message in bold (a refusal), its text shown literally; list items stay items."""
    trimmed = "\n".join(line.strip() for line in str(text).split("\n"))
    return "\n".join(line if line.startswith("- ") or not line else f"**{line}**" for line in lines(trimmed).split("\n"))
