// The parts of the convnet._core module, one file each.
#pragma once
#include <pybind11/pybind11.h>

namespace convnet::python {
void bind_data(pybind11::module_& m);  // data.cpp: sources, statistics, the pipeline
}  // namespace convnet::python
