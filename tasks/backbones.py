"""Built-in backbones on real architectures, for :class:`tasks.network.NetworkTask`.

- :class:`HyperRepresentationResNet`: the CIFAR ResNet of He et al. (2016): a 3x3 stem, three
  stages of ``(depth - 2) / 6`` basic blocks at ``width``, 2 ``width``, 4 ``width`` channels
  (projection shortcuts where the shape changes), global average pooling. ResNet-20 at width 16
  (0.27 M parameters) is the CPU-friendly default; ``depth=18`` gives torchvision's ResNet-18 with
  the CIFAR stem (3x3 stride 1, no max pooling), the setting HeteroFL, FjORD and FedRolex report.
- :class:`HyperRepresentationViT`: torchvision's ``VisionTransformer`` (patch 4, 4 layers, 4 heads,
  hidden 128, MLP 256), whose class token is the features.

Both take any input shape (C, H, W) (the offline default is MNIST at 1 x 28 x 28; CIFAR-10 is
3 x 32 x 32); x = the backbone, y = the linear head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .network import NetworkTask


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False),
                                          nn.BatchNorm2d(outputs))

    def forward(self, inputs: Tensor) -> Tensor:
        out = self.bn1(self.conv1(inputs)).relu()
        return (self.bn2(self.conv2(out)) + self.shortcut(inputs)).relu()


def cifar_resnet(channels: int, depth: int, width: int) -> nn.Module:
    if depth == 18:
        import torchvision  # here, not at the top: it costs a ClientApp process 2 s of CPU to start

        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        net.maxpool, net.fc = nn.Identity(), nn.Identity()
        return net
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet-depth={depth}: a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56) or 18")
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU()]
    inputs = width
    for stage in range(3):
        for block in range((depth - 2) // 6):
            outputs = width * 2**stage
            layers.append(BasicBlock(inputs, outputs, 2 if stage and not block else 1))
            inputs = outputs
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


@dataclass(frozen=True)
class HyperRepresentationResNet(NetworkTask):
    depth: int = 20
    width: int = 16

    def backbone(self) -> nn.Module:
        return cifar_resnet(self.in_shape[0], self.depth, self.width)


@dataclass(frozen=True)
class HyperRepresentationViT(NetworkTask):
    patch: int = 4

    def backbone(self) -> nn.Module:
        channels, height, width = self.in_shape
        if height != width or height % self.patch:
            raise ValueError(f"the ViT needs square images whose side is a multiple of {self.patch}, "
                             f"got {height} x {width}")
        import torchvision

        net = torchvision.models.VisionTransformer(height, self.patch, num_layers=4, num_heads=4,
                                                   hidden_dim=128, mlp_dim=256)
        net.conv_proj = nn.Conv2d(channels, 128, self.patch, self.patch)
        net.heads = nn.Identity()
        return net
