"""Model definitions that ship with convnet.

- ``alexnet_2012``: the network of Krizhevsky, Sutskever & Hinton (2012), figure 2: two towers
  (logical devices 0 and 1); conv2, conv4, conv5 see only their own tower, conv3 and the fully
  connected layers see both. 60,965,224 parameters at 224x224 and 1000 classes.
- ``alexnet_one_tower``: the single-tower variant of "One weird trick for parallelizing
  convolutional neural networks" (Krizhevsky 2014): 64-192-384-256-256 filters, no LRN.
- ``small_convnet``: a small net for tests and demos.
- ``fashion_alexnet``: AlexNet in miniature for 28x28 images (the default job's model).
- ``stacked_convnet``: VGG-style blocks of convolutions for small images (the experiments' nets).
- ``vgg``: the VGG family, configurations A to E.
"""

from __future__ import annotations

from .model import Model

# The paper's SGD hyperparameters: momentum 0.9, weight decay 0.0005, learning rate 0.01.
PAPER_SGD = dict(epsW=0.01, epsB=0.01, momW=0.9, momB=0.9, wc=0.0005)


def _alexnet_init(init: str, init_std: float):
    """The init options of an AlexNet's conv and fc layers, and its bias of 1 (see alexnet_2012)."""
    if init == "gaussian":
        return dict(initW=init_std), 1  # gaussian is the layers' default init
    if init not in ("kaiming", "xavier"):
        raise ValueError(f"init must be 'gaussian' (the paper's), 'kaiming' or 'xavier', not {init!r}")
    return dict(init=init), 0


def alexnet_2012(classes: int = 1000, size: int = 224, channels: int = 3, dropout: float = 0.5,
                 init: str = "gaussian", init_std: float = 0.01) -> Model:
    """AlexNet as in the 2012 paper, split into two towers on logical devices 0 and 1.

    init="gaussian" is the paper's: weights N(0, init_std), biases 1 in conv2, conv4, conv5 and
    the hidden fc layers. It was made for mean-subtracted pixels in 0-255 units (scale 1, as
    cuda-convnet2 feeds them) and 1000 classes. init="xavier" (std sqrt(1 / fan_in)) or
    "kaiming" (sqrt(2 / fan_in)) sets every bias to 0, for unit-variance input (scale "std"):
    with fan-in-scaled weights the biases of 1 push the 4096-wide fc layers' outputs up, and on
    a problem of 10 classes the first steps diverge. xavier is the one that trains on small data
    sets (README, "Colour images").
    """
    m = Model()
    m.input("data", channels=channels, size=size)
    m.labels("labels")
    weights, one = _alexnet_init(init, init_std)
    lr = dict(PAPER_SGD, **weights)
    towers = "ab"
    for t, dev in zip(towers, (0, 1)):
        m.conv(f"conv1{t}", "data", filters=48, size=11, stride=4, padding=2, neuron="relu",
               initB=0, device=dev, **lr)
        m.lrn(f"rnorm1{t}", f"conv1{t}", device=dev)
        m.pool(f"pool1{t}", f"rnorm1{t}", size=3, stride=2, device=dev)
        m.conv(f"conv2{t}", f"pool1{t}", filters=128, size=5, padding=2, neuron="relu", initB=one,
               device=dev, **lr)
        m.lrn(f"rnorm2{t}", f"conv2{t}", device=dev)
        m.pool(f"pool2{t}", f"rnorm2{t}", size=3, stride=2, device=dev)
    for t, dev in zip(towers, (0, 1)):  # conv3 reads both towers
        m.conv(f"conv3{t}", ["pool2a", "pool2b"], filters=192, size=3, padding=1, neuron="relu",
               initB=0, device=dev, **lr)
        m.conv(f"conv4{t}", f"conv3{t}", filters=192, size=3, padding=1, neuron="relu", initB=one,
               device=dev, **lr)
        m.conv(f"conv5{t}", f"conv4{t}", filters=128, size=3, padding=1, neuron="relu", initB=one,
               device=dev, **lr)
        m.pool(f"pool5{t}", f"conv5{t}", size=3, stride=2, device=dev)
    for t, dev in zip(towers, (0, 1)):
        m.fc(f"fc6{t}", ["pool5a", "pool5b"], outputs=2048, neuron="relu", initB=one, device=dev, **lr)
        m.dropout(f"drop6{t}", f"fc6{t}", rate=dropout, device=dev)
    for t, dev in zip(towers, (0, 1)):
        m.fc(f"fc7{t}", ["drop6a", "drop6b"], outputs=2048, neuron="relu", initB=one, device=dev, **lr)
        m.dropout(f"drop7{t}", f"fc7{t}", rate=dropout, device=dev)
    m.fc("fc8", ["drop7a", "drop7b"], outputs=classes, initB=0, **lr)
    m.softmax_cost("cost", "fc8", "labels")
    return m


def alexnet_one_tower(classes: int = 1000, size: int = 224, channels: int = 3, dropout: float = 0.5,
                      init: str = "gaussian", init_std: float = 0.01) -> Model:
    """One-tower AlexNet ("one weird trick" version, as torchvision's alexnet). init as
    alexnet_2012."""
    m = Model()
    m.input("data", channels=channels, size=size)
    m.labels("labels")
    weights, one = _alexnet_init(init, init_std)
    lr = dict(PAPER_SGD, **weights)
    m.conv("conv1", "data", filters=64, size=11, stride=4, padding=2, neuron="relu", **lr)
    m.pool("pool1", "conv1", size=3, stride=2)
    m.conv("conv2", "pool1", filters=192, size=5, padding=2, neuron="relu", initB=one, **lr)
    m.pool("pool2", "conv2", size=3, stride=2)
    m.conv("conv3", "pool2", filters=384, size=3, padding=1, neuron="relu", **lr)
    m.conv("conv4", "conv3", filters=256, size=3, padding=1, neuron="relu", initB=one, **lr)
    m.conv("conv5", "conv4", filters=256, size=3, padding=1, neuron="relu", initB=one, **lr)
    m.pool("pool5", "conv5", size=3, stride=2)
    m.fc("fc6", "pool5", outputs=4096, neuron="relu", initB=one, **lr)
    m.dropout("drop6", "fc6", rate=dropout)
    m.fc("fc7", "drop6", outputs=4096, neuron="relu", initB=one, **lr)
    m.dropout("drop7", "fc7", rate=dropout)
    m.fc("fc8", "drop7", outputs=classes, **lr)
    m.softmax_cost("cost", "fc8", "labels")
    return m


def small_convnet(classes: int = 10, channels: int = 1, size: int = 28, neuron: str = "relu",
                  pool: str = "max", lr: float = 0.01) -> Model:
    """conv-pool-lrn-conv-pool-fc: small enough to train in seconds on the CPU."""
    m = Model()
    m.input("data", channels=channels, size=size)
    m.labels("labels")
    opts = dict(epsW=lr, epsB=lr, momW=0.9, momB=0.9, wc=0.0005, init="kaiming")
    m.conv("conv1", "data", filters=16, size=5, padding=2, neuron=neuron, **opts)
    m.pool("pool1", "conv1", size=3, stride=2, pool=pool)
    m.lrn("rnorm1", "pool1", size=5)
    m.conv("conv2", "rnorm1", filters=32, size=3, padding=1, neuron=neuron, **opts)
    m.pool("pool2", "conv2", size=3, stride=2, pool=pool)
    m.fc("fc3", "pool2", outputs=classes, **dict(opts, init="xavier"))
    m.softmax_cost("cost", "fc3", "labels")
    return m


def fashion_alexnet(classes: int = 10, channels: int = 1, size: int = 28, dropout: float = 0.5,
                    init: str = "kaiming", lr: float = 0.01, neuron: str = "relu", lrn: bool = True,
                    pool_size: int = 3, pool_stride: int = 2, bias: float = 1.0) -> Model:
    """AlexNet in miniature for 28x28 images, with every element of the paper: two towers
    (logical devices 0 and 1) that meet at conv3 and the fc layers, ReLU, LRN, overlapping max
    pooling, dropout, biases of 1 in conv2 and the hidden fc layers, momentum SGD with weight decay.

    init="kaiming" (std sqrt(2 / fan_in)) because the paper's N(0, 0.01) stalls a net this small
    for an epoch or more; init="gaussian" restores the paper's (initW=0.01).

    neuron, lrn, pool_size/pool_stride, dropout (0: none) and bias (the initial bias of conv2 and
    the hidden fc layers, the paper's 1) turn the paper's choices off one at a time, for its
    ablations (convnet experiment); the defaults are the paper's.
    """
    if dropout < 0 or dropout >= 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    m = Model()
    m.input("data", channels=channels, size=size)
    m.labels("labels")
    o = dict(epsW=lr, epsB=lr, momW=0.9, momB=0.9, wc=0.0005, init=init, initW=0.01)
    for t, dev in (("a", 0), ("b", 1)):
        m.conv(f"conv1{t}", "data", filters=32, size=5, padding=2, neuron=neuron, device=dev, **o)
        below = f"conv1{t}"
        if lrn:
            m.lrn(f"rnorm1{t}", below, device=dev)
            below = f"rnorm1{t}"
        m.pool(f"pool1{t}", below, size=pool_size, stride=pool_stride, device=dev)
        m.conv(f"conv2{t}", f"pool1{t}", filters=64, size=5, padding=2, neuron=neuron, initB=bias,
               device=dev, **o)
        below = f"conv2{t}"
        if lrn:
            m.lrn(f"rnorm2{t}", below, device=dev)
            below = f"rnorm2{t}"
        m.pool(f"pool2{t}", below, size=pool_size, stride=pool_stride, device=dev)
    for t, dev in (("a", 0), ("b", 1)):
        m.conv(f"conv3{t}", ["pool2a", "pool2b"], filters=96, size=3, padding=1, neuron=neuron,
               device=dev, **o)
        m.pool(f"pool3{t}", f"conv3{t}", size=pool_size, stride=pool_stride, device=dev)
    for t, dev in (("a", 0), ("b", 1)):
        m.fc(f"fc4{t}", ["pool3a", "pool3b"], outputs=256, neuron=neuron, initB=bias, device=dev, **o)
        if dropout > 0:
            m.dropout(f"drop4{t}", f"fc4{t}", rate=dropout, device=dev)
    top = ["drop4a", "drop4b"] if dropout > 0 else ["fc4a", "fc4b"]
    m.fc("fc5", top, outputs=classes, **dict(o, init="xavier" if init != "gaussian" else init))
    m.softmax_cost("cost", "fc5", "labels")
    return m


def stacked_convnet(blocks, classes: int = 10, channels: int = 1, size: int = 28, hidden: int = 256,
                    dropout: float = 0.5, top: str | None = None, top_filters: int = 32, lr: float = 0.01) -> Model:
    """A VGG-style net for small images, for comparing filter stacks: ``blocks`` is a list of
    blocks, each a list of (filters, kernel size) convolutions (stride 1, padded to keep the size,
    ReLU, kaiming init), each block ending in a 2x2 max pool of stride 2 (conv{b}_{i}, pool{b});
    then ``top`` ("conv" or "local": a 3x3 layer named top, of ``top_filters`` on the last map,
    shared or unshared weights, no padding; None: none), fc6 (``hidden``, ReLU, dropout) and fc7 (classes)
    with a softmax cost. Momentum 0.9, weight decay 5e-4, learning rate ``lr``."""
    if top not in (None, "conv", "local"):
        raise ValueError(f"stacked_convnet: top must be None, 'conv' or 'local', not {top!r}")
    m = Model()
    m.input("data", channels=channels, size=size)
    m.labels("labels")
    o = dict(epsW=lr, epsB=lr, momW=0.9, momB=0.9, wc=0.0005, init="kaiming")
    h = "data"
    for b, block in enumerate(blocks, start=1):
        for i, (filters, k) in enumerate(block, start=1):
            h = m.conv(f"conv{b}_{i}", h, filters=filters, size=k, padding=k // 2, neuron="relu", **o)
        h = m.pool(f"pool{b}", h, size=2, stride=2)
    if top is not None:
        h = getattr(m, top)("top", h, filters=top_filters, size=3, neuron="relu", **o)
    h = m.fc("fc6", h, outputs=hidden, neuron="relu", **o)
    if dropout > 0:
        h = m.dropout("drop6", h, rate=dropout)
    m.fc("fc7", h, outputs=classes, **dict(o, init="xavier"))
    m.softmax_cost("cost", "fc7", "labels")
    return m


# VGG's table 1: per block of convolutions, the (filters, kernel size) of each conv; every block
# ends in a 2x2 max pool of stride 2. C's third conv in blocks 3-5 is 1x1.
VGG_CONFIGS = {
    "A": [[(64, 3)], [(128, 3)], [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2],
    "B": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2],
    "C": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 2 + [(256, 1)], [(512, 3)] * 2 + [(512, 1)],
          [(512, 3)] * 2 + [(512, 1)]],
    "D": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 3, [(512, 3)] * 3, [(512, 3)] * 3],
    "E": [[(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 4, [(512, 3)] * 4, [(512, 3)] * 4],
}


def vgg(config: str = "A", classes: int = 1000, size: int = 224, channels: int = 3,
        dropout: float = 0.5, init: str = "kaiming", lr: float = 0.01, lrn: bool = False) -> Model:
    """VGG of Simonyan & Zisserman (2014), table 1: configuration "A" (11 weight layers), "B" (13),
    "C" (16, three of them 1x1 convs), "D" (16) or "E" (19). Convs conv{block}_{i} are stride 1,
    padded to keep the size (3x3 pad 1, 1x1 pad 0), with ReLU; each block ends in a 2x2 max pool
    of stride 2 (pool1..pool5); then fc6 and fc7 (4096, ReLU, dropout) and fc8 (classes) with a
    softmax cost. SGD as the paper: momentum 0.9, weight decay 5e-4, learning rate ``lr``.

    ``lrn=True`` (configuration A only) is the paper's A-LRN: an LRN layer (AlexNet's k=2, n=5,
    alpha=1e-4, beta=0.75) after conv1_1. ``size`` must be divisible by 32 (five pools of 2);
    fc6 reads 512 x (size/32)^2 values. init="kaiming" because the paper's N(0, 0.01) does not
    train the deeper configurations from scratch (the paper started them from A's weights);
    init="gaussian" restores N(0, 0.01).

    At 224x224 and 1000 classes: A 132,863,336 parameters, B 133,047,848, C 133,638,952,
    D 138,357,544, E 143,667,240 (table 2: 133, 133, 134, 138, 144 million).
    """
    if config not in VGG_CONFIGS:
        raise ValueError(f"vgg: unknown configuration {config!r}; choose one of {sorted(VGG_CONFIGS)}")
    if size <= 0 or size % 32:
        raise ValueError(f"vgg: size {size} is not a positive multiple of 32 (five 2x2 pools of stride 2)")
    if lrn and config != "A":
        raise ValueError(f"vgg: lrn=True is the paper's A-LRN; configuration {config!r} has no LRN")
    m = Model()
    m.input("data", channels=channels, size=size)
    m.labels("labels")
    o = dict(epsW=lr, epsB=lr, momW=0.9, momB=0.9, wc=0.0005, init=init, initW=0.01)
    h = "data"
    for b, block in enumerate(VGG_CONFIGS[config], start=1):
        for i, (filters, k) in enumerate(block, start=1):
            h = m.conv(f"conv{b}_{i}", h, filters=filters, size=k, padding=k // 2, neuron="relu", **o)
            if lrn and b == 1 and i == 1:
                h = m.lrn("lrn1", h)
        h = m.pool(f"pool{b}", h, size=2, stride=2)
    for n in (6, 7):
        h = m.fc(f"fc{n}", h, outputs=4096, neuron="relu", **o)
        h = m.dropout(f"drop{n}", h, rate=dropout)
    m.fc("fc8", h, outputs=classes, **dict(o, init="xavier" if init != "gaussian" else init))
    m.softmax_cost("cost", "fc8", "labels")
    return m


# The layers the VGG paper (section 3.1) carried from a trained configuration A into the deeper
# ones: the first four convolutions and the three fully connected layers. Their names and shapes
# are the same in every configuration (A's conv3_2 is the second conv of block 3 everywhere).
VGG_INIT_FROM_A = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


def init_from_shallower(deep, shallow, layers=VGG_INIT_FROM_A) -> list[str]:
    """Copies `layers`' weights and biases from the trained net `shallow` (VGG A) into `deep` (B to
    E), as the paper initialised its deeper nets; the other layers keep their own init. Both are
    convnet.Net. A layer missing from either net, or of another shape, is a ValueError naming it.
    Returns the parameters copied."""
    copied = []
    deep_names, shallow_names = set(deep.param_names()), set(shallow.param_names())
    for layer in layers:
        for suffix in ("weights", "biases"):
            name = f"{layer}.{suffix}"
            if name not in shallow_names or name not in deep_names:
                where = "the shallower net" if name not in shallow_names else "the deeper net"
                raise ValueError(f"init_from_shallower: {where} has no parameter '{name}'")
            value = shallow.get_param(name)
            want = deep.get_param(name).shape
            if value.shape != want:
                raise ValueError(f"init_from_shallower: '{name}' is {value.shape} in the shallower net, "
                                 f"{want} in the deeper one")
            deep.set_param(name, value)
            copied.append(name)
    return copied
