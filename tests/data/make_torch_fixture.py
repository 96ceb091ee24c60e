"""Writes tests/data/torchvision/: PyTorch's own outputs for torchvision-shaped nets, so that
tests/python/test_torch_weights.py can check convnet's import of torchvision weights without
torch installed.

    python tests/data/make_torch_fixture.py      # needs torch, numpy, safetensors

torchvision's AlexNet and VGG at full width are 61-144 million parameters, too big to commit,
so the nets here are torchvision's modules with the same names, layer structure and 224x224
input (AdaptiveAvgPool2d to 6x6 / 7x7, the identity there) but few channels (WIDTHS). The test
builds the matching convnet nets with convnet.Model. Where torchvision is importable, the
builders are checked first against torchvision's own models: at full width the same keys and
shapes.

Files (all safetensors): <arch>.safetensors, a seeded net's state_dict in eval mode (alexnet,
vgg11, vgg13, vgg16, vgg19); alexnet_bf16.safetensors, the alexnet one in bfloat16;
io.safetensors: "input" (2 x 3 x 224 x 224 uint8, blocky random images; the net's input is
input / 64 - 2, exact in float32) and "logits.<arch>" (PyTorch's outputs, float32), with the widths as JSON metadata.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

# Convs per VGG block, as torchvision's cfgs "A", "B", "D", "E".
VGG_BLOCKS = {"vgg11": [1, 1, 2, 2, 2], "vgg13": [2, 2, 2, 2, 2], "vgg16": [2, 2, 3, 3, 3],
              "vgg19": [2, 2, 4, 4, 4]}
# Narrow widths: AlexNet's five convs; VGG's per block; the two hidden fc layers; the classes.
WIDTHS = {"alexnet": dict(convs=[8, 16, 16, 16, 8], hidden=16, classes=10),
          "vgg": dict(blocks=[4, 8, 8, 8, 8], hidden=16, classes=10)}
FULL = {"alexnet": dict(convs=[64, 192, 384, 256, 256], hidden=4096, classes=1000),
        "vgg": dict(blocks=[64, 128, 256, 512, 512], hidden=4096, classes=1000)}


class AlexNet(nn.Module):
    """torchvision.models.AlexNet's modules and names, with chosen widths."""

    def __init__(self, convs, hidden, classes):
        super().__init__()
        c1, c2, c3, c4, c5 = convs
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(c5 * 36, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG(nn.Module):
    """torchvision.models.VGG (without batch norm) with chosen widths: `blocks` convs of 3x3,
    then a 2x2 max pool, per block."""

    def __init__(self, convs_per_block, blocks, hidden, classes):
        super().__init__()
        layers, c = [], 3
        for n, width in zip(convs_per_block, blocks):
            for _ in range(n):
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
                c = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 49, hidden), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build(arch: str, widths: dict | None = None) -> nn.Module:
    if arch == "alexnet":
        return AlexNet(**(widths or WIDTHS["alexnet"]))
    return VGG(VGG_BLOCKS[arch], **(widths or WIDTHS["vgg"]))


def check_against_torchvision() -> None:
    """At full width, the builders' state_dicts have torchvision's keys and shapes."""
    try:
        import torchvision.models as tvm
    except ImportError:
        print("torchvision not importable: builders not checked against it")
        return
    for arch in ["alexnet", *VGG_BLOCKS]:
        ours = build(arch, FULL["alexnet" if arch == "alexnet" else "vgg"]).state_dict()
        theirs = getattr(tvm, arch)().state_dict()
        assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()], arch
    print("builders match torchvision's keys and shapes")


def main(out: Path) -> None:
    check_against_torchvision()
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(2012)
    # Blocky images (a random 14x14 grid per channel, 16x16 pixels a cell) plus noise: pixel noise
    # alone averages out in the deep VGGs, and the two cases' outputs must differ.
    grid = torch.randint(0, 200, (2, 3, 14, 14), generator=g)
    noise = torch.randint(0, 56, (2, 3, 224, 224), generator=g)
    pixels = (grid.repeat_interleave(16, 2).repeat_interleave(16, 3) + noise).to(torch.uint8)
    x = pixels.float() / 64 - 2
    io = {"input": pixels}
    for i, arch in enumerate(["alexnet", *VGG_BLOCKS]):
        torch.manual_seed(100 + i)
        model = build(arch).eval()
        # He init (torch's default shrinks the signal layer by layer: vgg19's outputs would be
        # its biases alone) and small positive biases, so that few ReLUs of the narrow nets die.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.uniform_(0.0, 0.05)
                else:
                    nn.init.kaiming_normal_(p, nonlinearity="relu")
            io[f"logits.{arch}"] = model(x).contiguous()
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / f"{arch}.safetensors"))
        if arch == "alexnet":
            save_file({k: v.to(torch.bfloat16) for k, v in state.items()},
                      str(out / "alexnet_bf16.safetensors"))
    meta = {"widths": json.dumps(WIDTHS), "vgg_blocks": json.dumps(VGG_BLOCKS),
            "scale": "input / 64 - 2", "torch": torch.__version__}
    save_file(io, str(out / "io.safetensors"), metadata=meta)
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "torchvision")
