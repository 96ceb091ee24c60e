// The parts of the convnet._core module, one file each.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "convnet/data.h"
#include "convnet/tensor.h"

namespace convnet::python {
void bind_data(pybind11::module_& m);  // data.cpp: sources, statistics, the pipeline
// dlpack.cpp: convnet.Tensor, and DLPack exchange with PyTorch, NumPy, CuPy
void bind_tensor(pybind11::module_& m);
// train.cpp: schedules, the trainer, evaluation, checkpoints, data sets by name
void bind_train(pybind11::module_& m);
// AugmentOptions from the Python keyword arguments (data.cpp), shared by the pipeline and the
// 10-view test.
AugmentOptions make_augment(int crop, bool random_crop, bool mirror, float pca_std,
                            bool pca_rescale, bool subtract_mean_image, float mean_value,
                            float scale);
// A CHWN tensor (any device) as a new N x C x H x W numpy array (module.cpp).
pybind11::array_t<float> chwn_to_nchw(const Tensor& t);
}  // namespace convnet::python
