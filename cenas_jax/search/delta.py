"""Edits from the LLM applied to a parent program: SEARCH/REPLACE blocks and unified diffs.

Also the way back: ``extract_code`` takes the program out of a full-mode
answer, and ``make_edit`` writes the canonical edit between two programs (the
completion the CE update trains on in delta mode).

The parsers tolerate what language models write, since every answer lost here is a lost sample:
fences and prose around the edit, whitespace and indentation drift (matched on stripped lines, the
replacement re-indented by the same offset), a SEARCH that is part of one line, a block with a line
invented or left out (the last resort, ``fuzzy`` down to ``FUZZY_MIN_RATIO``; ``_fuzzy_locate``), and
unified diffs with missing headers or wrong line numbers (a hunk is placed by its content; the
header's line only breaks ties). Each tolerance and why it is there: DESIGN.md §1 "Applying an edit".

Decisions (the loop and the report rely on them):

- A SEARCH text found more than once is applied at its *first* occurrence
  (in a diff: the occurrence nearest to the header's line, else the first).
  Short SEARCH texts that repeat (``nn.relu(x)``) are common; refusing them
  would throw away edits whose intent is clear enough, and the choice is
  deterministic.
- An empty SEARCH appends the replacement at the end of the program.
- Blocks and hunks apply in order, each to the result of the previous one.
- An edit that applies but leaves the program unchanged (modulo trailing
  whitespace) is an error, ``no-op edit``.
- Every failure is a ``DeltaError`` (error kind ``delta_apply``) whose
  ``reason`` names the block and what went wrong.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from typing import Literal

from cenas_jax.candidates.errors import CandidateError, ErrorKind

EditFormat = Literal["search_replace", "unified_diff"]
EDIT_FORMATS: tuple[str, ...] = ("search_replace", "unified_diff")

SEARCH_MARK = "<<<<<<< SEARCH"
DIVIDER_MARK = "======="
REPLACE_MARK = ">>>>>>> REPLACE"

_SEARCH_RE = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$", re.IGNORECASE)
_DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
_REPLACE_RE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$", re.IGNORECASE)
_FENCE_RE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+.-]*)")
_HUNK_HEADER_RE = re.compile(r"^\s*@@\s*-(\d+)(?:,(\d+))?\s+\+(\d+)(?:,(\d+))?\s*@@")
_LOOSE_HUNK_HEADER_RE = re.compile(r"^\s*@@")
_SPECIAL_TOKEN_RE = re.compile(r"<\|[^|>\s]{1,40}\|>|</s>|<s>")
_CODE_START_RE = re.compile(r"^(import |from \S+ import |class |def |@|#)")
FUZZY_MIN_RATIO = 0.75


class DeltaError(CandidateError):
    """An edit that could not be parsed or applied; ``reason`` is stored with kind ``delta_apply``."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorKind.DELTA_APPLY, reason)
        self.reason = reason

    def __reduce__(self):
        return (DeltaError, (self.reason,))


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE block: ``search`` (possibly empty: append) is replaced by ``replace``."""

    search: str
    replace: str


@dataclass(frozen=True)
class Hunk:
    """One unified-diff hunk: ``lines`` are (tag, text) with tag in ' -+'; ``old_start`` from the header (1-based)."""

    lines: tuple[tuple[str, str], ...]
    old_start: int | None = None

    @property
    def old(self) -> list[str]:
        """The parent's lines this hunk expects (context and removed)."""
        return [t for tag, t in self.lines if tag in " -"]

    @property
    def new(self) -> list[str]:
        """The lines that take their place (context and added)."""
        return [t for tag, t in self.lines if tag in " +"]


# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """Split on any line end (CRLF, CR, LF); tabs become 4 spaces; no trailing empty item."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = [line.expandtabs(4) for line in text.split("\n")]
    if out and out[-1] == "":
        out.pop()
    return out


def _join(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


def _normalized(source: str) -> str:
    """The comparison form of a program: LF line ends, no trailing spaces, one final newline."""
    return _join(_lines(source))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _strip_edge_blanks(lines: list[str]) -> tuple[list[str], int]:
    """Drop blank lines at both ends; also return how many were dropped at the start."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], start


def _strip_fence_lines(lines: list[str]) -> list[str]:
    """Remove an opening fence line at the start and a closing one at the end of a section."""
    body, _ = _strip_edge_blanks(lines)
    if body and _FENCE_RE.match(body[0]):
        body = body[1:]
    if body and _FENCE_RE.match(body[-1]) and not _FENCE_RE.match(body[-1]).group(2):
        body = body[:-1]
    return body


def _clean_output(text: str) -> str:
    """LF line ends and no chat special tokens (``<|im_end|>``) left by the sampler."""
    return _SPECIAL_TOKEN_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


# ---------------------------------------------------------------------------
# Full programs
# ---------------------------------------------------------------------------


def _fenced_blocks(text: str) -> list[tuple[str, str, bool]]:
    """Every fenced block as (language tag, body, closed); an unclosed last fence runs to the end."""
    blocks: list[tuple[str, str, bool]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        body: list[str] = []
        j = i + 1
        closed = False
        while j < len(lines):
            if lines[j].strip().startswith(fence[0] * 3) and not lines[j].strip().strip(fence[0]):
                closed = True
                break
            body.append(lines[j])
            j += 1
        blocks.append((lang, "\n".join(body), closed))
        i = j + 1
    return blocks


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _trim_prose(text: str) -> str:
    """Code from unfenced text: start at the first code-looking line, drop trailing prose lines."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if _CODE_START_RE.match(line)), None)
    if start is None:
        return text.strip("\n")
    lines = lines[start:]
    code = "\n".join(lines).rstrip()
    if _parses(code):
        return code
    # Trailing explanation ("This model uses ...") is unindented and does not parse; drop such lines.
    for cut in range(len(lines) - 1, max(0, len(lines) - 40), -1):
        dropped = lines[cut]
        if dropped.startswith((" ", "\t")):
            break
        candidate = "\n".join(lines[:cut]).rstrip()
        if candidate and _parses(candidate):
            return candidate
    return code


def extract_code(text: str) -> str:
    """The Python program in an LLM answer (fenced or not, with prose around); '' when there is none.

    Preference among fenced blocks: one that defines ``class Net``, then one
    tagged python/py (or untagged), longest first; an unclosed fence (the
    answer was cut off) runs to the end of the text.
    """
    text = _clean_output(text)
    fenced = _fenced_blocks(text)
    blocks = [b for b in fenced if b[1].strip()]
    if fenced and not blocks:
        return ""
    if blocks:

        def rank(block: tuple[str, str, bool]) -> tuple[int, int, int]:
            lang, body, _ = block
            has_net = bool(re.search(r"^\s*class\s+Net\b", body, re.MULTILINE))
            pythonish = lang in ("python", "py", "python3", "")
            return (int(has_net), int(pythonish), len(body))

        best = max(blocks, key=rank)
        code = best[1]
    else:
        code = _trim_prose(text)
    code = code.strip("\n")
    return code + "\n" if code.strip() else ""


# ---------------------------------------------------------------------------
# Parsing edits
# ---------------------------------------------------------------------------


def parse_search_replace(text: str) -> list[Edit]:
    """The SEARCH/REPLACE blocks of an answer, in order; raise ``DeltaError`` on a malformed block."""
    lines = _lines(_clean_output(text))
    edits: list[Edit] = []
    state = "outside"
    search: list[str] = []
    replace: list[str] = []

    def finish() -> None:
        edits.append(Edit("\n".join(_strip_fence_lines(search)), "\n".join(_strip_fence_lines(replace))))

    for line in lines:
        is_search, is_div, is_repl = _SEARCH_RE.match(line), _DIVIDER_RE.match(line), _REPLACE_RE.match(line)
        n = len(edits) + 1
        if state == "outside":
            if is_search:
                state, search, replace = "search", [], []
            # Stray dividers / REPLACE markers outside a block are prose decoration: ignore them.
        elif state == "search":
            if is_div:
                state = "replace"
            elif is_search:
                raise DeltaError(f"block {n}: a second '{SEARCH_MARK}' before '{DIVIDER_MARK}'")
            elif is_repl:
                raise DeltaError(f"block {n}: '{REPLACE_MARK}' before '{DIVIDER_MARK}'")
            else:
                search.append(line)
        else:  # replace
            if is_repl:
                finish()
                state = "outside"
            elif is_search:
                # The model forgot the closing marker and went on with the next block.
                finish()
                state, search, replace = "search", [], []
            elif is_div:
                raise DeltaError(f"block {n}: a second '{DIVIDER_MARK}' in one block")
            else:
                replace.append(line)
    n = len(edits) + 1
    if state == "search":
        raise DeltaError(f"block {n}: missing '{DIVIDER_MARK}' after '{SEARCH_MARK}' (output cut off?)")
    if state == "replace":
        raise DeltaError(f"block {n}: missing '{REPLACE_MARK}' (output cut off?)")
    if not edits:
        raise DeltaError(f"no SEARCH/REPLACE block found (expected '{SEARCH_MARK}' / '{DIVIDER_MARK}' / '{REPLACE_MARK}')")
    return edits


def _diff_region(text: str) -> tuple[list[str], bool]:
    """The lines holding the diff and whether they came from inside fences."""
    text = _clean_output(text)
    blocks = [b for b in _fenced_blocks(text) if b[1].strip()]
    diffish = [b for b in blocks if b[0] in ("diff", "patch", "udiff") or re.search(r"^\s*@@|^[+-]", b[1], re.M)]
    if diffish:
        lines: list[str] = []
        for _, body, _ in diffish:
            lines.extend(_lines(body))
        return lines, True
    return _lines(text), False


def parse_unified_diff(text: str) -> list[Hunk]:
    """The hunks of a unified diff in an answer, in order; raise ``DeltaError`` when there is none."""
    lines, fenced = _diff_region(text)
    has_headers = any(_LOOSE_HUNK_HEADER_RE.match(line) for line in lines)
    hunks: list[Hunk] = []
    cur: list[tuple[str, str]] | None = None
    start: int | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            body = list(cur)
            while body and body[-1] == (" ", ""):  # trailing blank context is noise
                body.pop()
            if any(tag in "+-" for tag, _ in body):
                hunks.append(Hunk(tuple(body), start))
        cur = None

    for line in lines:
        if _LOOSE_HUNK_HEADER_RE.match(line):
            close()
            m = _HUNK_HEADER_RE.match(line)
            start = int(m.group(1)) if m else None
            cur = []
            continue
        if line.startswith(("--- ", "+++ ")) or line in ("---", "+++") or line.startswith(("diff --git", "index ")):
            close()
            continue
        if line.startswith("\\"):  # "\ No newline at end of file"
            continue
        if _FENCE_RE.match(line):
            close()
            continue
        if cur is None:
            if has_headers or line[:1] not in ("+", "-", " ") or not line.strip():
                continue  # prose (or blank lines) outside a hunk
            cur, start = [], None
        if line == "":
            cur.append((" ", ""))
        elif line[0] in " +-":
            cur.append((line[0], line[1:]))
        elif fenced:
            cur.append((" ", line))  # a context line whose leading space was dropped
        else:
            close()  # prose after the hunk
    close()
    if not hunks:
        raise DeltaError("no unified-diff hunk found (expected lines starting with '-', '+' or ' ', after '@@' headers)")
    return hunks


# ---------------------------------------------------------------------------
# Locating and applying
# ---------------------------------------------------------------------------


def _pick(starts: list[int], hint: int | None) -> int:
    if hint is None:
        return starts[0]
    return min(starts, key=lambda s: (abs(s - hint), s))


def _locate(block: list[str], src: list[str], hint: int | None) -> tuple[int, int, list[int | None]] | None:
    """Where ``block`` (no blank edge lines) sits in ``src``: exact, then indentation-free, then blank-free.

    Returns (start, end, align): the parent lines ``src[start:end]`` to replace
    and, for each block line, the parent line it matched (None for a blank
    block line that matched nothing).
    """
    n = len(block)
    stripped_src = [line.strip() for line in src]
    stripped_block = [line.strip() for line in block]
    exact = [s for s in range(len(src) - n + 1) if all(src[s + i].rstrip() == block[i].rstrip() for i in range(n))]
    loose = [] if exact else [s for s in range(len(src) - n + 1) if stripped_src[s : s + n] == stripped_block]
    if exact or loose:
        s = _pick(exact or loose, hint)
        return s, s + n, list(range(s, s + n))
    # Blank lines dropped or added by the model inside the block.
    want = [i for i, line in enumerate(stripped_block) if line]
    found: list[tuple[int, int, list[int | None]]] = []
    for s in range(len(src)):
        if stripped_src[s] != stripped_block[want[0]]:
            continue
        align: list[int | None] = [None] * n
        k, j = 0, s
        while j < len(src) and k < len(want):
            if not stripped_src[j]:
                j += 1
                continue
            if stripped_src[j] != stripped_block[want[k]]:
                break
            align[want[k]] = j
            k += 1
            j += 1
        if k == len(want):
            found.append((s, j, align))
    if found:
        s = _pick([f[0] for f in found], hint)
        return next(f for f in found if f[0] == s)
    return None


def _fuzzy_locate(block: list[str], src: list[str], hint: int | None,
                  min_ratio: float) -> tuple[int, int, list[int | None]] | None:
    """The parent region that best matches ``block`` line by line, or None.

    Over stripped, non-blank lines: windows of the block's length +-2 are compared with difflib; the
    best one counts if its match ratio 2M/(|block| + |window|) reaches ``min_ratio`` and at least two
    lines match; ties go to the window nearest ``hint``. The region is trimmed to its first and last
    matched lines.
    """
    b_idx = [i for i, line in enumerate(block) if line.strip()]
    s_idx = [j for j, line in enumerate(src) if line.strip()]
    b_txt = [block[i].strip() for i in b_idx]
    s_txt = [src[j].strip() for j in s_idx]
    n = len(b_txt)
    if n < 2:
        return None
    best: tuple[float, int, list] | None = None  # (ratio, -distance to hint, matching blocks + offset)
    for w in range(max(2, n - 2), n + 3):
        for s in range(0, len(s_txt) - w + 1):
            sm = difflib.SequenceMatcher(a=b_txt, b=s_txt[s : s + w], autojunk=False)
            blocks = [m for m in sm.get_matching_blocks() if m.size]
            matched = sum(m.size for m in blocks)
            ratio = 2.0 * matched / (n + w)
            if matched < 2 or ratio < min_ratio:
                continue
            key = (ratio, -abs(s_idx[s] - hint) if hint is not None else 0)
            if best is None or key > best[:2]:
                best = (key[0], key[1], [(m.a, s + m.b, m.size) for m in blocks])
    if best is None:
        return None
    align: list[int | None] = [None] * len(block)
    for a, b, size in best[2]:
        for k in range(size):
            align[b_idx[a + k]] = s_idx[b + k]
    hits = [j for j in align if j is not None]
    return min(hits), max(hits) + 1, align


def _reindent(lines: list[str], offset: int) -> list[str]:
    if offset == 0:
        return list(lines)
    out = []
    for line in lines:
        if not line.strip():
            out.append("")
        elif offset > 0:
            out.append(" " * offset + line)
        else:
            out.append(line[min(-offset, _indent(line)) :])
    return out


def _describe(lines: list[str]) -> str:
    first = next((line.strip() for line in lines if line.strip()), "")
    return repr(first[:80])


def _closest(lines: list[str], src: list[str]) -> str:
    """Where the SEARCH text parts from the parent: when its first line is in the parent, the first line
    that does not follow (comparing non-blank lines, indentation ignored); else the parent's closest line."""
    want = [line.strip() for line in lines if line.strip()]
    have = [(i, line.strip()) for i, line in enumerate(src) if line.strip()]
    if not want:
        return ""
    best = None  # (lines matched, parent line number of the start)
    for j, (i, text) in enumerate(have):
        if text != want[0]:
            continue
        m = 1
        while m < len(want) and j + m < len(have) and have[j + m][1] == want[m]:
            m += 1
        if best is None or m > best[0]:
            best = (m, i, j)
    if best is not None:
        m, i, j = best
        if m == len(want):  # every non-blank line is there: blank lines or a partial first/last line differ
            return f"; its non-blank lines all appear in the parent from line {i + 1}, with other lines between"
        theirs = repr(have[j + m][1][:80]) if j + m < len(have) else "the end of the program"
        span = "line 1 matches" if m == 1 else f"lines 1-{m} match"
        return (f"; its {span} the parent from line {i + 1}, but its line {m + 1} {want[m][:80]!r} does not "
                f"(the parent has {theirs} there)")
    close = difflib.get_close_matches(want[0], [text for _, text in have], n=1, cutoff=0.6)
    return f"; closest parent line {close[0][:80]!r}" if close else ""


def _replace_block(
    src: list[str],
    old: list[str],
    new: list[str],
    *,
    hint: int | None,
    what: str,
    append_if_empty: bool,
    anchor: int | None = None,
    context: list[int | None] | None = None,
    fuzzy: float | None = None,
) -> list[str]:
    """``src`` with ``old`` replaced by ``new`` (both as written by the model).

    ``anchor`` (an index into ``old``) is the line whose indentation drift
    sets the re-indent offset; by default the first non-blank line.
    ``context[i]`` (diff hunks) is the index into ``old`` of new line ``i``
    when it is a context line: it keeps the parent's own text.
    """
    old_body, lead = _strip_edge_blanks(old)
    new_body, new_lead = _strip_edge_blanks(new)
    if not old_body:
        if append_if_empty or hint is None:
            sep = [""] if src and src[-1].strip() else []
            return src + sep + new_body
        at = max(0, min(len(src), hint))
        return src[:at] + new_body + src[at:]
    hint = None if hint is None else hint + lead
    found = _locate(old_body, src, hint)
    if found is None:
        # SEARCH text that starts or ends mid-line (``features=32``): a substring replacement.
        text = "\n".join(src)
        raw_old, raw_new = "\n".join(old_body), "\n".join(new_body)
        if raw_old in text:
            return text.replace(raw_old, raw_new, 1).split("\n")
        if len(old_body) == 1 and len(new_body) <= 1 and old_body[0].strip() in text:
            return text.replace(old_body[0].strip(), raw_new.strip(), 1).split("\n")
        found = _fuzzy_locate(old_body, src, hint, fuzzy) if fuzzy is not None else None
    if found is not None:
        start, end, align = found
        k = None if anchor is None else anchor - lead
        if k is None or not (0 <= k < len(old_body)) or align[k] is None or not old_body[k].strip():
            k = next(i for i, line in enumerate(old_body) if line.strip() and align[i] is not None)
        offset = _indent(src[align[k]]) - _indent(old_body[k])
        if context is not None and offset == 1 and (anchor is None or k != anchor - lead):
            # Measured on a context line of a diff: one column is the ' ' prefix the model dropped,
            # not a re-indentation of the block (Python indents in steps of 2 or more).
            offset = 0
        body = _reindent(new_body, offset)
        if context is not None:
            for i in range(len(body)):
                o = context[i + new_lead]
                if o is not None and 0 <= o - lead < len(old_body) and align[o - lead] is not None:
                    body[i] = src[align[o - lead]]
        return src[:start] + body + src[end:]
    raise DeltaError(f"{what} not found in the parent: first line {_describe(old_body)}{_closest(old_body, src)}")


def apply_edits(parent_source: str, text: str, fmt: EditFormat = "search_replace",
                fuzzy: float | None = FUZZY_MIN_RATIO) -> str:
    """Apply the edit in LLM answer ``text`` to ``parent_source``; return the child program.

    The child comes back normalised: LF line ends, tabs expanded to 4
    spaces, no trailing spaces, one final newline. ``fuzzy``: the least match ratio
    of the last-resort approximate match of a SEARCH block or hunk (None: exact
    matching only; DESIGN.md §1 "Applying an edit"). Raises ``DeltaError``
    (kind ``delta_apply``) with the reason when the edit cannot be parsed,
    does not apply, or changes nothing.
    """
    if fmt not in EDIT_FORMATS:
        raise ValueError(f"edit format {fmt!r}: expected one of {list(EDIT_FORMATS)}")
    src = _lines(parent_source)
    try:
        parsed: list = parse_search_replace(text) if fmt == "search_replace" else parse_unified_diff(text)
    except DeltaError as e:
        if e.reason.startswith("no ") and re.search(r"^\s*class\s+Net\b", extract_code(text), re.MULTILINE):
            raise DeltaError(e.reason + "; the answer looks like a whole program, not an edit") from None
        raise
    if fmt == "search_replace":
        edits = parsed
        for i, e in enumerate(edits, 1):
            what = f"SEARCH block {i} of {len(edits)}"
            src = _replace_block(src, _lines(e.search), _lines(e.replace), hint=None, what=what, append_if_empty=True,
                                 fuzzy=fuzzy)
    else:
        hunks = parsed
        for i, h in enumerate(hunks, 1):
            hint = None if h.old_start is None else h.old_start - 1
            what = f"hunk {i} of {len(hunks)}"
            old = [t.expandtabs(4) for t in h.old]
            # Models drop the leading space of context lines more often than they garble '-' lines:
            # the first removed line sets the indentation offset of the added ones.
            tags = [tag for tag, t in h.lines if tag in " -"]
            anchor = next((i for i, tag in enumerate(tags) if tag == "-" and old[i].strip()), None)
            context: list[int | None] = []
            o = 0
            for tag, _ in h.lines:
                if tag == " ":
                    context.append(o)
                elif tag == "+":
                    context.append(None)
                o += tag in " -"
            src = _replace_block(
                src,
                old,
                [t.expandtabs(4) for t in h.new],
                hint=hint,
                what=what,
                append_if_empty=False,
                anchor=anchor,
                context=context,
                fuzzy=fuzzy,
            )
    child = _join(src)
    if child == _normalized(parent_source):
        raise DeltaError("no-op edit: the edit applies but leaves the parent unchanged")
    return child


# ---------------------------------------------------------------------------
# The canonical edit between two programs (training pairs)
# ---------------------------------------------------------------------------


def _search_replace_text(parent: list[str], child: list[str], context: int) -> str:
    sm = difflib.SequenceMatcher(a=parent, b=child, autojunk=False)
    blocks = []
    for group in sm.get_grouped_opcodes(context):
        i1, i2 = group[0][1], group[-1][2]
        j1, j2 = group[0][3], group[-1][4]
        # A block must hold a non-blank line and be found first at its own place: widen until it is.
        while True:
            body, lead = _strip_edge_blanks(parent[i1:i2])
            n = len(body)
            first = next((s for s in range(len(parent) - n + 1) if parent[s : s + n] == body), None) if body else None
            if first == i1 + lead or (i1 == 0 and i2 == len(parent)):
                break
            if i1 > 0:
                i1, j1 = i1 - 1, j1 - 1
            if i2 < len(parent):
                i2, j2 = i2 + 1, j2 + 1
        blocks.append(f"{SEARCH_MARK}\n" + "".join(f"{x}\n" for x in parent[i1:i2]) + f"{DIVIDER_MARK}\n" + "".join(f"{x}\n" for x in child[j1:j2]) + f"{REPLACE_MARK}\n")
    return "\n".join(blocks)


def make_edit(parent_source: str, child_source: str, fmt: EditFormat = "search_replace", context: int = 2) -> str:
    """The edit, in format ``fmt``, that turns ``parent_source`` into ``child_source`` (checked by applying it).

    SEARCH/REPLACE blocks carry ``context`` unchanged lines on each side and
    are widened until the SEARCH text's first occurrence is its own place; a
    unified diff is ``difflib``'s with ``a/net.py``/``b/net.py`` headers,
    fenced as the delta prompt asks. Raises ``ValueError`` for identical programs.
    """
    if fmt not in EDIT_FORMATS:
        raise ValueError(f"edit format {fmt!r}: expected one of {list(EDIT_FORMATS)}")
    parent, child = _lines(_normalized(parent_source)), _lines(_normalized(child_source))
    if parent == child:
        raise ValueError("make_edit: the two programs are identical (a no-op edit)")
    if fmt == "search_replace":
        text = _search_replace_text(parent, child, context)
    else:
        diff = difflib.unified_diff(parent, child, "a/net.py", "b/net.py", n=max(context, 1), lineterm="")
        text = "```diff\n" + "\n".join(diff) + "\n```\n"
    try:
        ok = apply_edits(parent_source, text, fmt) == _normalized(child_source)
    except DeltaError:
        ok = False
    if not ok:  # pathological repeats: fall back to one block over the whole program
        if fmt == "search_replace":
            text = f"{SEARCH_MARK}\n{_join(parent)}{DIVIDER_MARK}\n{_join(child)}{REPLACE_MARK}\n"
        else:
            body = [f"-{x}" for x in parent] + [f"+{x}" for x in child]
            text = f"```diff\n--- a/net.py\n+++ b/net.py\n@@ -1,{len(parent)} +1,{len(child)} @@\n" + "\n".join(body) + "\n```\n"
    return text


__all__ = [
    "DeltaError",
    "Edit",
    "Hunk",
    "EditFormat",
    "EDIT_FORMATS",
    "extract_code",
    "parse_search_replace",
    "parse_unified_diff",
    "apply_edits",
    "make_edit",
]
