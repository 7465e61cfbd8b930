"""Edits as language models write them: SEARCH/REPLACE blocks, unified diffs, full programs."""

import ast
import pickle
import re

import pytest

from cenas_jax.search.delta import (
    DeltaError,
    apply_edits,
    extract_code,
    make_edit,
    parse_search_replace,
    parse_unified_diff,
)

PARENT = '''"""A small CNN."""
import flax.linen as nn
import jax.numpy as jnp


class Block(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (3, 3), padding="SAME")(x)
        x = nn.relu(x)
        return x


class Net(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Block(32)(x, train)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = Block(64)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(128)(x)
        x = nn.relu(x)
        return nn.Dense(self.num_classes)(x)
'''


def _parses(src: str) -> None:
    ast.parse(src)


# ---------------------------------------------------------------------------
# SEARCH/REPLACE
# ---------------------------------------------------------------------------


def test_sr_fenced_with_prose_around():
    out = '''Sure! Here is an improved version that widens the second block:

```python
<<<<<<< SEARCH
        x = Block(64)(x, train)
=======
        x = Block(96)(x, train)
>>>>>>> REPLACE
```

This should increase the capacity of the network without many more parameters.'''
    child = apply_edits(PARENT, out, "search_replace")
    assert "Block(96)(x, train)" in child and "Block(64)" not in child
    assert child == PARENT.replace("Block(64)", "Block(96)")


def test_sr_two_blocks_dedented_search_is_reindented():
    # The model wrote the SEARCH/REPLACE text at column 0; the parent has it at depth 8.
    out = '''I'll add batch normalisation and dropout.

<<<<<<< SEARCH
x = nn.Conv(self.features, (3, 3), padding="SAME")(x)
x = nn.relu(x)
=======
x = nn.Conv(self.features, (3, 3), padding="SAME")(x)
x = nn.BatchNorm(use_running_average=not train)(x)
x = nn.relu(x)
>>>>>>> REPLACE

And then before the classifier:

<<<<<<< SEARCH
    x = nn.Dense(128)(x)
    x = nn.relu(x)
=======
    x = nn.Dense(128)(x)
    x = nn.relu(x)
    x = nn.Dropout(0.3, deterministic=not train)(x)
>>>>>>> REPLACE
'''
    child = apply_edits(PARENT, out)
    _parses(child)
    assert "        x = nn.BatchNorm(use_running_average=not train)(x)\n        x = nn.relu(x)\n        return x" in child
    assert "        x = nn.Dropout(0.3, deterministic=not train)(x)\n        return nn.Dense" in child


def test_sr_crlf_trailing_spaces_no_final_newline():
    out = "<<<<<<< SEARCH\r\n        x = nn.Dense(128)(x)   \r\n=======\r\n        x = nn.Dense(256)(x)\r\n>>>>>>> REPLACE"
    child = apply_edits(PARENT.replace("\n", "\r\n").rstrip(), out)
    assert child == PARENT.replace("nn.Dense(128)", "nn.Dense(256)")
    assert "\r" not in child and child.endswith("\n")


def test_sr_repeated_search_applies_at_first_occurrence():
    out = "<<<<<<< SEARCH\n        x = nn.relu(x)\n=======\n        x = nn.gelu(x)\n>>>>>>> REPLACE\n"
    child = apply_edits(PARENT, out)
    assert child.count("nn.gelu(x)") == 1 and child.count("nn.relu(x)") == 1
    # The first occurrence is in Block, before Net.
    assert child.index("nn.gelu") < child.index("class Net")


def test_sr_empty_search_appends():
    out = '''<<<<<<< SEARCH
=======
def count_params(params):
    return sum(p.size for p in params)
>>>>>>> REPLACE'''
    child = apply_edits(PARENT, out)
    assert child.startswith(PARENT) and child.rstrip().endswith("return sum(p.size for p in params)")
    _parses(child)


def test_sr_part_of_a_line():
    out = "<<<<<<< SEARCH\nnn.max_pool(x, (2, 2), strides=(2, 2))\n=======\nnn.avg_pool(x, (2, 2), strides=(2, 2))\n>>>>>>> REPLACE"
    child = apply_edits(PARENT, out)
    assert "        x = nn.avg_pool(x, (2, 2), strides=(2, 2))\n" in child
    out = "<<<<<<< SEARCH\nBlock(32)\n=======\nBlock(48)\n>>>>>>> REPLACE"
    assert "        x = Block(48)(x, train)\n" in apply_edits(PARENT, out)


def test_sr_fences_inside_sections_and_blank_lines_dropped():
    # The model fenced each section and dropped the blank line between the field and the method.
    out = '''<<<<<<< SEARCH
```python
class Net(nn.Module):
    num_classes: int = 10
    @nn.compact
```
=======
```python
class Net(nn.Module):
    num_classes: int = 10
    width: int = 48

    @nn.compact
```
>>>>>>> REPLACE'''
    child = apply_edits(PARENT, out)
    assert "    num_classes: int = 10\n    width: int = 48\n\n    @nn.compact\n    def __call__(self, x, train: bool = False):\n        x = Block(32)" in child
    _parses(child)


def test_sr_missing_closing_marker_starts_next_block():
    out = '''<<<<<<< SEARCH
        x = Block(32)(x, train)
=======
        x = Block(16)(x, train)
<<<<<<< SEARCH
        x = nn.Dense(128)(x)
=======
        x = nn.Dense(64)(x)
>>>>>>> REPLACE'''
    assert len(parse_search_replace(out)) == 2
    child = apply_edits(PARENT, out)
    assert "Block(16)" in child and "nn.Dense(64)" in child


@pytest.mark.parametrize(
    "out, reason",
    [
        ("<<<<<<< SEARCH\n        x = nn.relu(x)\n=======\n        x = nn.relu(x)\n>>>>>>> REPLACE", "no-op edit"),
        (
            "<<<<<<< SEARCH\n        x = nn.Dense(512)(x)\n        x = nn.tanh(x)\n=======\n        x = nn.Dense(64)(x)\n>>>>>>> REPLACE",
            "SEARCH block 1 of 1 not found in the parent: first line 'x = nn.Dense(512)(x)'; closest parent line 'x = nn.Dense(128)(x)'",
        ),
        (  # the first line is in the parent: the message names the line that parts from it, not a "closest" twin
            "<<<<<<< SEARCH\n        x = nn.Dense(128)(x)\n        x = nn.Dense(128)(x)\n=======\n        x = nn.Dense(64)(x)\n"
            ">>>>>>> REPLACE",
            "first line 'x = nn.Dense(128)(x)'; its line 1 matches the parent from line 25, but its line 2 "
            "'x = nn.Dense(128)(x)' does not (the parent has 'x = nn.relu(x)' there)",
        ),
        (
            "<<<<<<< SEARCH\n        x = jnp.mean(x, axis=(1, 2))\n        x = nn.Dense(128)(x)\n        x = nn.tanh(x)\n"
            "        x = nn.gelu(x)\n        x = nn.sigmoid(x)\n=======\n        x = nn.Dense(64)(x)\n>>>>>>> REPLACE",
            "its lines 1-2 match the parent from line 24, but its line 3 'x = nn.tanh(x)' does not (the parent has "
            "'x = nn.relu(x)' there)",
        ),
        ("<<<<<<< SEARCH\n        x = nn.Dense(128)(x)\n=======\n        x = nn.Dense(64)(x)\n", "block 1: missing '>>>>>>> REPLACE'"),
        ("<<<<<<< SEARCH\n        x = nn.Dense(128)(x)\n", "block 1: missing '=======' after"),
        ("```python\n" + PARENT + "```\n", "no SEARCH/REPLACE block found (expected"),
        ("```python\n" + PARENT + "```\n", "; the answer looks like a whole program, not an edit"),
        ("I would add dropout.", "no SEARCH/REPLACE block found"),
        ("<<<<<<< SEARCH\nx\n<<<<<<< SEARCH\n", "block 1: a second '<<<<<<< SEARCH'"),
    ],
)
def test_sr_failures_name_the_reason(out, reason):
    with pytest.raises(DeltaError) as e:
        apply_edits(PARENT, out)
    assert reason in e.value.reason
    assert e.value.kind.value == "delta_apply"
    again = pickle.loads(pickle.dumps(e.value))
    assert isinstance(again, DeltaError) and again.reason == e.value.reason


def test_second_block_failure_is_numbered():
    out = (
        "<<<<<<< SEARCH\n        x = Block(32)(x, train)\n=======\n        x = Block(16)(x, train)\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\n        x = nn.Conv(7)(x)\n=======\n        x = nn.Conv(8)(x)\n>>>>>>> REPLACE\n"
    )
    with pytest.raises(DeltaError, match="SEARCH block 2 of 2 not found"):
        apply_edits(PARENT, out)


# ---------------------------------------------------------------------------
# Unified diff
# ---------------------------------------------------------------------------


def test_ud_correct_headers_in_fence():
    out = '''Here is the diff:
```diff
--- a/net.py
+++ b/net.py
@@ -22,6 +22,7 @@ class Net(nn.Module):
         x = nn.max_pool(x, (2, 2), strides=(2, 2))
         x = Block(64)(x, train)
         x = jnp.mean(x, axis=(1, 2))
+        x = nn.LayerNorm()(x)
         x = nn.Dense(128)(x)
         x = nn.relu(x)
         return nn.Dense(self.num_classes)(x)
```'''
    child = apply_edits(PARENT, out, "unified_diff")
    assert "axis=(1, 2))\n        x = nn.LayerNorm()(x)\n        x = nn.Dense(128)" in child


def test_ud_wrong_line_numbers_are_rederived():
    out = '''```diff
@@ -3,4 +3,4 @@
     @nn.compact
     def __call__(self, x, train: bool = False):
-        x = Block(32)(x, train)
+        x = Block(48)(x, train)
         x = nn.max_pool(x, (2, 2), strides=(2, 2))
@@ -90,2 +91,2 @@
-        x = nn.Dense(128)(x)
-        x = nn.relu(x)
+        x = nn.Dense(256)(x)
+        x = nn.swish(x)
```'''
    child = apply_edits(PARENT, out, "unified_diff")
    assert "Block(48)" in child and "nn.Dense(256)(x)\n        x = nn.swish(x)" in child
    # The second relu (in Net) changed; Block's stayed.
    assert child.count("nn.relu(x)") == 1 and child.index("nn.relu") < child.index("class Net")
    _parses(child)


def test_ud_without_any_header_and_prose():
    out = '''To make the network deeper, add a third block:

```
         x = Block(64)(x, train)
+        x = Block(128)(x, train)
         x = jnp.mean(x, axis=(1, 2))
```
Let me know if you want more changes!'''
    hunks = parse_unified_diff(out)
    assert len(hunks) == 1 and hunks[0].old_start is None
    child = apply_edits(PARENT, out, "unified_diff")
    assert "Block(64)(x, train)\n        x = Block(128)(x, train)\n        x = jnp.mean" in child


def test_ud_context_lines_missing_their_space_and_bare_header():
    # Context lines copied without the leading ' ' (so each is one column short), '@@ @@' without numbers.
    out = '''```diff
@@ @@
        x = nn.Conv(self.features, (3, 3), padding="SAME")(x)
-        x = nn.relu(x)
+        x = nn.BatchNorm(use_running_average=not train)(x)
+        x = nn.relu(x)
        return x
```'''
    child = apply_edits(PARENT, out, "unified_diff")
    assert '(x)\n        x = nn.BatchNorm(use_running_average=not train)(x)\n        x = nn.relu(x)\n        return x' in child
    _parses(child)


def test_ud_header_breaks_ties_between_repeated_context():
    out = "@@ -27,1 +27,1 @@\n-        x = nn.relu(x)\n+        x = nn.elu(x)\n"
    child = apply_edits(PARENT, out, "unified_diff")
    # Line 27 is Net's relu (the second one), nearer to the hint than Block's at line 12.
    assert child.index("nn.elu") > child.index("class Net")
    # Without a header the first occurrence is used.
    child = apply_edits(PARENT, "-        x = nn.relu(x)\n+        x = nn.elu(x)\n", "unified_diff")
    assert child.index("nn.elu") < child.index("class Net")


def test_ud_addition_only_hunk_goes_to_header_line():
    out = "--- a/net.py\n+++ b/net.py\n@@ -4,0 +4,1 @@\n+import math\n"
    child = apply_edits(PARENT, out, "unified_diff")
    assert child.split("\n")[3] == "import math"


def test_ud_crlf_and_tabs_in_removed_lines():
    out = "@@ -1,1 +1,1 @@\r\n-\t\tx = nn.Dense(128)(x)\r\n+\t\tx = nn.Dense(32)(x)\r\n"
    child = apply_edits(PARENT, out, "unified_diff")
    assert "        x = nn.Dense(32)(x)\n" in child


@pytest.mark.parametrize(
    "out, reason",
    [
        ("@@ -1,2 +1,2 @@\n-        x = nn.Dense(512)(x)\n+        x = nn.Dense(64)(x)\n", "hunk 1 of 1 not found in the parent"),
        ("I think the model is already good. No changes needed.", "no unified-diff hunk found"),
        ("@@ -24,1 +24,1 @@\n-        x = nn.Dense(128)(x)\n+        x = nn.Dense(128)(x)   \n", "no-op edit"),
    ],
)
def test_ud_failures_name_the_reason(out, reason):
    with pytest.raises(DeltaError) as e:
        apply_edits(PARENT, out, "unified_diff")
    assert reason in e.value.reason


def test_unknown_format_is_a_value_error():
    with pytest.raises(ValueError, match="edit format 'patch'"):
        apply_edits(PARENT, "x", "patch")


# ---------------------------------------------------------------------------
# Full programs
# ---------------------------------------------------------------------------

PROG = "import flax.linen as nn\n\n\nclass Net(nn.Module):\n    num_classes: int = 10\n\n    @nn.compact\n    def __call__(self, x, train: bool = False):\n        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))\n"


@pytest.mark.parametrize(
    "out",
    [
        f"```python\n{PROG}```",
        f"Here is a better model:\n\n```py\n{PROG}```\n\nIt flattens the input first.",
        f"```\n{PROG}```\n<|im_end|>",
        f"Sure.\n```python\n{PROG}",  # cut off before the closing fence
        f"Here is the code:\n{PROG}\nThis model is a linear classifier.\nHope it helps.",
        f"```python\nmodel = Net(num_classes=10)\n```\nwhere\n```python\n{PROG}```",
        PROG.replace("\n", "\r\n"),
    ],
)
def test_extract_code_variants(out):
    assert extract_code(out) == PROG


def test_extract_code_nothing():
    assert extract_code("") == ""
    assert extract_code("```python\n```") == ""


# ---------------------------------------------------------------------------
# make_edit: the canonical edit trains the CE update
# ---------------------------------------------------------------------------

CHILDREN = [
    PARENT.replace("Block(64)", "Block(128)"),
    PARENT.replace("nn.relu(x)\n        return x", "nn.gelu(x)\n        return x"),
    PARENT.replace("        x = nn.Dense(128)(x)\n", "        x = nn.Dense(128)(x)\n        x = nn.Dropout(0.2, deterministic=not train)(x)\n"),
    PARENT.replace('"""A small CNN."""\n', "") + "\n\ndef helper(x):\n    return x\n",
    PARENT.replace("nn.relu(x)", "nn.silu(x)"),  # both repeated lines change
    PARENT.replace("        x = nn.relu(x)\n        return nn.Dense", "        return nn.Dense"),  # delete the second relu only
]


@pytest.mark.parametrize("fmt", ["search_replace", "unified_diff"])
@pytest.mark.parametrize("i", range(len(CHILDREN)))
def test_make_edit_round_trip(fmt, i):
    text = make_edit(PARENT, CHILDREN[i], fmt)
    assert apply_edits(PARENT, text, fmt) == CHILDREN[i]
    if fmt == "search_replace":
        # Not a whole-program rewrite: the canonical edit is local.
        searched = sum(len(e.search.splitlines()) for e in parse_search_replace(text))
        assert searched < len(PARENT.splitlines()) // 2


def test_make_edit_identical_is_an_error():
    with pytest.raises(ValueError, match="identical"):
        make_edit(PARENT, PARENT + "\n\n")


def test_ud_addition_only_hunk_with_context_missing_its_space():
    out = "```diff\n@@ -11,2 +11,3 @@\n        x = nn.Conv(self.features, (3, 3), padding=\"SAME\")(x)\n+        x = nn.LayerNorm()(x)\n        x = nn.relu(x)\n```"
    child = apply_edits(PARENT, out, "unified_diff")
    assert '(x)\n        x = nn.LayerNorm()(x)\n        x = nn.relu(x)\n        return x' in child


def _mutate(src: str, rng) -> str:
    lines = src.splitlines()
    for _ in range(rng.integers(1, 4)):
        k = int(rng.integers(1, len(lines)))
        ind = lines[k][: len(lines[k]) - len(lines[k].lstrip())]
        op = rng.random()
        if op < 0.4:
            lines[k] = lines[k].replace("(x)", "(x + 0)", 1) if "(x)" in lines[k] else lines[k] + "  # note"
        elif op < 0.7:
            lines.insert(k, ind + "x = nn.relu(x)")
        elif op < 0.85:
            del lines[k]
        else:
            lines[k] = lines[k].replace("relu", "gelu")
    return "\n".join(lines) + "\n"


def test_noisy_canonical_edits_apply_property():
    """make_edit's output, dressed up as a model would (fences, prose, CRLF, dedent, wrong numbers, dropped spaces), applies."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 0
    for _ in range(80):
        child = _mutate(PARENT, rng)
        if child.strip() == PARENT.strip():
            continue
        want = apply_edits(PARENT, make_edit(PARENT, child, "search_replace"), "search_replace")
        assert want == "\n".join(line.rstrip() for line in child.splitlines()) + "\n"
        # SEARCH/REPLACE: fenced, prose around, whole blocks dedented by 4, CRLF.
        sr = make_edit(PARENT, child, "search_replace")
        blocks = []
        for block in sr.split("<<<<<<< SEARCH\n")[1:]:
            body = [x for x in block.split("\n") if x.strip() and x not in ("=======", ">>>>>>> REPLACE")]
            if all(x.startswith("    ") for x in body):  # dedent a whole block uniformly
                block = "\n".join(x[4:] if x.startswith("    ") else x for x in block.split("\n"))
            blocks.append("<<<<<<< SEARCH\n" + block)
        dedented = "\n".join(blocks)
        noisy = ("Here you go:\n```python\n" + dedented + "```\nThis should help.").replace("\n", "\r\n")
        assert apply_edits(PARENT, noisy, "search_replace") == want
        # Unified diff: wrong line numbers, no file headers, context lines without their leading space.
        ud = make_edit(PARENT, child, "unified_diff")
        ud = re.sub(r"@@ -(\d+)", lambda m: f"@@ -{int(m.group(1)) + int(rng.integers(-7, 8))}", ud)
        ud = ud.replace("--- a/net.py\n+++ b/net.py\n", "")
        ud = "\n".join(line[1:] if line.startswith(" ") else line for line in ud.split("\n"))
        assert apply_edits(PARENT, "The diff:\n" + ud, "unified_diff") == want
        n += 1
    assert n >= 60


# A misremembered SEARCH: as SmolLM2-135M writes them after the quickstart's warm start.
def test_fuzzy_search_with_an_invented_line_replaces_the_best_region():
    text = (
        "<<<<<<< SEARCH\n"
        "        x = Block(32)(x, train)\n"
        "        x = nn.relu(x)\n"  # not in Net.__call__ here: invented
        "        x = nn.max_pool(x, (2, 2), strides=(2, 2))\n"
        "        x = Block(64)(x, train)\n"
        "=======\n"
        "        x = Block(48)(x, train)\n"
        "        x = nn.max_pool(x, (2, 2), strides=(2, 2))\n"
        "        x = Block(96)(x, train)\n"
        ">>>>>>> REPLACE\n"
    )
    child = apply_edits(PARENT, text)
    assert "Block(48)(x, train)" in child and "Block(96)(x, train)" in child
    assert "Block(32)" not in child and "Block(64)" not in child
    assert child.count("nn.max_pool(x, (2, 2), strides=(2, 2))") == PARENT.count("nn.max_pool(x, (2, 2), strides=(2, 2))")
    ast.parse(child)
    with pytest.raises(DeltaError, match="not found in the parent"):
        apply_edits(PARENT, text, fuzzy=None)


def test_fuzzy_search_with_a_skipped_line_keeps_the_lines_outside_the_match():
    text = (
        "<<<<<<< SEARCH\n"
        "        x = Block(32)(x, train)\n"
        "        x = Block(64)(x, train)\n"  # the max_pool line between them was skipped
        "        x = jnp.mean(x, axis=(1, 2))\n"
        "=======\n"
        "        x = Block(32)(x, train)\n"
        "        x = Block(64)(x, train)\n"
        "        x = nn.Dropout(0.1, deterministic=not train)(x)\n"
        "        x = jnp.mean(x, axis=(1, 2))\n"
        ">>>>>>> REPLACE\n"
    )
    assert "nn.max_pool(x, (2, 2), strides=(2, 2))\n        x = Block(64)(x, train)\n        x = jnp.mean" in PARENT
    child = apply_edits(PARENT, text)
    assert "nn.Dropout(0.1, deterministic=not train)(x)" in child
    assert child.splitlines()[0] == PARENT.splitlines()[0] and "class Block(nn.Module):" in child
    ast.parse(child)


def test_fuzzy_search_needs_enough_evidence():
    # One matching line of three (ratio 2*1/(3+1) < 0.75, and fewer than two lines): refused.
    text = (
        "<<<<<<< SEARCH\n"
        "        x = Block(32)(x, train)\n"
        "        y = something_else(x)\n"
        "        z = and_another(y)\n"
        "=======\n"
        "        x = Block(16)(x, train)\n"
        ">>>>>>> REPLACE\n"
    )
    with pytest.raises(DeltaError, match="not found in the parent"):
        apply_edits(PARENT, text)
