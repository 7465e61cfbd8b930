"""The seed corpus L: hand-written linen architectures under ``candidates/corpus/*.py`` (package data).

Each file follows the candidate contract (DESIGN.md §2), starts with a
one-line docstring saying what it is and has a ``# family: <name>`` line. A file
whose network is not called ``Net`` (model-zoo code) names it with a
``# net: <Name>`` line: ``Net = <Name>`` is then appended to its source.
L is the LLM's warm-start training set, the CE update's replay base and the
parents of delta edits.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import re
from importlib import resources
from pathlib import Path

from cenas_jax.candidates import policy
from cenas_jax.candidates.errors import CandidateError
from cenas_jax.candidates.naming import NetNameError, select_net

_FAMILY_RE = re.compile(r"^#\s*family:\s*([A-Za-z0-9_\-]+)\s*$", re.MULTILINE)
_NET_RE = re.compile(r"^#\s*net:\s*(\S+)\s*$", re.MULTILINE)


class CorpusError(ValueError):
    """A corpus file breaks the corpus format (no docstring, no family line)."""


@dataclasses.dataclass(frozen=True)
class CorpusEntry:
    """One seed architecture: file stem, family, source text, file path, one-line description."""

    name: str
    family: str
    source: str
    path: str
    description: str = ""

    @property
    def lines(self) -> int:
        return len(self.source.splitlines())


def corpus_dir() -> Path:
    """Directory holding the corpus files (inside the installed package)."""
    return Path(str(resources.files("cenas_jax.candidates").joinpath("corpus")))


def parse_entry(path: Path) -> CorpusEntry:
    """Read one corpus file; ``CorpusError`` names the file and what is missing."""
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise CorpusError(f"{path}: not valid Python (line {e.lineno}: {e.msg})") from None
    doc = ast.get_docstring(tree)
    if not doc or "\n" in doc.strip():
        raise CorpusError(f"{path}: must start with a one-line docstring saying what the architecture is")
    match = _FAMILY_RE.search(source)
    if match is None:
        raise CorpusError(f"{path}: missing a '# family: <name>' comment line")
    net = _NET_RE.search(source)
    if net is not None:
        try:
            source = select_net(source, net.group(1), where=str(path))
        except NetNameError as e:
            raise CorpusError(f"{path}: '# net:' line: {e}") from None
    return CorpusEntry(
        name=path.stem, family=match.group(1), source=source, path=str(path), description=doc.strip()
    )


def load_corpus(directory: str | Path | None = None) -> list[CorpusEntry]:
    """All corpus entries, sorted by name (``directory`` overrides the packaged corpus, for tests)."""
    root = Path(directory) if directory is not None else corpus_dir()
    if not root.is_dir():
        raise CorpusError(f"corpus directory {root} does not exist")
    paths = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    if not paths:
        raise CorpusError(f"corpus directory {root} holds no *.py files")
    return [parse_entry(p) for p in paths]


def corpus_hash_of(entries: list[CorpusEntry]) -> str:
    """Stable SHA-256 (hex) of entry names and sources, independent of where the files lie."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.name):
        for part in (entry.name, entry.source):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def corpus_hash() -> str:
    """Stable hash of the packaged corpus (a cache key for the LLM warm start)."""
    return corpus_hash_of(load_corpus())


@dataclasses.dataclass(frozen=True)
class EntryCheck:
    """Result of checking one corpus entry: problems (empty = ok), params per input shape, structure hash."""

    name: str
    problems: tuple[str, ...]
    params: dict[str, int]  # input-shape name (contract.STANDARD_INPUT_SHAPES) -> parameter count
    structure_hash: str | None  # at the first input shape (digits for the standard shapes)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_entry(
    entry: CorpusEntry, input_shapes: dict[str, tuple[int, int, int]] | None = None, num_classes: int = 10
) -> EntryCheck:
    """Policy, build and shape check of one entry at each input shape (eval_shape: nothing is allocated).

    Builds the source in this process: the corpus ships with the package
    and is trusted; generated candidates go through the sandbox instead.
    """
    from cenas_jax.candidates import contract  # JAX and Flax: only this check needs them

    shapes = input_shapes or contract.STANDARD_INPUT_SHAPES
    problems = [f"policy: {v}" for v in policy.check_policy(entry.source)]
    params: dict[str, int] = {}
    digest = None
    if problems:
        return EntryCheck(entry.name, tuple(problems), params, digest)
    try:
        built = contract.build_net(entry.source, num_classes)
    except CandidateError as e:
        return EntryCheck(entry.name, (f"{e.kind.value}: {e.message}",), params, digest)
    for i, (shape_name, shape) in enumerate(shapes.items()):
        try:
            params[shape_name], _, variables = contract.checked_variables(built, shape, num_classes)
            if i == 0:
                digest = contract.structure_hash(built, shape, variables)
        except CandidateError as e:
            problems.append(f"{shape_name} {shape}: {e.kind.value}: {e.message}")
    if problems:
        digest = None
    return EntryCheck(entry.name, tuple(problems), params, digest)


def duplicate_structures(checks: list[EntryCheck]) -> list[tuple[str, str]]:
    """Pairs of entry names whose structure hashes coincide (the corpus should be diverse)."""
    seen: dict[str, str] = {}
    pairs = []
    for check in checks:
        if check.structure_hash is None:
            continue
        if check.structure_hash in seen:
            pairs.append((seen[check.structure_hash], check.name))
        else:
            seen[check.structure_hash] = check.name
    return pairs
