"""The six benchmark architectures in PyTorch, twins of ``flax_archs/*.py``.

Both sides use Flax's default initialisation, implemented here for PyTorch:
kernels LeCun truncated normal (variance 1/fan_in, truncated at 2 std, as
``flax.linen.initializers.lecun_normal``), biases zero, BatchNorm scale 1 and
offset 0; BatchNorm momentum 0.1 in PyTorch equals ``momentum=0.9`` in Flax,
epsilon 1e-5 on both. Padding is explicit on both sides so the shapes match.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Flax's truncated_normal draws from N(0,1) truncated to [-2, 2] and divides by this std of it.
_TRUNC_STD = 0.87962566103423978


def init_like_flax(model: nn.Module) -> nn.Module:
    """Re-initialise ``model`` in place with Flax's defaults (see the module docstring)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()  # in_features, or in_channels/groups * kh * kw
            std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
            nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.1, eps=1e-5)


class MLP(nn.Module):
    def __init__(self, in_ch: int, hw: int, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch * hw * hw, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet(nn.Module):
    def __init__(self, in_ch: int, hw: int, num_classes: int = 10) -> None:
        super().__init__()
        side = ((hw // 2) - 4) // 2
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNNDropout(nn.Module):
    def __init__(self, in_ch: int, hw: int, num_classes: int = 10) -> None:
        super().__init__()
        side = hw // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Dropout(0.25), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VGGBN(nn.Module):
    def __init__(self, in_ch: int, hw: int, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_ch
        for width in (16, 32):
            for _ in range(2):
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), _bn(width), nn.ReLU()]
                c = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = _bn(c_out)
        self.proj = None
        if stride != 1 or c_in != c_out:
            self.proj = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _bn(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu((self.proj(x) if self.proj is not None else x) + y)


class ResNet(nn.Module):
    def __init__(self, in_ch: int, hw: int, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU())
        self.blocks = nn.Sequential(_Block(16, 16, 1), _Block(16, 32, 2))
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class MobileNet(nn.Module):
    def __init__(self, in_ch: int, hw: int, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, 16, 3, stride=2, padding=1, bias=False), _bn(16), nn.ReLU()]
        c = 16
        for width, stride in ((32, 1), (64, 2)):
            layers += [
                nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False), _bn(c), nn.ReLU(),
                nn.Conv2d(c, width, 1, bias=False), _bn(width), nn.ReLU(),
            ]
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


# benchmark name -> PyTorch class; the Flax twin is flax_archs/<name>.py
TORCH_ARCHS = {
    "resnet": ResNet,
    "vgg_bn": VGGBN,
    "cnn_dropout": CNNDropout,
    "mobilenet": MobileNet,
    "lenet": LeNet,
    "mlp": MLP,
}
