"""Pure functions of a program's source text, shared by the search and the report (no package imports).

- ``clean_program``: a program as the LLM sees and writes it (no docstrings, comments or blank-line runs);
  prompts show it, delta edits are made against it, the live view shows the parent that way.
- ``normalize_code``, ``code_tokens``, ``shingles``, ``exact_jaccard``, ``mean_pairwise_jaccard``: the
  k-token shingles that the novelty filter (``search/novelty.py``) hashes, and the exact Jaccard
  similarity the report's diversity figure (the paper's result 5) averages.
"""

from __future__ import annotations

import ast
import io
import itertools
import math
import re
import tokenize
from collections.abc import Sequence
from functools import lru_cache

TOKEN_RE = re.compile(r"[A-Za-z_]\w*|[^\s]")
_SEP = "\x1f"  # joins the tokens of a shingle; never inside a token


@lru_cache(maxsize=4096)
def clean_program(source: str) -> str:
    """``source`` as the LLM sees and writes programs: without docstrings, comments and blank-line runs.

    Measured on SmolLM2-135M after a warm start on the commented corpus: half of its full
    programs opened with a docstring and ran on in prose or repeated lines until the token
    limit. Shown and trained code-only, it starts with the imports. Delta edits are made
    and applied against the cleaned parent. Source that does not parse (or would not after
    cleaning) comes back with only its line ends normalised.
    """
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    try:
        tree = ast.parse(source)
        toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, ValueError, tokenize.TokenError, IndentationError):
        return source.strip("\n") + "\n"
    drop: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if (len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                drop.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines = source.split("\n")
    cut: dict[int, int] = {}  # line -> column where a comment starts
    for t in toks:
        if t.type == tokenize.COMMENT:
            cut[t.start[0]] = t.start[1]
    out: list[str] = []
    for i, line in enumerate(lines, 1):
        if i in drop:
            continue
        if i in cut:
            line = line[: cut[i]].rstrip()
            if not line.strip():
                continue  # a comment line
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue  # one blank line at most, none at the start
        out.append(line)
    cleaned = "\n".join(out).strip("\n") + "\n"
    try:
        ast.parse(cleaned)
    except SyntaxError:
        return source.strip("\n") + "\n"
    return cleaned


_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
_STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.ENCODING}


def _strip_with_tokenize(source: str) -> str:
    """Code without comments and docstrings (bare string statements), via ``tokenize``."""
    toks = list(tokenize.generate_tokens(io.StringIO(source).readline))
    kept: list[str] = []
    i = 0
    prev_type = tokenize.NEWLINE
    while i < len(toks):
        tok = toks[i]
        if tok.type == tokenize.STRING and prev_type in _STATEMENT_START:
            # A statement made only of (implicitly concatenated) strings is a docstring / comment string.
            j = i
            while j < len(toks) and toks[j].type in (tokenize.STRING, tokenize.NL, tokenize.COMMENT):
                j += 1
            if j >= len(toks) or toks[j].type in (tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.DEDENT):
                i = j
                continue
        if tok.type not in _SKIP:
            kept.append(tok.string)
        if tok.type not in (tokenize.COMMENT,):
            prev_type = tok.type
        i += 1
    return "\n".join(kept)


_REGEX_STRIP = re.compile(r'"""[\s\S]*?(?:"""|$)|\'\'\'[\s\S]*?(?:\'\'\'|$)|#[^\n]*')


def normalize_code(source: str) -> str:
    """``source`` without comments and docstrings; whitespace is irrelevant to what follows.

    Uses ``tokenize``; code it cannot tokenize (unterminated strings, bad
    dedents) falls back to a regex strip of triple-quoted strings and ``#``
    comments.
    """
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    try:
        return _strip_with_tokenize(source)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return _REGEX_STRIP.sub(" ", source)


def code_tokens(source: str) -> list[str]:
    """The tokens of the normalised code, matched by ``[A-Za-z_]\\w*|[^\\s]``."""
    return TOKEN_RE.findall(normalize_code(source))


def shingles(source: str, k: int = 7) -> set[str]:
    """The set of k-token shingles of ``source`` (one shingle of all tokens when there are fewer than k)."""
    toks = code_tokens(source)
    if not toks:
        return set()
    if len(toks) < k:
        return {_SEP.join(toks)}
    return {_SEP.join(toks[i : i + k]) for i in range(len(toks) - k + 1)}


def exact_jaccard(a: str, b: str, k: int = 7) -> float:
    """Exact Jaccard similarity of the shingle sets of two programs (1.0 for two empty programs)."""
    sa, sb = shingles(a, k), shingles(b, k)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def _set_jaccard(sa: set[str], sb: set[str]) -> float:
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def mean_pairwise_jaccard(sources: Sequence[str], k: int = 7) -> float:
    """Mean exact Jaccard similarity over all pairs (diversity of a cycle); NaN with fewer than 2 programs.

    Exact on shingle sets, not the MinHash estimate: a cycle holds tens of
    programs, so the O(n²) set operations are cheap and the figure has no
    estimation noise.
    """
    sets = [shingles(s, k) for s in sources]
    if len(sets) < 2:
        return math.nan
    sims = [_set_jaccard(a, b) for a, b in itertools.combinations(sets, 2)]
    return sum(sims) / len(sims)


__all__ = [
    "TOKEN_RE",
    "clean_program",
    "code_tokens",
    "exact_jaccard",
    "mean_pairwise_jaccard",
    "normalize_code",
    "shingles",
]
