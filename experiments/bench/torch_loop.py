"""The reference side: a plain PyTorch eager training loop (DESIGN.md §8 recipe: SGD, momentum, batch 64)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from .torch_archs import init_like_flax


@dataclasses.dataclass(frozen=True)
class TorchResult:
    accuracy: float
    loss: float
    wall_s: float


def to_tensors(dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float32 NCHW images and int64 labels of ``split`` (done once, outside the timing)."""
    x = getattr(dataset, f"x_{split}").astype(np.float32)
    x = (x - np.asarray(dataset.mean, np.float32)) / np.asarray(dataset.std, np.float32)
    y = getattr(dataset, f"y_{split}").astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)


def train_torch(model_cls, train: tuple, val: tuple, in_ch: int, hw: int, num_classes: int, *,
                epochs: int = 1, batch_size: int = 64, lr: float = 0.01, momentum: float = 0.9,
                seed: int = 0, eval_batch_size: int = 512) -> TorchResult:
    """Build, train (shuffled, last partial batch dropped) and evaluate one model; wall time includes all three."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = init_like_flax(model_cls(in_ch, hw, num_classes))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    x, y = train
    n = len(y)
    gen = torch.Generator().manual_seed(seed)
    last = 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, steps = 0.0, n // batch_size
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        last = total / steps
    model.eval()
    xv, yv = val
    correct = 0
    with torch.no_grad():
        for s in range(0, len(yv), eval_batch_size):
            correct += int((model(xv[s:s + eval_batch_size]).argmax(1) == yv[s:s + eval_batch_size]).sum())
    return TorchResult(accuracy=correct / len(yv), loss=last, wall_s=time.perf_counter() - t0)
