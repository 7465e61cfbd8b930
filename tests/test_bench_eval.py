"""``make bench-eval``'s paper regime: its dataset, written once as a CIFAR-10 directory, loads back through the
data layer as the CIFAR-sized set (781 steps of 64), a real CIFAR-10 directory is taken as the brief says,
and ``--quick`` runs both regimes end to end through the sandbox."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import bench_eval  # noqa: E402 - the benchmark scripts live under experiments/, put on the path above
from bench.cifar_shaped import CIFAR_TRAIN, cifar_shaped, paper_data_config, write_cifar10_dir  # noqa: E402

from cenas_jax.data import load_dataset  # noqa: E402
from cenas_jax.train.exported import Shapes  # noqa: E402
from cenas_jax.train.proxy import _schedule  # noqa: E402


def test_the_paper_set_round_trips_through_the_data_layer_and_is_reused(tmp_path):
    cfg, built = paper_data_config(tmp_path / "data")
    assert built and cfg.name == "cifar10"
    ds = load_dataset(cfg)
    want = cifar_shaped()  # the same set, made in memory
    assert ds.x_train.shape == (CIFAR_TRAIN, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert np.array_equal(ds.x_train, want.x_train) and np.array_equal(ds.y_train, want.y_train)
    assert np.array_equal(ds.x_val, want.x_val) and np.array_equal(ds.y_val, want.y_val)
    assert np.allclose(ds.mean, want.mean) and np.allclose(ds.std, want.std)
    # the shifted digits are not all centred: some rows/columns near the border are lit
    assert ds.x_train[:, :, 30:].any() and ds.x_train[:, :, :2].any()
    # the paper's epoch: 781 steps of 64
    from cenas_jax.config import TrainConfig

    shapes = Shapes.for_dataset(ds, TrainConfig(batch_size=64))
    assert shapes.input_shape == (32, 32, 3) and shapes.batch == 64
    assert _schedule(1.0, len(ds.y_train) // shapes.batch) == [(0, 781)]
    # a second run finds the directory and does not write it again
    batch = Path(cfg.data_dir) / "cifar-10-batches-py" / "data_batch_1"
    mtime = batch.stat().st_mtime_ns
    again, built_again = paper_data_config(tmp_path / "data")
    assert not built_again and again == cfg and batch.stat().st_mtime_ns == mtime


def test_a_real_cifar10_directory_trains_on_all_its_training_images_and_scores_on_its_test_batch(tmp_path):
    rng = np.random.default_rng(3)

    def images(n):
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)

    # a stand-in CIFAR-10: 500 training images in five batches, 60 test images
    train, test = images(500), images(60)
    real = write_cifar10_dir(tmp_path / "cifar", train, images(0), test)
    assert real.val_fraction == 0.0
    cfg, built = paper_data_config(tmp_path / "data", data_dir=str(tmp_path / "cifar"), n_train=320)
    ds = load_dataset(cfg)
    assert built and ds.x_train.shape == (320, 32, 32, 3)
    assert np.array_equal(ds.x_val, test[0]) and np.array_equal(ds.y_val, test[1])
    # the training images are CIFAR's own training images, each once
    flat = {bytes(x) for x in train[0]}
    assert all(bytes(x) in flat for x in ds.x_train) and len({bytes(x) for x in ds.x_train}) == 320


def test_write_cifar10_dir_refuses_images_of_another_shape(tmp_path):
    x = np.zeros((4, 28, 28, 1), np.uint8)
    y = np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="32, 32, 3"):
        write_cifar10_dir(tmp_path, (x, y), (x, y), (x, y))


def test_quick_runs_both_regimes_end_to_end(tmp_path, capsys):
    assert bench_eval.main(["--quick", "--out", str(tmp_path), "--no-single-thread-reference"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("machine: ") and "load average" in lines[0]
    assert re.fullmatch(r"eval_speedup_vs_torch_small=\d+\.\d\d", lines[-2]), lines[-2]
    assert re.fullmatch(r"eval_speedup_vs_torch=\d+\.\d\d", lines[-1]), lines[-1]
    text = "\n".join(lines)
    assert "54 steps per epoch, 1 seed(s)" in text and "100 steps per epoch, 1 seed(s)" in text
    rows = [ln for ln in lines if ln.split()[:1] in (["lenet"], ["mlp"])]
    assert len(rows) == 4 and not any("ERROR" in r for r in rows), rows
