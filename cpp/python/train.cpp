// Bindings of the training loop: schedules, the Trainer (events to Python callbacks as dicts),
// evaluation, checkpoints and data sets by name. run() releases the GIL; callbacks take it back.
#include <pybind11/stl.h>

#include <cmath>

#include "bindings.h"
#include "convnet/checkpoint.h"
#include "convnet/dataset.h"
#include "convnet/job.h"
#include "convnet/trainer.h"
#include "convnet/world.h"

namespace py = pybind11;

namespace convnet::python {

namespace {

// `set` ("test", "training") is what skipped_note calls the examples.
py::dict metrics_dict(const Metrics& m, const std::string& set = "test") {
  py::dict d;
  d["cost"] = m.cost;
  d["top1_error"] = m.top1_error;
  d["top5_error"] = m.top5_error;
  d["examples"] = m.examples;
  d["skipped"] = m.skipped;
  d["first_skipped"] = m.first_skipped;
  d["skipped_note"] = skipped_note(m, set);  // "" when none was skipped
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
  d["train"] = metrics_dict(e.train, "training");
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

// Python callables (or None) as a trainer's callbacks.
void set_callbacks(Trainer& t, py::object on_batch, py::object on_test, py::object on_epoch) {
  t.on_batch = callback<BatchEvent>(on_batch, &batch_event);
  auto test_cb = callback<TestEvent>(on_test, &test_event);
  t.on_test = test_cb ? [test_cb](const TestEvent& e) { test_cb(e); } : std::function<void(const TestEvent&)>{};
  t.on_epoch = callback<EpochEvent>(on_epoch, &epoch_event);
}

py::dict run_trainer(Trainer& t) {
  Trainer::Result r;
  {
    py::gil_scoped_release release;
    r = t.run();
  }
  py::dict d;
  d["epochs_done"] = r.epochs_done;
  d["step"] = r.step;
  d["train"] = metrics_dict(r.train, "training");
  d["test"] = r.test.examples ? py::object(metrics_dict(r.test)) : py::object(py::none());
  d["stopped"] = r.stopped;
  d["last_checkpoint"] = r.last_checkpoint;
  d["elapsed_s"] = r.elapsed_s;
  return d;
}

// A Python progress(done, total) callable (or None) for C++, taking the GIL for each call.
std::function<void(int64_t, int64_t)> progress_callback(py::object progress) {
  if (progress.is_none()) return {};
  return [progress](int64_t done, int64_t total) {
    py::gil_scoped_acquire gil;
    progress(done, total);
  };
}

// The Trainer with its pipelines kept alive by the Python objects that own them.
struct PyTrainer {
  std::unique_ptr<Trainer> trainer;
  py::object net, train, test;  // keep-alive
};

void bind_job(py::module_& m) {
  m.def("job_options", [] {
    py::list out;
    for (const JobOption& o : job_options()) {
      py::dict d;
      d["name"] = o.name;
      d["aliases"] = o.aliases;
      d["value"] = o.value;
      d["default"] = o.fallback;
      d["help"] = o.help;
      d["repeatable"] = o.repeatable;
      d["bare"] = o.bare;
      out.append(d);
    }
    return out;
  }, "The training job's options (convnet/job.h): name, cuda-convnet2 aliases, value placeholder "
     "(empty for a flag), default as text, help, repeatable, and the value when given bare.");

  py::class_<DataOptions>(m, "DataOptions")
      .def(py::init<>())
      .def_readwrite("data", &DataOptions::data)
      .def_readwrite("image_size", &DataOptions::image_size)
      .def_readwrite("crop", &DataOptions::crop)
      .def_readwrite("mirror", &DataOptions::mirror)
      .def_readwrite("pca_std", &DataOptions::pca_std)
      .def_readwrite("pca_rescale", &DataOptions::pca_rescale)
      .def_readwrite("mean", &DataOptions::mean)
      .def_readwrite("scale", &DataOptions::scale)
      .def_readwrite("stats_sample", &DataOptions::stats_sample)
      .def_readwrite("stats_path", &DataOptions::stats_path);

  py::class_<JobOptions>(m, "JobOptions")
      .def(py::init(&JobOptions::parse), py::arg("args"),
           "Reads [(option, value)] pairs as the commands take them (names, aliases and defaults: job_options()).")
      .def_readonly("data", &JobOptions::data)
      .def_readonly("print_every", &JobOptions::print_every)
      .def_readonly("quiet", &JobOptions::quiet)
      .def_readonly("multiview_test", &JobOptions::multiview_test)
      .def_readonly("device", &JobOptions::device)
      .def_readonly("batch", &JobOptions::batch)
      .def_property_readonly("epochs", [](const JobOptions& o) { return o.trainer.epochs; })
      .def_property_readonly("save_dir", [](const JobOptions& o) { return o.trainer.save_dir; })
      .def_property_readonly("log_path", [](const JobOptions& o) { return o.trainer.log_path; });

  py::class_<RunData, std::shared_ptr<RunData>>(m, "RunData")
      .def(py::init([](const DataOptions& o, py::object progress) {
             const auto report = progress_callback(progress);
             py::gil_scoped_release release;
             return std::make_shared<RunData>(o, report);
           }), py::arg("options"), py::arg("progress") = py::none())
      .def_static("of_run", [](py::object run, const std::string& data) {
             return std::make_shared<RunData>(RunData::of_run(python_to_json(run), data));
           }, py::arg("run_info"), py::arg("data") = "")
      .def_property_readonly("options", &RunData::options)
      .def_property_readonly("train_source", [](const RunData& r) { return r.dataset().train; })
      .def_property_readonly("test_source", [](const RunData& r) { return r.dataset().test; })
      .def_property_readonly("description", [](const RunData& r) { return r.dataset().description; })
      .def_property_readonly("stats", &RunData::stats)
      .def_property_readonly("mean_value", &RunData::mean_value)
      .def_property_readonly("scale", &RunData::scale)
      .def_property_readonly("channels", &RunData::channels)
      .def_property_readonly("input_size", &RunData::input_size)
      .def_property_readonly("classes", &RunData::classes)
      .def("class_names", &RunData::class_names)
      .def("pipeline", [](const RunData& r, bool train, int batch, uint64_t seed, int workers, bool pinned) {
             return std::make_unique<Pipeline>(train ? r.dataset().train : r.dataset().test,
                                               r.pipeline_options(train, batch, seed, workers, pinned), r.stats());
           }, py::arg("train"), py::arg("batch"), py::arg("seed") = 1, py::arg("workers") = 2,
           py::arg("pinned") = false, py::keep_alive<0, 1>())
      .def("info", [](const RunData& r) { return json_to_python(r.info()); });

  py::class_<Job>(m, "Job")
      .def(py::init([](const std::string& model_json, std::shared_ptr<RunData> data, const JobOptions& o) {
             const ModelSpec spec = ModelSpec::from_json(model_json);
             py::gil_scoped_release release;
             return std::make_unique<Job>(spec, std::move(data), o);
           }), py::arg("model_json"), py::arg("data"), py::arg("options"))
      .def_property_readonly("net", &Job::net, py::return_value_policy::reference_internal)
      .def_property_readonly("test_pipeline", &Job::test_pipeline, py::return_value_policy::reference_internal)
      .def_property_readonly("resumed_from", &Job::resumed_from)
      .def_property_readonly("resume_notes", &Job::resume_notes)
      .def_property_readonly("description", &Job::description)
      .def("set_callbacks", [](Job& j, py::object on_batch, py::object on_test, py::object on_epoch) {
             set_callbacks(j.trainer(), on_batch, on_test, on_epoch);
           }, py::arg("on_batch") = py::none(), py::arg("on_test") = py::none(),
           py::arg("on_epoch") = py::none())
      .def("run", [](Job& j) { return run_trainer(j.trainer()); })
      .def("multiview_test", [](Job& j, py::object progress) {
             const auto report = progress_callback(progress);
             Metrics r;
             {
               py::gil_scoped_release release;
               r = j.multiview_test(report);
             }
             return metrics_dict(r);
           }, py::arg("progress") = py::none());

  m.def("mpi_compiled", &mpi_compiled, "Whether this build can train across processes (MPI).");
  m.def("world_rank", [] { return World::get().rank(); },
        "This process's rank in an MPI run (0 when not started by an MPI launcher).");
  m.def("world_size", [] { return World::get().size(); }, "The processes of an MPI run (1 otherwise).");
  m.def("abort_world", [](int code) { World::get().abort(code); }, py::arg("code"),
        "Ends every rank of an MPI run at once (so that none waits for this one); else exits.");
  m.attr("FASHION_MNIST_CLASSES") = fashion_mnist_classes();
  m.attr("FASHION_MNIST_DIR") = std::string(kFashionMnistDir);
}

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

  const TrainerOptions d;  // the defaults are TrainerOptions' own
  py::class_<PyTrainer>(m, "Trainer")
      .def(py::init([](py::object net_obj, py::object train_obj, py::object test_obj, int epochs,
                       int test_every, int test_batches,
                       const std::vector<std::pair<std::string, std::string>>& schedules,
                       const std::string& save_dir, int save_every, int keep,
                       const std::string& log_path, double max_grad_norm, py::object run_info,
                       std::optional<SolverOptions> solver) {
             // NaN would compare false and switch the limit off without a word.
             CONVNET_CHECK(std::isfinite(max_grad_norm) && max_grad_norm >= 0,
                           "Trainer: max_grad_norm must be a finite number >= 0 (0: no limit), got ", max_grad_norm);
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
           py::arg("net"), py::arg("train"), py::arg("test"), py::arg("epochs") = d.epochs,
           py::arg("test_every") = d.test_every, py::arg("test_batches") = d.test_batches,
           py::arg("schedules") = std::vector<std::pair<std::string, std::string>>{{"*", "constant"}},
           py::arg("save_dir") = d.save_dir, py::arg("save_every") = d.save_every, py::arg("keep") = d.keep,
           py::arg("log_path") = d.log_path, py::arg("max_grad_norm") = d.max_grad_norm,
           py::arg("run_info") = py::none(), py::arg("solver") = py::none())
      .def("resume", [](PyTrainer& t, const std::string& path) { return t.trainer->resume(path); },
           py::arg("checkpoint_or_dir"))
      .def("set_callbacks", [](PyTrainer& t, py::object on_batch, py::object on_test, py::object on_epoch) {
             set_callbacks(*t.trainer, on_batch, on_test, on_epoch);
           }, py::arg("on_batch") = py::none(), py::arg("on_test") = py::none(),
           py::arg("on_epoch") = py::none())
      .def("run", [](PyTrainer& t) { return run_trainer(*t.trainer); });

  bind_job(m);

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
          const auto report = progress_callback(progress);
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
