"""`cenas eval` on files a newcomer brings: model-zoo code without `Net`, non-UTF-8 files, all-failing batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from programs import mlp

from cenas_jax.candidates.contract import build_net, shape_check
from cenas_jax.candidates.corpus import CorpusError, parse_entry
from cenas_jax.candidates.errors import CandidateError
from cenas_jax.candidates.naming import NetNameError, select_net

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "tests" / "data" / "zoo_resnet.py"
MLP = mlp(16)
CHEAP = ["--no-train", "--no-progress", "--set", "sandbox.workers=1", "--set", "sandbox.check_timeout_s=60"]


def cenas(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "cenas_jax", *args], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"})
    return p.returncode, p.stdout, p.stderr


def test_a_partial_of_a_module_class_is_a_net_and_gets_num_classes():
    src = ZOO.read_text() + "\nNet = ResNetTiny\n"
    built = build_net(src, 7)
    assert type(built.module).__name__ == "ResNet" and built.module.num_classes == 7 and built.takes_train
    params, out = shape_check(built, (8, 8, 1), 7)
    assert out == (2, 7) and params > 0
    # a partial that fixes num_classes itself keeps it (and the shape check then says so)
    fixed = ZOO.read_text() + "\nNet = partial(ResNet, stage_sizes=[1], block_cls=Block, num_classes=3)\n"
    assert build_net(fixed, 10).module.num_classes == 3
    with pytest.raises(CandidateError, match="or a functools.partial of one"):
        build_net("import functools\nNet = functools.partial(print, 1)\n", 10)


def test_select_net_appends_the_choice_and_names_what_the_file_defines():
    src = select_net(ZOO.read_text(), "ResNetSmall")
    assert src.endswith("\nNet = ResNetSmall  # the class evaluated (chosen by name)\n")
    assert build_net(src, 10).module.stage_sizes == [2, 2]
    with pytest.raises(NetNameError, match=r"defines no top-level 'ResNet18'; it defines Block, ModuleDef, ResNet, "
                                           r"ResNetSmall, ResNetTiny"):
        select_net(ZOO.read_text(), "ResNet18")
    with pytest.raises(NetNameError, match="not a Python identifier"):
        select_net(ZOO.read_text(), "os.system('x')")


def test_a_corpus_file_names_its_net_with_a_net_line(tmp_path):
    text = ZOO.read_text().replace('"""\n', '"""\n# family: resnet\n# net: ResNetTiny\n', 1)
    (tmp_path / "zoo.py").write_text(text)
    entry = parse_entry(tmp_path / "zoo.py")
    assert entry.source.endswith("Net = ResNetTiny  # the class evaluated (chosen by name)\n")
    assert build_net(entry.source, 10).module.stage_sizes == [1, 1]
    (tmp_path / "bad.py").write_text(text.replace("# net: ResNetTiny", "# net: ResNet50"))
    with pytest.raises(CorpusError, match="'# net:' line: .*defines no top-level 'ResNet50'"):
        parse_entry(tmp_path / "bad.py")


def test_cli_eval_net_evaluates_a_model_zoo_file_without_editing_it(tmp_path):
    rc, out, err = cenas("eval", str(ZOO), "--net", "ResNetTiny", "--json", *CHEAP)
    assert rc == 0, err
    (row,) = [json.loads(ln) for ln in out.splitlines()]
    assert row["status"] == "ok" and row["params"] > 0 and row["degenerate"] == []
    rc, out, err = cenas("eval", str(ZOO), "--json", *CHEAP)  # without --net: no `Net`, a build error
    assert rc == 1 and json.loads(out)["error_kind"] == "build" and "every candidate failed" in err
    rc, out, err = cenas("eval", str(ZOO), "--net", "ResNet18", *CHEAP)
    assert rc == 1 and "defines no top-level 'ResNet18'; it defines" in out


def test_cli_eval_bad_net_name_is_refused_before_anything_runs():
    rc, out, err = cenas("eval", str(ZOO), "--net", "1x", *CHEAP)
    assert rc == 2 and "--net '1x': not a Python identifier" in err


def test_a_non_utf8_file_is_a_record_and_the_batch_goes_on_and_all_failing_exits_1(tmp_path):
    good, latin = tmp_path / "good.py", tmp_path / "latin.py"
    good.write_text(MLP)
    latin.write_bytes(b"# caf\xe9\n" + MLP.encode())
    rc, out, err = cenas("eval", str(latin), str(good), "--json", *CHEAP)
    assert rc == 0, err
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert [r["path"] for r in rows] == [str(latin), str(good)]
    assert rows[0]["status"] == "error" and rows[0]["error_kind"] == "syntax"
    assert "not UTF-8 text (invalid continuation byte at byte 5)" in rows[0]["error_message"]
    assert rows[1]["status"] == "ok" and "1/2 ok" in err
    rc, out, err = cenas("eval", str(latin), *CHEAP)
    assert rc == 1 and "0/1 ok: every candidate failed" in err


def test_table_mode_gives_a_long_policy_error_in_full(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import subprocess\n" + MLP)
    rc, out, err = cenas("eval", str(bad), *CHEAP)
    assert rc == 1
    table, _, full = out.partition("full error messages:")
    assert "..." in table  # shortened in its column
    line = next(ln for ln in full.splitlines() if ln.startswith(str(bad)))
    assert "subprocess" in line and "flax" in line and "..." not in line  # the allow-list, uncut
