"""convnet: a cuda-convnet-style convolutional network engine (C++ core, CPU and CUDA backends).

    import convnet
    model = convnet.zoo.small_convnet(classes=10, channels=1, size=28)
    net = convnet.Net(model, devices="cpu")
    stats = net.train_step(x, y)   # x: N x C x H x W float32, y: N integer labels
"""

from . import _core, zoo
from ._core import blas_name, cuda_compiled, cuda_device_count, layer_types, num_threads, set_num_threads
from .model import Model
from .net import Net, check_gradients

__all__ = ["Model", "Net", "check_gradients", "zoo", "layer_types", "cuda_compiled",
           "cuda_device_count", "set_num_threads", "num_threads", "blas_name"]
__version__ = "0.1.0"
