// Bindings of the training loop: schedules, the Trainer (events to Python callbacks as dicts),
// evaluation, checkpoints and data sets by name. run() releases the GIL; callbacks take it back.
#include <pybind11/stl.h>

#include "bindings.h"
#include "convnet/checkpoint.h"
#include "convnet/dataset.h"
#include "convnet/trainer.h"

namespace py = pybind11;

namespace convnet::python {

namespace {

py::dict metrics_dict(const Metrics& m) {
  py::dict d;
  d["cost"] = m.cost;
  d["top1_error"] = m.top1_error;
  d["top5_error"] = m.top5_error;
  d["examples"] = m.examples;
  return d;
}

py::object json_to_python(const nlohmann::json& j) {
  return py::module_::import("json").attr("loads")(j.dump());
}

nlohmann::json python_to_json(const py::object& o) {
  if (o.is_none()) return nlohmann::json::object();
  return nlohmann::json::parse(py::str(py::module_::import("json").attr("dumps")(o)).cast<std::string>());
}

py::dict batch_event(const BatchEvent& e) {
  py::dict d;
  d["epoch"] = e.epoch;
  d["batch"] = e.batch;
  d["batches"] = e.batches;
  d["step"] = e.step;
  d["epoch_float"] = e.epoch_float;
  d["cost"] = e.train.cost;
  d["top1_error"] = e.train.top1_error;
  d["top5_error"] = e.train.top5_error;
  d["lr"] = e.lr;
  d["grad_norm"] = e.grad_norm;
  d["elapsed_s"] = e.elapsed_s;
  d["images_per_s"] = e.images_per_s;
  return d;
}

py::dict test_event(const TestEvent& e) {
  py::dict d = metrics_dict(e.test);
  d["epoch"] = e.epoch;
  d["batch"] = e.batch;
  d["step"] = e.step;
  d["epoch_float"] = e.epoch_float;
  d["elapsed_s"] = e.elapsed_s;
  d["lr_dropped"] = e.lr_dropped;
  return d;
}

py::dict epoch_event(const EpochEvent& e) {
  py::dict d;
  d["epoch"] = e.epoch;
  d["step"] = e.step;
  d["train"] = metrics_dict(e.train);
  d["test"] = e.test.examples ? py::object(metrics_dict(e.test)) : py::object(py::none());
  d["lr"] = e.lr;
  d["elapsed_s"] = e.elapsed_s;
  d["epoch_s"] = e.epoch_s;
  d["checkpoint"] = e.checkpoint;
  return d;
}

// A Python callable as a trainer callback: the GIL is taken for the call; None counts as "go on".
template <class Event>
std::function<bool(const Event&)> callback(py::object fn, py::dict (*convert)(const Event&)) {
  if (fn.is_none()) return {};
  // The py::object must be released with the GIL held: the deleter takes it.
  std::shared_ptr<py::object> holder(new py::object(std::move(fn)), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
  return [holder, convert](const Event& e) {
    py::gil_scoped_acquire gil;
    py::object r = (*holder)(convert(e));
    return r.is_none() || r.cast<bool>();
  };
}

// The Trainer with its pipelines kept alive by the Python objects that own them.
struct PyTrainer {
  std::unique_ptr<Trainer> trainer;
  py::object net, train, test;  // keep-alive
};

}  // namespace

void bind_train(py::module_& m) {
  py::register_exception<DivergenceError>(m, "DivergenceError", PyExc_FloatingPointError);

  py::class_<Schedule>(m, "Schedule")
      .def(py::init(&Schedule::parse), py::arg("text") = "constant")
      .def("multiplier", &Schedule::multiplier, py::arg("epoch"), py::arg("total_epochs"))
      .def("observe_validation", &Schedule::observe_validation, py::arg("error"))
      .def_property_readonly("type", &Schedule::type)
      .def_property_readonly("text", &Schedule::text)
      .def("__repr__", [](const Schedule& s) { return "Schedule('" + s.text() + "')"; });

  py::class_<PyTrainer>(m, "Trainer")
      .def(py::init([](py::object net_obj, py::object train_obj, py::object test_obj, int epochs,
                       int test_every, int test_batches,
                       const std::vector<std::pair<std::string, std::string>>& schedules,
                       const std::string& save_dir, int save_every, int keep,
                       const std::string& log_path, double max_grad_norm, py::object run_info,
                       std::optional<SolverOptions> solver) {
             TrainerOptions o;
             if (solver) o.solver = *solver;
             o.epochs = epochs;
             o.test_every = test_every;
             o.test_batches = test_batches;
             o.schedules.clear();
             for (auto& [group, text] : schedules) o.schedules.emplace_back(group, Schedule::parse(text));
             o.save_dir = save_dir;
             o.save_every = save_every;
             o.keep = keep;
             o.log_path = log_path;
             o.max_grad_norm = max_grad_norm;
             o.run_info = python_to_json(run_info);
             auto t = std::make_unique<PyTrainer>();
             Pipeline* test = test_obj.is_none() ? nullptr : &test_obj.cast<Pipeline&>();
             t->trainer = std::make_unique<Trainer>(net_obj.cast<Net&>(), train_obj.cast<Pipeline&>(),
                                                    test, std::move(o));
             t->net = net_obj;
             t->train = train_obj;
             t->test = test_obj;
             return t;
           }),
           py::arg("net"), py::arg("train"), py::arg("test"), py::arg("epochs"),
           py::arg("test_every") = 0, py::arg("test_batches") = 0,
           py::arg("schedules") = std::vector<std::pair<std::string, std::string>>{{"*", "constant"}},
           py::arg("save_dir") = "", py::arg("save_every") = 0, py::arg("keep") = 3,
           py::arg("log_path") = "", py::arg("max_grad_norm") = 0.0, py::arg("run_info") = py::none(),
           py::arg("solver") = py::none())
      .def("resume", [](PyTrainer& t, const std::string& path) { return t.trainer->resume(path); },
           py::arg("checkpoint_or_dir"))
      .def("set_callbacks", [](PyTrainer& t, py::object on_batch, py::object on_test, py::object on_epoch) {
             t.trainer->on_batch = callback<BatchEvent>(on_batch, &batch_event);
             auto test_cb = callback<TestEvent>(on_test, &test_event);
             t.trainer->on_test = test_cb ? [test_cb](const TestEvent& e) { test_cb(e); }
                                          : std::function<void(const TestEvent&)>{};
             t.trainer->on_epoch = callback<EpochEvent>(on_epoch, &epoch_event);
           }, py::arg("on_batch") = py::none(), py::arg("on_test") = py::none(),
           py::arg("on_epoch") = py::none())
      .def("run", [](PyTrainer& t) {
             Trainer::Result r;
             {
               py::gil_scoped_release release;
               r = t.trainer->run();
             }
             py::dict d;
             d["epochs_done"] = r.epochs_done;
             d["step"] = r.step;
             d["train"] = metrics_dict(r.train);
             d["test"] = r.test.examples ? py::object(metrics_dict(r.test)) : py::object(py::none());
             d["stopped"] = r.stopped;
             d["last_checkpoint"] = r.last_checkpoint;
             d["elapsed_s"] = r.elapsed_s;
             return d;
           });

  m.def("evaluate", [](Net& net, Pipeline& data, int max_batches) {
          Metrics r;
          {
            py::gil_scoped_release release;
            r = evaluate(net, data, max_batches);
          }
          return metrics_dict(r);
        }, py::arg("net"), py::arg("data"), py::arg("max_batches") = 0);
  m.def("evaluate_multiview", [](Net& net, const DataSource& source, const DataStats& stats, int crop,
                                 bool subtract_mean_image, float mean_value, float scale, int batch,
                                 py::object progress) {
          const AugmentOptions a = make_augment(crop, false, false, 0.f, false, subtract_mean_image,
                                                mean_value, scale);
          std::function<void(int64_t, int64_t)> report;
          if (!progress.is_none())
            report = [progress](int64_t done, int64_t total) {
              py::gil_scoped_acquire gil;
              progress(done, total);
            };
          Metrics r;
          {
            py::gil_scoped_release release;
            r = evaluate_multiview(net, source, stats, a, batch, report);
          }
          return metrics_dict(r);
        }, py::arg("net"), py::arg("source"), py::arg("stats"), py::arg("crop"),
        py::arg("subtract_mean_image") = false, py::arg("mean_value") = 0.f, py::arg("scale") = 1.f,
        py::arg("batch") = 128, py::arg("progress") = py::none());

  m.def("save_checkpoint", [](Net& net, const std::string& path, py::object state) {
          save_checkpoint(net, path, python_to_json(state));
        }, py::arg("net"), py::arg("path"), py::arg("state") = py::none());
  m.def("load_checkpoint", [](Net& net, const std::string& path) {
          return json_to_python(load_checkpoint(net, path));
        }, py::arg("net"), py::arg("path"));
  m.def("read_checkpoint_meta", [](const std::string& path) {
          const CheckpointMeta meta = read_checkpoint_meta(path);
          py::dict d;
          d["model"] = meta.model_json;
          d["step"] = meta.step;
          d["seed"] = meta.seed;
          d["state"] = json_to_python(meta.state);
          d["solver"] = meta.solver;
          d["solver_step"] = meta.solver_step;
          return d;
        }, py::arg("path"));
  m.def("list_checkpoints", &list_checkpoints, py::arg("dir"));
  m.def("latest_checkpoint", &latest_checkpoint, py::arg("dir"));

  m.def("open_dataset", [](const std::string& spec, int image_size) {
          Dataset d = open_dataset(spec, image_size);
          return py::make_tuple(d.train, d.test, d.description);
        }, py::arg("spec"), py::arg("image_size") = 256);
}

}  // namespace convnet::python
