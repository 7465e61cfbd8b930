"""The candidate contract (DESIGN.md §2): source text that defines a linen ``Net``; build it, check it, apply it.

Runs only inside a sandbox worker: ``build_net`` executes untrusted code
(with restricted builtins and a guarded ``__import__``, which are layers, not
the guard). Everything here raises ``CandidateError`` with a kind from the
fixed taxonomy, never anything else, for a bad candidate.

Leniency: ``Net`` need not take ``train`` in ``__call__`` (nor spell it
``train``: ``training``/``is_training``/``deterministic`` are adapted), need
not have a ``num_classes`` field (the shape check then verifies the output
width), and may be a module instance (``Net = nn.Sequential([...])``).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import hashlib
import inspect
import traceback
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.candidates import policy
from cenas_jax.candidates.errors import CandidateError, ErrorKind

CANDIDATE_FILENAME = "<candidate>"
CANDIDATE_MODULE_NAME = "cenas_candidate"
SHAPE_CHECK_BATCH = 2
_MAX_MESSAGE = 1200

# Input shapes (H, W, C) the datasets give: digits, MNIST-like, CIFAR/SVHN-like, ImageNette/CelebA at 64.
STANDARD_INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (8, 8, 1),
    "mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "imagenette": (64, 64, 3),
}

_SAFE_BUILTIN_NAMES = (
    "abs", "all", "any", "bool", "bytes", "callable", "chr", "classmethod", "complex", "dict",
    "divmod", "enumerate", "filter", "float", "format", "frozenset", "hash", "int", "isinstance",
    "issubclass", "iter", "len", "list", "map", "max", "min", "next", "object", "ord", "pow",
    "print", "property", "range", "repr", "reversed", "round", "set", "slice", "sorted",
    "staticmethod", "str", "sum", "super", "tuple", "type", "zip",
    "NotImplemented", "Ellipsis",
    "ArithmeticError", "AssertionError", "AttributeError", "Exception", "IndexError", "KeyError",
    "LookupError", "NotImplementedError", "RuntimeError", "StopIteration", "TypeError",
    "ValueError", "ZeroDivisionError",
    "__build_class__",  # needed by every ``class`` statement
)  # fmt: skip


class _ImportRefused(ImportError):
    """The guarded ``__import__`` refused a module (reported as a policy error)."""


def _guarded_import(name: str, globals=None, locals=None, fromlist=(), level: int = 0):  # noqa: A002 - the signature of builtins.__import__, which this replaces
    """``__import__`` that admits only the policy's allow-listed modules."""
    if level:
        raise _ImportRefused("relative imports are not allowed")
    if fromlist:
        why = policy.import_from_allowed(name, [str(n) for n in fromlist])
        if why is not None:
            raise _ImportRefused(why)
    elif not policy.module_allowed(name):
        raise _ImportRefused(f"import of {name!r} is not in the allow-list")
    return builtins.__import__(name, globals, locals, fromlist, level)


def safe_builtins() -> dict[str, Any]:
    """A fresh dict of the builtins a candidate may use (no open/exec/eval/getattr; guarded import)."""
    table = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    table["__import__"] = _guarded_import
    return table


@dataclasses.dataclass(frozen=True)
class BuiltNet:
    """A candidate's ``Net`` instance and how to call it."""

    module: nn.Module
    takes_train: bool  # whether ``__call__`` accepts ``train``


def _candidate_lineno(tb) -> int | None:
    """The innermost line of the candidate source in a traceback, if any."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == CANDIDATE_FILENAME:
            line = lineno
    return line


def _describe(exc: BaseException) -> tuple[str, int | None]:
    lineno = _candidate_lineno(exc.__traceback__)
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + " ..."
    if lineno is not None:
        text = f"line {lineno}: {text}"
    return text, lineno


def _failure(kind: ErrorKind, prefix: str, exc: BaseException) -> CandidateError:
    if isinstance(exc, CandidateError):
        return exc
    if isinstance(exc, MemoryError):
        kind = ErrorKind.MEMORY
    text, lineno = _describe(exc)
    return CandidateError(kind, f"{prefix}: {text}", lineno)


def parse_source(source: str):
    """Compile candidate source to a code object; a syntax error is ``CandidateError(SYNTAX)`` with its line."""
    try:
        return compile(source, CANDIDATE_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as e:
        where = f"line {e.lineno}: " if e.lineno else ""
        raise CandidateError(ErrorKind.SYNTAX, f"{where}{e.msg}", e.lineno) from None
    except ValueError as e:  # e.g. null bytes in the source
        raise CandidateError(ErrorKind.SYNTAX, str(e)) from None


def build_net(source: str, num_classes: int) -> BuiltNet:
    """Execute candidate source in a fresh namespace and instantiate its ``Net``.

    Raises ``CandidateError``: SYNTAX (does not parse), POLICY (a refused
    import at run time), BUILD (execution failed, no ``Net``, not a linen
    Module, cannot be instantiated), MEMORY.
    """
    code = parse_source(source)
    namespace: dict[str, Any] = {"__builtins__": safe_builtins(), "__name__": CANDIDATE_MODULE_NAME}
    try:
        exec(code, namespace)  # noqa: S102 - untrusted by design: this runs inside the sandbox worker
    except _ImportRefused as e:
        text, lineno = _describe(e)
        raise CandidateError(ErrorKind.POLICY, f"import refused: {text}", lineno) from None
    except (Exception, SystemExit) as e:
        raise _failure(ErrorKind.BUILD, "executing the source failed", e) from None

    net = namespace.get("Net")
    if net is None:
        raise CandidateError(ErrorKind.BUILD, "the source defines no `Net` (expected `class Net(nn.Module)`)")
    if isinstance(net, nn.Module):
        module = net  # lenient: ``Net = nn.Sequential([...])``, an instance rather than a class
    elif _module_class(net) is not None:
        # A class, or a functools.partial of one: model-zoo files write
        # ``ResNet18 = partial(ResNet, stage_sizes=..., block_cls=...)``.
        field_names = {f.name for f in dataclasses.fields(_module_class(net))}
        given = net.keywords if isinstance(net, functools.partial) else {}
        kwargs = {"num_classes": num_classes} if "num_classes" in field_names and "num_classes" not in given else {}
        try:
            module = net(**kwargs)
        except (Exception, SystemExit) as e:
            raise _failure(ErrorKind.BUILD, "instantiating `Net` failed", e) from None
        if not isinstance(module, nn.Module):
            raise CandidateError(ErrorKind.BUILD, f"`Net(...)` must give a flax.linen.Module, got {type(module).__name__}")
    else:
        raise CandidateError(
            ErrorKind.BUILD,
            f"`Net` must be a subclass of flax.linen.Module (or a functools.partial of one), got {type(net).__name__}",
        )
    try:
        params = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError, AttributeError) as e:
        raise CandidateError(ErrorKind.BUILD, f"`Net.__call__` has no inspectable signature: {e}") from None
    if "train" in params:
        return BuiltNet(module=module, takes_train=True)
    for arg, same_sense in _TRAIN_ALIASES.items():
        if arg in params:
            return BuiltNet(module=TrainFlagAdapter(module, arg, same_sense), takes_train=True)
    return BuiltNet(module=module, takes_train=False)


def _module_class(net: Any) -> type | None:
    """The linen Module class ``net`` is, or a ``functools.partial`` (possibly nested) wraps; else None."""
    while isinstance(net, functools.partial):
        net = net.func
    return net if isinstance(net, type) and issubclass(net, nn.Module) else None


# Other spellings of the mode flag in real Flax code; False: the flag means "not training".
_TRAIN_ALIASES: dict[str, bool] = {"training": True, "is_training": True, "deterministic": False}


class TrainFlagAdapter(nn.Module):
    """Calls a ``Net`` whose mode flag is spelled ``training``/``is_training``/``deterministic`` with ``train``.

    Its variables sit one level deeper (under ``net``); nothing else changes.
    """

    net: nn.Module
    arg: str
    same_sense: bool

    def __call__(self, x, train: bool = False):
        return self.net(x, **{self.arg: train if self.same_sense else not train})


def _train_kwargs(built: BuiltNet, train: bool) -> dict[str, bool]:
    return {"train": train} if built.takes_train else {}


def _as_rngs(rngs) -> dict[str, jax.Array] | None:
    if rngs is None or isinstance(rngs, Mapping):
        return rngs
    return {"dropout": rngs}


def init_net(built: BuiltNet, key: jax.Array, x: jax.Array):
    """Initialise variables (``params`` and e.g. ``batch_stats``) from ``key`` on a sample input ``x`` (B,H,W,C)."""
    rngs = {"params": key, "dropout": jax.random.fold_in(key, 1)}
    return built.module.init(rngs, x, **_train_kwargs(built, False))


def apply_net(built: BuiltNet, variables, x: jax.Array, train: bool, rngs=None):
    """Forward pass: ``x`` (B,H,W,C) float32 -> ``(logits (B, num_classes), updates)``.

    ``updates`` holds the new non-parameter collections (``batch_stats``) when
    ``train`` is True and the net has any, else ``{}``. ``rngs`` is a key (used
    as the ``dropout`` stream) or a dict of named keys; needed when ``train``
    and the net uses Dropout. Nets without a ``train`` argument are called
    without it; their collections are still passed as mutable so that a
    BatchNorm that always updates its statistics does not fail.
    """
    mutable = [name for name in variables if name != "params"]
    kwargs = _train_kwargs(built, train)
    if mutable:
        logits, updates = built.module.apply(variables, x, rngs=_as_rngs(rngs), mutable=mutable, **kwargs)
        return logits, (dict(updates) if train else {})
    return built.module.apply(variables, x, rngs=_as_rngs(rngs), **kwargs), {}


def _input_spec(input_shape, batch: int = SHAPE_CHECK_BATCH) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, *tuple(int(d) for d in input_shape)), jnp.float32)


def abstract_variables(built: BuiltNet, input_shape) -> tuple[Any, Any]:
    """Shapes of the variables and of the eval-mode output at batch 2, by ``jax.eval_shape`` (nothing allocated).

    Raises ``CandidateError(SHAPE)`` when tracing the forward pass fails.
    """
    x = _input_spec(input_shape)

    def init_and_apply(key, x):
        # One pass: the init call's own output is the eval-mode forward pass (train=False).
        rngs = {"params": key, "dropout": jax.random.fold_in(key, 1)}
        logits, variables = built.module.init_with_output(rngs, x, **_train_kwargs(built, False))
        return variables, logits

    try:
        return jax.eval_shape(init_and_apply, jax.random.PRNGKey(0), x)
    except (Exception, SystemExit) as e:
        raise _failure(ErrorKind.SHAPE, f"forward pass on input {x.shape} failed", e) from None


def count_params(variables) -> int:
    """Number of scalars in the ``params`` collection (arrays or ShapeDtypeStructs); batch_stats do not count."""
    if "params" not in variables:
        return 0
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"])))


def shape_check(built: BuiltNet, input_shape, num_classes: int) -> tuple[int, tuple[int, ...]]:
    """Trace init + forward at batch 2 without allocating; return ``(params_count, out_shape)``.

    Raises ``CandidateError(SHAPE)`` when tracing fails or the output is not a
    floating array of shape ``(2, num_classes)``.
    """
    params, out_shape, _ = checked_variables(built, input_shape, num_classes)
    return params, out_shape


def checked_variables(built: BuiltNet, input_shape, num_classes: int):
    """``shape_check`` that also returns the abstract variables: ``(params_count, out_shape, variables)``.

    The variables (ShapeDtypeStructs) can be passed on to ``structure_hash``.
    """
    variables, out = abstract_variables(built, input_shape)
    expected = (SHAPE_CHECK_BATCH, int(num_classes))
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise CandidateError(
            ErrorKind.SHAPE, f"`Net` must return an array of shape {expected}, got a {type(out).__name__}"
        )
    got = tuple(out.shape)
    if got != expected:
        raise CandidateError(
            ErrorKind.SHAPE,
            f"wrong output shape for input {(SHAPE_CHECK_BATCH, *input_shape)}: expected {expected} "
            f"(batch, num_classes), got {got}",
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise CandidateError(ErrorKind.SHAPE, f"`Net` must return floating logits, got dtype {out.dtype}")
    return count_params(variables), got, variables


# ---------------------------------------------------------------------------
# Structure hash: the forward pass's jaxpr, canonicalised
# ---------------------------------------------------------------------------

# Equation parameters that carry names (of user functions, of sources) rather than structure.
_NAME_PARAMS = frozenset({"name", "debug_info", "source_info", "jvp_jaxpr_fun", "jvp_jaxpr_thunk", "fwd_jaxpr_thunk"})


def _aval_text(v) -> str:
    aval = getattr(v, "aval", None)
    shape = getattr(aval, "shape", ())
    dtype = getattr(aval, "dtype", "")
    return f"{dtype}{list(shape)}"


class _JaxprWriter:
    """Writes a jaxpr as text with variables numbered by first use, so names and dict order do not matter."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, jaxpr, depth: int = 0) -> None:
        ids: dict[int, int] = {}

        def ref(v) -> str:
            if hasattr(v, "val"):  # a Literal: its value is structure (a scale, an epsilon)
                val = np.asarray(v.val)
                text = f"{val.item():.6g}" if val.size == 1 else f"array{list(val.shape)}"
                return f"lit({text})"
            key = id(v)
            if key not in ids:
                ids[key] = len(ids)
            return f"v{ids[key]}:{_aval_text(v)}"

        pad = "  " * depth
        for eqn in jaxpr.eqns:
            ins = ",".join(ref(v) for v in eqn.invars)
            outs = ",".join(ref(v) for v in eqn.outvars)
            params, subs = [], []
            for k in sorted(eqn.params):
                if k in _NAME_PARAMS:
                    continue
                value = eqn.params[k]
                items = value if isinstance(value, (tuple, list)) else (value,)
                jaxprs = [j for j in items if hasattr(j, "eqns") or hasattr(j, "jaxpr")]
                if jaxprs:
                    subs.extend((k, j) for j in jaxprs)
                    continue
                if callable(value):
                    continue
                text = str(value)
                if " at 0x" in text:
                    continue
                params.append(f"{k}={text}")
            self.lines.append(f"{pad}{eqn.primitive.name}({ins})->({outs}){{{';'.join(params)}}}")
            for k, sub in subs:
                self.lines.append(f"{pad} {k}:")
                self.write(sub.jaxpr if hasattr(sub, "jaxpr") and not hasattr(sub, "eqns") else sub, depth + 1)
        self.lines.append(f"{pad}return " + ",".join(ref(v) for v in jaxpr.outvars))


def forward_jaxpr(built: BuiltNet, input_shape, variables=None):
    """The eval-mode forward pass's ClosedJaxpr at batch 2 (variables as inputs, nothing allocated).

    ``variables``: the abstract variables from ``abstract_variables`` if already at hand (saves a trace).
    """
    if variables is None:
        variables, _ = abstract_variables(built, input_shape)
    x = _input_spec(input_shape)

    def forward(variables, x):
        return apply_net(built, variables, x, train=False)[0]

    try:
        return jax.make_jaxpr(forward)(variables, x)
    except (Exception, SystemExit) as e:
        raise _failure(ErrorKind.SHAPE, f"tracing the forward pass on input {x.shape} failed", e) from None


def structure_text(built: BuiltNet, input_shape, variables=None) -> str:
    """The canonical text that ``structure_hash`` hashes (for debugging why two nets differ)."""
    writer = _JaxprWriter()
    writer.write(forward_jaxpr(built, input_shape, variables).jaxpr)
    return "\n".join(writer.lines)


def structure_hash(built: BuiltNet, input_shape, variables=None) -> str:
    """A 16-hex-digit hash of the forward pass's jaxpr (primitives, shapes, wiring) at batch 2, eval mode.

    Blind to variable, layer and class names and to formatting; changes
    when a layer's width, an activation or the wiring changes. ``variables``
    as in ``forward_jaxpr``.
    """
    text = structure_text(built, input_shape, variables)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "BuiltNet",
    "CANDIDATE_FILENAME",
    "STANDARD_INPUT_SHAPES",
    "TrainFlagAdapter",
    "abstract_variables",
    "apply_net",
    "build_net",
    "checked_variables",
    "count_params",
    "forward_jaxpr",
    "init_net",
    "parse_source",
    "safe_builtins",
    "shape_check",
    "structure_hash",
    "structure_text",
]
