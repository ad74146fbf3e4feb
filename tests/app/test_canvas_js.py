"""The canvas' JS without a browser: no function over 150 lines, and a table of tools with one set of handlers.

Functions are found by brace matching over the code with its comments, strings, template literals and regex
literals blanked out (line numbers kept). A `{` opens a function when the code before it ends with `=>`, or with
`)` whose `(` follows `function`, a function's name or a method's name (not `if`, `for`, `while`, `switch`,
`catch`); a function's length is its lines from that `{` to its `}`, nested functions included. The js_on_load body
(the parts joined, ui/canvas PARTS) counts as a function too: each part at most 150 lines, and the body's lines of
code outside the functions declared in it (the shared state, the constants, the event wiring) at most 150."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import ui.canvas
from ui.canvas import CANVAS_JS, PARTS, TEMPLATE

MAX_LINES = 150
HANDLERS = {"keys", "down", "move", "up", "cursor", "draw", "preview"}  # as tools.js documents them
_BLOCK_WORDS = {"if", "for", "while", "switch", "catch", "with"}
_REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^") | {""}


def _blank(src: str) -> str:
    """`src` with comments, string and template literals and regex literals replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c, nxt = src[i], src[i + 1] if i + 1 < n else ""
        if c == "/" and nxt in "/*":
            end = src.find("\n", i) if nxt == "/" else src.find("*/", i + 2) + 2
            end = n if end < 2 or (nxt == "/" and end < 0) else end
        elif c in "'\"`" or (c == "/" and ("".join(out).rstrip()[-1:] in _REGEX_AFTER)):
            end, depth = i + 1, 0
            while end < n and not (src[end] == c and depth == 0):
                if src[end] == "\\":
                    end += 1
                elif c == "`" and src.startswith("${", end):
                    depth += 1
                elif c == "`" and src[end] == "}" and depth:
                    depth -= 1
                end += 1
            end += 1
        else:
            out.append(c)
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", src[i:end]))
        i = end
    return "".join(out)


def _opens_function(code: str, at: int) -> bool:
    """Whether the `{` at `at` opens a function's body (else a block or an object literal)."""
    before = code[:at].rstrip()
    if before.endswith("=>"):
        return True
    if not before.endswith(")"):
        return False
    depth, j = 0, len(before) - 1
    while j >= 0:
        depth += {")": 1, "(": -1}.get(before[j], 0)
        if depth == 0:
            break
        j -= 1
    word = re.search(r"([\w$]*)\s*$", before[:j]).group(1)
    return bool(word) and word not in _BLOCK_WORDS


def functions(src: str) -> list[tuple[int, int, int]]:
    """(first line, last line, depth) of each function in `src` (1-based lines; depth 0: not inside another)."""
    code = _blank(src)
    stack, found, depth = [], [], 0
    for i, c in enumerate(code):
        if c == "{":
            is_fn = _opens_function(code, i)
            stack.append((i, is_fn))
            depth += is_fn
        elif c == "}":
            start, is_fn = stack.pop()
            if is_fn:
                depth -= 1
                found.append((code.count("\n", 0, start) + 1, code.count("\n", 0, i) + 1, depth))
    assert not stack, "unbalanced braces"
    return sorted(found)


def body_lines(src: str) -> int:
    """Lines of code of `src` outside its outermost functions (a line that opens or closes one is the function's;
    blank and comment-only lines do not count: each part begins with a comment that says what it holds)."""
    covered = set()
    for first, last, depth in functions(src):
        if depth == 0:
            covered.update(range(first, last + 1))
    return sum(1 for i, line in enumerate(_blank(src).splitlines(), 1) if i not in covered and line.strip())


def _literal_members(code: str, at: int) -> set[str]:
    """The member names of the object literal whose `{` is at `at` in blanked code."""
    depth, names, start = 0, set(), at + 1
    for j in range(at, len(code)):
        ch = code[j]
        depth += {"{": 1, "(": 1, "[": 1, "}": -1, ")": -1, "]": -1}.get(ch, 0)
        if (ch == "," and depth == 1) or depth == 0:
            m = re.match(r"\s*([\w$]+)\s*([(:,]|$)", code[start:j])
            if m:
                names.add(m.group(1))
            start = j + 1
        if depth == 0:
            return names
    raise AssertionError("unclosed object literal")


def tool_table(js: str) -> dict[str, set[str]]:
    """{tool name: its member names} from `const TOOLS = {name: CONST or factory(...), ...}`."""
    code = _blank(js)
    table = re.search(r"const TOOLS = \{(.*?)\n\};", code, re.S).group(1)
    tools = {}
    for name, expr in re.findall(r"^\s*(\w+):\s*([\w$]+)", table, re.M):
        m = re.search(rf"const {expr} = \{{", code) or re.search(rf"function {expr}\([^)]*\) \{{\s*return \{{", code)
        assert m, f"tool {name}: no object literal for {expr}"
        tools[name] = _literal_members(code, m.end() - 1)
    return tools


def test_the_function_finder_counts_what_it_should():
    src = ("const a = { b: 1, c() {\n  return `${x}}{`;\n} };\n"  # a method; braces inside a template literal
           "function f(x) {\n  if (x) { y(/{/); }\n  // { a comment\n  const g = (e) => {\n    return '{';\n  };\n}\n"
           "for (const z of w) {\n  q();\n}\n\n// a comment\n")
    assert functions(src) == [(1, 3, 0), (4, 10, 0), (7, 9, 1)]
    assert body_lines(src) == 3  # the for loop


def test_no_function_in_the_canvas_js_is_over_150_lines():
    here = Path(ui.canvas.__file__).parent
    assert PARTS[0] == "canvas.js" and sorted(PARTS) == sorted(p.name for p in here.glob("*.js"))
    for name in PARTS:  # the body is these parts, one after another: each is short
        assert len((here / name).read_text(encoding="utf-8").splitlines()) <= MAX_LINES, f"{name} is over {MAX_LINES} lines"
    too_long = [(first, last) for first, last, _ in functions(CANVAS_JS) if last - first + 1 > MAX_LINES]
    assert not too_long, f"functions over {MAX_LINES} lines at lines {too_long} of the joined canvas JS"
    assert len(functions(CANVAS_JS)) > 50  # the finder sees the canvas' functions
    assert body_lines(CANVAS_JS) <= MAX_LINES, "the js_on_load body (outside its functions) is too long"


def test_every_tool_has_the_same_handlers():
    tools = tool_table(CANVAS_JS)
    assert {"box", "click", "brush", "eraser", "pan"} <= set(tools)
    for name, members in tools.items():
        assert members == HANDLERS, f"tool {name!r} has {sorted(members)}, not {sorted(HANDLERS)}"
    buttons = set(re.findall(r'data-tool="(\w+)"', TEMPLATE))
    assert buttons and buttons <= set(tools), "every toolbar button names a tool of the table"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_joined_body_parses(tmp_path):
    f = tmp_path / "body.js"
    f.write_text(f"function onLoad(element, trigger, props, server, upload, watch) {{\n{CANVAS_JS}\n}}\n", encoding="utf-8")
    run = subprocess.run(["node", "--check", str(f)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
