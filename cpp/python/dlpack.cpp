// DLPack (https://dmlc.github.io/dlpack): convnet tensors exchanged with PyTorch, NumPy, CuPy and
// any other DLPack library without a copy, in host or CUDA memory. A tensor handed out keeps
// convnet's memory alive until its consumer lets go; a tensor taken in is a view of the
// producer's memory, handed back (its deleter) when convnet's last view of it is gone. Built
// where dlpack/dlpack.h is found (Debian: libdlpack-dev); elsewhere the calls say so.
#include <cstdint>
#include <vector>

#include "bindings.h"
#include "convnet/device.h"
#include "convnet/error.h"

#ifdef CONVNET_WITH_DLPACK
#include <dlpack/dlpack.h>
#endif
#ifdef CONVNET_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace py = pybind11;

namespace convnet::python {
namespace {

#ifdef CONVNET_WITH_DLPACK
// What a DLManagedTensor handed out holds: the tensor (so its memory stays) and the shape array.
struct Exported {
  Tensor tensor;
  std::vector<int64_t> shape;
  DLManagedTensor managed{};
};

void delete_exported(DLManagedTensor* self) { delete static_cast<Exported*>(self->manager_ctx); }

// A capsule that nobody consumed still owns its tensor (a consumer renames it "used_dltensor").
void delete_unused_capsule(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, "dltensor")) return;
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
  if (m && m->deleter) m->deleter(m);
}

py::capsule to_dlpack(const Tensor& t) {
  CONVNET_CHECK(t.defined(), "__dlpack__: the tensor is empty");
#ifdef CONVNET_WITH_CUDA
  // The consumer may use it on any stream: every lane's work on it is done first.
  if (t.device().is_cuda()) cuda::synchronize(t.device().index);
#endif
  auto* e = new Exported{t, std::vector<int64_t>(t.shape().begin(), t.shape().end()), {}};
  DLTensor& d = e->managed.dl_tensor;
  d.data = const_cast<float*>(t.data());
  d.device = t.device().is_cuda() ? DLDevice{kDLCUDA, int32_t(t.device().index)} : DLDevice{kDLCPU, 0};
  d.ndim = int32_t(e->shape.size());
  d.dtype = DLDataType{kDLFloat, 32, 1};
  d.shape = e->shape.data();
  d.strides = nullptr;  // compact, row-major
  d.byte_offset = 0;
  e->managed.manager_ctx = e;
  e->managed.deleter = delete_exported;
  PyObject* capsule = PyCapsule_New(&e->managed, "dltensor", delete_unused_capsule);
  if (!capsule) {
    delete e;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(capsule);
}

// Whether `d` is laid out compact and row-major (dimensions of size 1 may have any stride).
bool row_major(const DLTensor& d) {
  if (!d.strides) return true;
  int64_t expected = 1;
  for (int i = d.ndim - 1; i >= 0; --i) {
    if (d.shape[i] != 1 && d.strides[i] != expected) return false;
    expected *= d.shape[i];
  }
  return true;
}

Tensor from_dlpack(const py::object& obj) {
  CONVNET_CHECK(py::hasattr(obj, "__dlpack__") && py::hasattr(obj, "__dlpack_device__"),
                "from_dlpack: a ", py::str(py::type::of(obj)).cast<std::string>(),
                " has no __dlpack__ (give a PyTorch, NumPy or CuPy array, or a convnet.Tensor)");
  const auto where = obj.attr("__dlpack_device__")().cast<std::pair<int, int>>();
  py::object capsule_obj;
  if (where.first == kDLCUDA) {
#ifdef CONVNET_WITH_CUDA
    // The producer orders its pending work before our lane 0 of that GPU (DLPack's stream
    // argument), where the net's host-side copies run.
    const auto stream = reinterpret_cast<uintptr_t>(cuda::stream(where.second, 0));
    capsule_obj = obj.attr("__dlpack__")(py::arg("stream") = stream);
#else
    throw RuntimeError("from_dlpack: the array is in CUDA memory, and this build of convnet has no CUDA backend");
#endif
  } else {
    capsule_obj = obj.attr("__dlpack__")();
  }
  PyObject* capsule = capsule_obj.ptr();
  CONVNET_CHECK(PyCapsule_IsValid(capsule, "dltensor"), "from_dlpack: __dlpack__ did not return a DLPack capsule");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
  const DLTensor& d = m->dl_tensor;
  CONVNET_CHECK(d.dtype.code == kDLFloat && d.dtype.bits == 32 && d.dtype.lanes == 1,
                "from_dlpack: convnet takes float32 arrays (a view cannot convert): convert it first, "
                "e.g. x.float() or x.astype(numpy.float32)");
  CONVNET_CHECK(d.device.device_type == kDLCPU || d.device.device_type == kDLCUDA,
                "from_dlpack: the array is on DLPack device type ", int(d.device.device_type),
                "; convnet takes host (CPU) or CUDA memory");
  CONVNET_CHECK(row_major(d), "from_dlpack: the array is not contiguous (a view cannot reorder it): "
                "make it contiguous first, e.g. x.contiguous() or numpy.ascontiguousarray(x)");
  Shape shape;
  for (int i = 0; i < d.ndim; ++i) {
    CONVNET_CHECK(d.shape[i] >= 0 && d.shape[i] <= INT32_MAX, "from_dlpack: dimension ", i, " of size ",
                  d.shape[i], " is out of range");
    shape.push_back(int(d.shape[i]));
  }
  const Device device = d.device.device_type == kDLCUDA ? Device::cuda(d.device.device_id) : Device::cpu();
  if (device.is_cuda()) require_available(device);
  float* data = reinterpret_cast<float*>(static_cast<char*>(d.data) + d.byte_offset);
  PyCapsule_SetName(capsule, "used_dltensor");  // consumed: the deleter is ours to call now
  return Tensor::borrow(data, shape, device, [m] {
    py::gil_scoped_acquire gil;  // producers' deleters may touch Python objects (NumPy's do)
    if (m->deleter) m->deleter(m);
  });
}
#else
[[noreturn]] void no_dlpack() {
  throw RuntimeError("this build of convnet has no DLPack support: dlpack/dlpack.h was not found when it "
                     "was built (Debian: apt-get install libdlpack-dev, then rebuild)");
}
py::capsule to_dlpack(const Tensor&) { no_dlpack(); }
Tensor from_dlpack(const py::object&) { no_dlpack(); }
#endif

}  // namespace

void bind_tensor(py::module_& m) {
  py::class_<Tensor>(m, "Tensor", "A convnet tensor: float32, in host or CUDA memory, activations in CHWN order.")
      .def_property_readonly("shape", [](const Tensor& t) {
             py::tuple shape(t.shape().size());
             for (size_t i = 0; i < t.shape().size(); ++i) shape[i] = t.shape()[i];
             return shape;
           })
      .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
      .def_property_readonly("data_ptr", [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()); })
      .def("numpy", [](const Tensor& t) {
             std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
             py::array_t<float> out(shape);
             t.copy_to_host(out.mutable_data());
             return out;
           }, "A copy in host memory, in the tensor's own shape.")
      .def("__dlpack__", [](const Tensor& t, const py::object&) { return to_dlpack(t); },
           py::arg("stream") = py::none(),
           "A DLPack capsule viewing this tensor (torch.from_dlpack, numpy.from_dlpack). On a GPU "
           "its pending work is finished first, so any stream may use it.")
      .def("__dlpack_device__", [](const Tensor& t) {
#ifdef CONVNET_WITH_DLPACK
             return py::make_tuple(int(t.device().is_cuda() ? kDLCUDA : kDLCPU), t.device().is_cuda() ? t.device().index : 0);
#else
             return py::make_tuple(t.device().is_cuda() ? 2 : 1, t.device().is_cuda() ? t.device().index : 0);
#endif
           });
  m.def("from_dlpack", &from_dlpack, py::arg("array"),
        "A convnet.Tensor viewing a float32, contiguous DLPack array (PyTorch, NumPy, CuPy) without "
        "a copy; the array's memory is held until the tensor is gone.");
  m.def("dlpack_compiled", [] {
#ifdef CONVNET_WITH_DLPACK
    return true;
#else
    return false;
#endif
  });
}

}  // namespace convnet::python
