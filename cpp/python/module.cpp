// convnet._core: the pybind11 bindings. Python speaks NCHW numpy arrays; the engine speaks CHWN
// tensors; the conversion happens here, once per batch. Errors of the user's making arrive as
// ValueError (convnet::ValueError derives from std::invalid_argument), others as RuntimeError.
#include <cmath>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "convnet/data.h"
#include "convnet/device.h"
#include "convnet/cuda_convnet_cfg.h"
#include "convnet/error.h"
#include "convnet/gradcheck.h"
#include "convnet/job.h"
#include "convnet/net.h"
#include "convnet/solver.h"
#include "convnet/trainer.h"
#include "cpu/cpu_ops.h"

namespace py = pybind11;
using namespace convnet;

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Floats of any width and integers convert to float32 (as PyTorch's torch.as_tensor(x).float()
// would); bool, complex, strings and objects do not.
bool is_real(const py::array& a) {
  const char kind = a.dtype().kind();
  return kind == 'f' || kind == 'i' || kind == 'u';
}

// A C-contiguous float32 array of `a`'s values: `a` itself when it already is one, else a copy.
py::array_t<float, py::array::c_style> as_float32(const py::array& a) {
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

// NCHW (or N-vector for labels) numpy -> CHWN host tensor; `what` names it in errors ("input 'data'").
Tensor to_chwn(const std::string& what, const py::array& arr, bool labels) {
  if (labels) {
    CONVNET_CHECK(arr.ndim() == 1, what, ": labels must be a 1-D array of class indices, got ",
                  arr.ndim(), " dimensions");
    const auto kind = arr.dtype().kind();
    CONVNET_CHECK(kind == 'i' || kind == 'u' || (kind == 'f' && arr.itemsize() == 4), what,
                  ": labels must be integers (or float32 class indices), got ", dtype_name(arr));
    auto as_float = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(arr);
    const int n = static_cast<int>(arr.shape(0));
    Tensor t({1, 1, 1, n}, Device::cpu());
    t.copy_from_host(as_float.data());
    return t;
  }
  CONVNET_CHECK(is_real(arr), what, ": expected an array of real numbers (float32, or another "
                "float or integer type, converted to float32), got ", dtype_name(arr));
  CONVNET_CHECK(arr.ndim() == 4, what, ": expected an NCHW array (4 dimensions), got ",
                arr.ndim(), " dimensions");
  auto a = as_float32(arr);
  const int n = int(a.shape(0)), c = int(a.shape(1)), h = int(a.shape(2)), w = int(a.shape(3));
  Tensor t({c, h, w, n}, Device::cpu());
  py::gil_scoped_release release;  // `a` (a float32 array or a view of arr) outlives the copy
  cpu::transpose(a.data(), n, int64_t(c) * h * w, t.data());
  return t;
}

py::array_t<float> param_array(const Tensor& t) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  py::array_t<float> out(shape);
  t.copy_to_host(out.mutable_data());
  return out;
}

py::dict report_dict(const CostReport& r) {
  py::dict d;
  d["objective"] = r.objective;
  d["batch"] = r.batch;
  d["primary"] = r.primary;
  py::list costs;
  for (const auto& e : r.costs) {
    py::dict c;
    c["layer"] = e.layer;
    c["cost"] = e.cost;
    c["top1_error"] = e.top1_error;
    c["top5_error"] = e.top5_error;
    costs.append(c);
  }
  d["costs"] = costs;
  return d;
}

// "nan at [n, c, h, w] (NCHW)" for the first NaN or Inf in a CHWN tensor, "" when it has none.
std::string nonfinite_nchw(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  const int64_t n = t.dim(3), w = t.dim(2), h = t.dim(1);
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isfinite(v[i])) continue;
    const int64_t b = int64_t(i) % n, chw = int64_t(i) / n;
    return std::string(std::isnan(v[i]) ? "nan" : v[i] > 0 ? "inf" : "-inf") + " at [" + std::to_string(b) +
           ", " + std::to_string(chw / (h * w)) + ", " + std::to_string(chw / w % h) + ", " +
           std::to_string(chw % w) + "] (NCHW)";
  }
  return "";
}

// One training step for Python: the batch checked first (ValueError naming the first NaN or Inf:
// it makes the step's numbers meaningless, and the parameters stay untouched), then
// convnet::train_step (its cost and gradient checks, the update).
CostReport checked_train_step(Net& net, float lr_scale) {
  Net::check_lr_scale(lr_scale);
  for (Layer* l : net.layers())
    if (l->role() == LayerRole::Input)
      if (const std::string bad = nonfinite_nchw(net.output(l->name())); !bad.empty())
        throw ValueError("train_step: input '" + l->name() + "' holds " + bad +
                         "; the step was not run and the parameters are unchanged");
  return train_step(net, lr_scale);
}

std::unique_ptr<Net> make_net(const std::string& model_json, const std::vector<std::string>& devices,
                              uint64_t seed, const std::string& math) {
  const MathMode mode = parse_math_mode(math);
  const ModelSpec spec = ModelSpec::from_json(model_json);
  std::string text;  // the commands' --device form: one device for all, or one per logical device
  for (const auto& d : devices) text += (text.empty() ? "" : ",") + d;
  auto net = std::make_unique<Net>(spec, text.empty() ? std::vector<Device>{} : parse_devices(text), seed);
  net->set_math_mode(mode);
  return net;
}

py::dict memory_dict(int device) {
  CudaMemoryStats s = cuda_memory_stats(device);
  py::dict d;
  d["current_bytes"] = s.current_bytes;
  d["peak_bytes"] = s.peak_bytes;
  d["cached_bytes"] = s.cached_bytes;
  d["cuda_malloc_calls"] = s.cuda_malloc_calls;
  return d;
}

}  // namespace

namespace convnet::python {

py::array_t<float> chwn_to_nchw(const Tensor& t) {
  std::vector<float> host = t.to_vector();
  const int c = t.dim(0), h = t.dim(1), w = t.dim(2), n = t.dim(3);
  py::array_t<float> out({n, c, h, w});
  float* dst = out.mutable_data();
  py::gil_scoped_release release;
  cpu::transpose(host.data(), int64_t(c) * h * w, n, dst);
  return out;
}

}  // namespace convnet::python

PYBIND11_MODULE(_core, m) {
  m.doc() = "convnet engine core (C++). Use the `convnet` package rather than this module.";

  // The defaults live in SolverOptions alone: None takes them.
  convnet::python::bind_tensor(m);  // before Net, whose methods take and return tensors
  py::register_exception<NonFiniteError>(m, "NonFiniteError", PyExc_FloatingPointError);

  py::class_<SolverOptions>(m, "SolverOptions")
      .def(py::init([](std::optional<std::string> name, std::optional<double> beta1,
                       std::optional<double> beta2, std::optional<double> eps) {
             SolverOptions o;
             if (name) o.name = *name;
             if (beta1) o.beta1 = *beta1;
             if (beta2) o.beta2 = *beta2;
             if (eps) o.eps = *eps;
             o.validate();
             return o;
           }), py::arg("name") = py::none(), py::arg("beta1") = py::none(),
           py::arg("beta2") = py::none(), py::arg("eps") = py::none())
      .def_readonly("name", &SolverOptions::name)
      .def_readonly("beta1", &SolverOptions::beta1)
      .def_readonly("beta2", &SolverOptions::beta2)
      .def_readonly("eps", &SolverOptions::eps)
      .def("text", &SolverOptions::text)
      .def("__repr__", [](const SolverOptions& o) { return "SolverOptions('" + o.text() + "')"; });
  m.def("solver_names", &solver_names);
  // The bound of every integer layer option (convnet/spec.h), which the commands' integer
  // arguments share.
  m.attr("OPTION_INT_LIMIT") = kOptionIntLimit;

  py::class_<Net>(m, "Net")
      .def(py::init(&make_net), py::arg("model_json"), py::arg("devices") = std::vector<std::string>{},
           py::arg("seed") = 1, py::arg("math") = "fp32")
      .def_property("math", [](const Net& net) { return math_mode_name(net.math_mode()); },
                    [](Net& net, const std::string& m) { net.set_math_mode(parse_math_mode(m)); })
      .def("set_input", [](Net& net, const std::string& name, const py::array& arr) {
             const bool labels = net.layer(name).role() == LayerRole::Labels;
             Tensor t = to_chwn("input '" + name + "'", arr, labels);
             net.set_input(name, t);
           }, py::arg("name"), py::arg("array"))
      .def("set_input_tensor", [](Net& net, const std::string& name, const Tensor& t) { net.set_input(name, t); },
           py::arg("name"), py::arg("tensor"), py::call_guard<py::gil_scoped_release>())
      .def("output_tensor", [](const Net& net, const std::string& name) { return net.output(name); },
           "The layer's output itself (CHWN, no copy): the next forward pass overwrites it.")
      .def("set_batch", [](Net& net, const Batch& batch, const std::string& images,
                           const std::string& labels) {
             net.set_input(images, batch.images);
             net.set_input(labels, batch.labels);
           }, py::arg("batch"), py::arg("images") = "data", py::arg("labels") = "labels",
           "Feeds a pipeline Batch (CHWN, no conversion) to the input and labels layers.")
      .def("forward", [](Net& net, bool train) {
             CostReport r;
             {
               py::gil_scoped_release release;
               r = net.forward(train);
             }
             return report_dict(r);
           }, py::arg("train") = true)
      .def("forward_backward", [](Net& net) {
             CostReport r;
             {
               py::gil_scoped_release release;
               r = net.forward_backward();
             }
             return report_dict(r);
           })
      .def("train_step", [](Net& net, float lr_scale) {
             CostReport r;
             {
               py::gil_scoped_release release;
               r = checked_train_step(net, lr_scale);
             }
             return report_dict(r);
           }, py::arg("lr_scale") = 1.f,
           "forward and backward, the batch, cost and gradients checked (ValueError for a NaN or Inf "
           "input, DivergenceError for a non-finite cost or gradient; parameters untouched), the update.")
      .def_property("cuda_graph", &Net::cuda_graph, &Net::set_cuda_graph)
      .def_property_readonly("cuda_graph_nodes", &Net::cuda_graph_nodes)
      .def_property("fusion", &Net::fusion, &Net::set_fusion)
      .def("fused_layers", &Net::fused_layers)
      .def("backward", py::overload_cast<>(&Net::backward), py::call_guard<py::gil_scoped_release>())
      .def("backward_from", [](Net& net, const py::dict& grads) {
             std::map<std::string, Tensor> seeds;  // NCHW arrays -> CHWN tensors
             for (auto [key, value] : grads) {
               const std::string name = key.cast<std::string>();
               seeds[name] = to_chwn("the gradient for layer '" + name + "'", value.cast<py::array>(), false);
             }
             py::gil_scoped_release release;
             net.backward(seeds);
           })
      .def("set_input_grad", &Net::set_input_grad)
      .def("input_grad", [](const Net& net, const std::string& name) {
             return convnet::python::chwn_to_nchw(net.input_grad(name));
           })
      .def("update", &Net::update, py::arg("lr_scale") = 1.f, py::call_guard<py::gil_scoped_release>())
      .def("output", [](const Net& net, const std::string& name) { return convnet::python::chwn_to_nchw(net.output(name)); })
      .def("output_shape", [](const Net& net, const std::string& name) {
             Shape s = net.output_shape(name);
             return py::make_tuple(s[0], s[1], s[2]);
           })
      .def("param_names", [](Net& net) {
             std::vector<std::string> names;
             for (Param* p : net.params()) names.push_back(p->name);
             return names;
           })
      .def("get_param", [](Net& net, const std::string& name) { return param_array(net.param(name).value); })
      .def("get_grad", [](Net& net, const std::string& name) { return param_array(net.param(name).grad); })
      .def("param_tensor", [](Net& net, const std::string& name) { return net.param(name).value; },
           "The parameter itself (no copy): what the solver updates in place.")
      .def("grad_tensor", [](Net& net, const std::string& name) { return net.param(name).grad; },
           "The parameter's gradient itself (no copy): the next backward overwrites it.")
      .def("input_grad_tensor", [](const Net& net, const std::string& name) { return net.input_grad(name); },
           "The gradient with respect to an input (CHWN, no copy).")
      .def("set_solver", &Net::set_solver, py::arg("options"))
      .def_property_readonly("solver", [](const Net& net) { return net.solver().options(); })
      .def_property_readonly("solver_step", [](const Net& net) { return net.solver().step(); })
      .def("solver_state_names", [](const Net& net) { return net.solver().state_names(); })
      .def("get_state", [](Net& net, const std::string& name, const std::string& state) {
             return param_array(net.param(name).state_tensor(state));
           }, py::arg("name"), py::arg("state"))
      .def("gradient_buckets", [](const Net& net) {
             py::list out;
             for (const Net::GradientBucket& b : net.gradient_buckets()) {
               py::dict d;
               d["device"] = b.device.str();
               std::vector<std::string> names;
               for (const Param* p : b.params) names.push_back(p->name);
               d["params"] = names;
               d["offsets"] = b.offsets;
               d["flat"] = param_array(b.flat);
               out.append(d);
             }
             return out;
           }, "Per bucket: its device, its parameters' names and offsets, and a copy of the flat gradient.")
      .def("get_velocity", [](Net& net, const std::string& name) { return param_array(net.param(name).state_tensor("velocity")); })
      .def("set_param", [](Net& net, const std::string& name, const py::array& arr) {
             Param& p = net.param(name);
             CONVNET_CHECK(is_real(arr), "parameter '", name, "': expected an array of real numbers "
                           "(converted to float32), got ", dtype_name(arr));
             Shape got(arr.shape(), arr.shape() + arr.ndim());
             CONVNET_CHECK(got == p.value.shape(), "parameter '", name, "': expected shape ",
                           shape_str(p.value.shape()), ", got ", shape_str(got));
             auto a = as_float32(arr);
             p.value.copy_from_host(a.data());
           })
      .def("hyperparams", [](Net& net, const std::string& name) {
             Param& p = net.param(name);
             py::dict d;
             d["lr"] = p.lr;
             d["momentum"] = p.momentum;
             d["weight_decay"] = p.weight_decay;
             return d;
           })
      .def("set_hyperparams", [](Net& net, const std::string& name, std::optional<float> lr,
                                 std::optional<float> momentum, std::optional<float> weight_decay) {
             Param& p = net.param(name);
             // Before any is set. The same rule as the layer options epsW, momW, wc (layer.cpp).
             auto check = [&](const char* key, const std::optional<float>& v) {
               CONVNET_CHECK(!v || (std::isfinite(*v) && *v >= 0.f), "set_hyperparams('", name, "'): ", key,
                             " must be a finite number >= 0, got ", *v);
             };
             check("lr", lr);
             check("momentum", momentum);
             check("weight_decay", weight_decay);
             if (lr) p.lr = p.base_lr = *lr;
             if (momentum) p.momentum = *momentum;
             if (weight_decay) p.weight_decay = *weight_decay;
           }, py::arg("name"), py::arg("lr") = py::none(), py::arg("momentum") = py::none(),
           py::arg("weight_decay") = py::none())
      .def("layers", [](const Net& net) {
             py::list out;
             for (Layer* l : net.layers()) {
               Shape s = net.output_shape(l->name());
               py::dict d;
               d["name"] = l->name();
               d["type"] = l->type();
               d["role"] = role_name(l->role());
               d["classifies"] = l->declaration().is_classifier();
               d["options"] = py::module_::import("json").attr("loads")(l->options_in_effect().dump());
               d["inputs"] = l->inputs();
               d["shape"] = py::make_tuple(s[0], s[1], s[2]);
               d["device"] = net.device_of(l->name()).str();
               int64_t count = 0;
               for (const Param& p : l->params()) count += p.value.numel();
               d["params"] = count;
               out.append(d);
             }
             return out;
           })
      .def("set_profiling", &Net::set_profiling, py::arg("on"))
      .def("layer_times", [](const Net& net) {
             py::list out;
             for (const auto& t : net.layer_times()) {
               py::dict d;
               d["layer"] = t.layer;
               d["forward_ms"] = t.forward_ms;
               d["backward_ms"] = t.backward_ms;
               d["forward_calls"] = t.forward_calls;
               d["backward_calls"] = t.backward_calls;
               auto ops = [](const OpTimes& times) {
                 py::dict o;
                 for (const auto& [op, time] : times) {
                   py::dict e;
                   e["ms"] = time.ms;
                   e["calls"] = time.calls;
                   e["flop"] = time.flop;
                   e["bytes"] = time.bytes;
                   o[py::str(op)] = e;
                 }
                 return o;
               };
               d["forward_ops"] = ops(t.forward_ops);
               d["backward_ops"] = ops(t.backward_ops);
               out.append(d);
             }
             return out;
           })
      .def("memory_use", [](const Net& net) {
             py::list out;
             for (const auto& m : net.memory_use()) {
               py::dict d;
               d["kind"] = m.kind;
               d["layer"] = m.layer;
               d["what"] = m.what;
               d["device"] = m.device.str();
               d["bytes"] = m.bytes;
               out.append(d);
             }
             return out;
           })
      .def_property_readonly("parameter_count", &Net::parameter_count)
      .def_property_readonly("batch_size", &Net::batch_size)
      .def_property("step", &Net::step, &Net::set_step)
      .def_property_readonly("seed", &Net::seed)
      .def("model_json", [](const Net& net) { return net.spec().to_json(); });

  m.def("check_gradients", [](Net& net, double step, int samples, double tolerance, uint64_t seed) {
          GradCheckOptions o{step, samples, tolerance, seed};
          std::vector<GradCheckResult> rs;
          {
            py::gil_scoped_release release;
            rs = check_gradients(net, o);
          }
          py::list out;
          for (const auto& r : rs) {
            py::dict d;
            d["param"] = r.param;
            d["checked"] = r.checked;
            d["relative_error"] = r.relative_error;
            d["max_element_error"] = r.max_element_error;
            d["max_abs_gradient"] = r.max_abs_analytic;
            d["ok"] = r.ok;
            out.append(d);
          }
          return out;
        }, py::arg("net"), py::arg("step") = 1e-3, py::arg("samples") = 16,
        py::arg("tolerance") = 2e-2, py::arg("seed") = 7);
  // Every registered layer type's declaration by name (role, inputs, options with defaults and
  // help): what convnet.Model builds its methods from.
  m.def("layer_types", [] {
    nlohmann::json all = nlohmann::json::object();
    for (const LayerType* t : registered_layer_types()) all[t->name()] = t->describe();
    return py::module_::import("json").attr("loads")(all.dump());
  });
  convnet::python::bind_data(m);
  convnet::python::bind_train(m);
  m.def(
      "read_cuda_convnet_cfg",
      [](const std::string& layers, const std::string& params, int input_size) {
        return read_cuda_convnet_cfg(layers, params, input_size).to_json();
      },
      py::arg("layers"), py::arg("params"), py::arg("input_size"),
      "A cuda-convnet2 layers-*.cfg with its layer-params-*.cfg as convnet's model JSON");
  m.def(
      "write_cuda_convnet_cfg",
      [](const std::string& model_json) {
        const CudaConvnetCfg cfg = write_cuda_convnet_cfg(ModelSpec::from_json(model_json));
        return py::make_tuple(cfg.layers, cfg.params);
      },
      py::arg("model_json"), "A model as the texts of cuda-convnet2's (layers, layer-params) files");
  m.def("cuda_convnet_params_path", &cuda_convnet_params_path, py::arg("layers"));
  m.def("cuda_compiled", &cuda_compiled);
  m.def("cuda_device_count", &cuda_device_count);
  m.def("cuda_memory_stats", &memory_dict, py::arg("device") = 0,
        "The caching allocator's statistics for one GPU: current, peak and cached bytes, cudaMalloc calls.");
  m.def("cuda_reset_peak", &cuda_reset_peak, py::arg("device") = 0);
  m.def("host_memory_stats", [] {
          HostMemoryStats s = host_memory_stats();
          py::dict d;
          d["current_bytes"] = s.current_bytes;
          d["peak_bytes"] = s.peak_bytes;
          d["allocations"] = s.allocations;
          return d;
        },
        "Host memory of convnet's tensors: current and peak bytes, allocations (numpy's arrays not included).");
  m.def("host_reset_peak", &host_reset_peak);
  m.def("cuda_synchronize", &cuda_synchronize, py::arg("device") = 0,
        py::call_guard<py::gil_scoped_release>());
  m.def("set_num_threads", &cpu::set_num_threads, py::arg("n"));
  m.def("num_threads", &cpu::num_threads);
  m.def("blas_name", &cpu::blas_name);
  m.def("march", &cpu::march);  // "portable": baseline x86-64, hot loops dispatched at run time
}
