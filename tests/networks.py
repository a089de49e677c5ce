"""torchvision classification networks as backbones (built offline, no weights), for the tests of
any-network dual pruning: x = the network up to its features, y = a linear head."""

from __future__ import annotations

import torchvision
from torch import nn

from tasks import BackboneTask, backbone_task


def resnet18(in_shape: tuple[int, int, int]) -> nn.Module:
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_shape[0], 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    return net


def resnet50(in_shape: tuple[int, int, int]) -> nn.Module:
    net = torchvision.models.resnet50(weights=None)
    net.conv1 = nn.Conv2d(in_shape[0], 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    return net


def mobilenet_v3_small(in_shape: tuple[int, int, int]) -> nn.Module:
    net = torchvision.models.mobilenet_v3_small(weights=None)
    net.features[0][0] = nn.Conv2d(in_shape[0], 16, 3, 2, 1, bias=False)
    net.classifier[-1] = nn.Identity()  # the features: the 1024 units before the classifier
    return net


def vit(in_shape: tuple[int, int, int]) -> nn.Module:
    net = torchvision.models.VisionTransformer(in_shape[-1], 4, num_layers=4, num_heads=4, hidden_dim=128,
                                               mlp_dim=256)
    net.conv_proj = nn.Conv2d(in_shape[0], 128, 4, 4)
    net.heads = nn.Identity()
    return net


def small_bn(in_shape: tuple[int, int, int]) -> nn.Module:
    """One convolution with BatchNorm: the smallest network with running statistics."""
    return nn.Sequential(nn.Conv2d(in_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


BACKBONES = {"resnet18": resnet18, "resnet50": resnet50, "mobilenet_v3_small": mobilenet_v3_small, "vit": vit}
# task factories for runs: task='tests.networks:resnet18_task', ...
resnet18_task, resnet50_task = backbone_task(resnet18), backbone_task(resnet50)
mobilenet_v3_small_task, vit_task = backbone_task(mobilenet_v3_small), backbone_task(vit)
small_bn_task = backbone_task(small_bn)


def task(name: str, in_shape: tuple[int, int, int] = (3, 32, 32)) -> BackboneTask:
    return BackboneTask(in_shape, 10, factory=BACKBONES[name])
