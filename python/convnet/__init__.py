"""convnet: a cuda-convnet-style convolutional network engine (C++ core, CPU and CUDA backends).

    import convnet
    model = convnet.zoo.small_convnet(classes=10, channels=1, size=28)
    net = convnet.Net(model, devices="cpu")
    stats = net.train_step(x, y)   # x: N x C x H x W float32, y: N integer labels

    net, result = convnet.train(convnet.zoo.fashion_alexnet(), data="fashion-mnist", epochs=10,
                                schedule="plateau[patience=2]", save_dir="runs/fashion")
"""

def _preload_wheel_openblas():
    # When convnet was built against the scipy-openblas32 wheel, load that library first so the
    # extension finds it wherever the wheel is installed (its RPATH names the build-time place).
    try:
        import ctypes
        import os

        import scipy_openblas32 as wheel

        ctypes.CDLL(os.path.join(wheel.get_lib_dir(), wheel.get_library(True)), mode=ctypes.RTLD_GLOBAL)
    except (ImportError, OSError):
        pass


_preload_wheel_openblas()

from . import _core, data, datasets, zoo  # noqa: E402
from ._core import (Tensor, blas_name, cuda_compiled, cuda_device_count, cuda_memory_stats,  # noqa: E402
                    cuda_reset_peak, cuda_synchronize, dlpack_compiled, from_dlpack, host_memory_stats,
                    host_reset_peak, layer_types, march, num_threads, set_num_threads)
from .model import Model  # noqa: E402
from .net import Net, check_gradients  # noqa: E402
from .train import (Callback, DataPrep, DivergenceError, ProgressBar, Schedule, Trainer,  # noqa: E402
                    evaluate, evaluate_multiview, train)
from . import dense, plots, summary  # noqa: E402

__all__ = ["Model", "Net", "check_gradients", "zoo", "datasets", "data", "train", "Trainer", "Callback",
           "ProgressBar", "DataPrep", "Schedule", "DivergenceError", "evaluate", "evaluate_multiview",
           "summary", "plots", "layer_types", "cuda_compiled",
           "cuda_device_count", "cuda_memory_stats", "cuda_reset_peak", "cuda_synchronize",
           "host_memory_stats", "host_reset_peak",
           "set_num_threads", "num_threads", "blas_name", "march", "Tensor", "from_dlpack", "dlpack_compiled"]
__version__ = "0.1.0"
