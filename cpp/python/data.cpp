// Bindings for the data pipeline: sources, statistics, augmentation, batches. Batches stay C++
// tensors (CHWN) on their way into a Net; numpy copies (NCHW) are made only when asked for.
#include <cstring>
#include <map>

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "convnet/data.h"
#include "convnet/error.h"

namespace py = pybind11;

namespace convnet::python {

AugmentOptions make_augment(int crop, bool random_crop, bool mirror, float pca_std,
                            bool pca_rescale, bool subtract_mean_image, float mean_value,
                            float scale) {
  AugmentOptions a;
  a.crop = crop;
  a.random_crop = random_crop;
  a.mirror = mirror;
  a.pca_std = pca_std;
  a.pca_rescale = pca_rescale;
  a.subtract_mean_image = subtract_mean_image;
  a.mean_value = mean_value;
  a.scale = scale;
  return a;
}

namespace {

}  // namespace

void bind_data(py::module_& m) {
  py::register_exception<DataError>(m, "DataError", PyExc_ValueError);

  py::class_<DataSource, std::shared_ptr<DataSource>>(m, "DataSource")
      .def("__len__", &DataSource::size)
      .def_property_readonly("channels", &DataSource::channels)
      .def_property_readonly("height", &DataSource::height)
      .def_property_readonly("width", &DataSource::width)
      .def_property_readonly("classes", &DataSource::classes)
      .def("class_names", &DataSource::class_names)
      .def("describe", &DataSource::describe, py::arg("index"))
      .def("load", [](const DataSource& s, int64_t i) {
             if (i < 0 || i >= s.size())
               throw ValueError(detail::concat("index ", i, " out of range for a source of ", s.size()));
             py::array_t<float> out({s.channels(), s.height(), s.width()});
             int label;
             {
               py::gil_scoped_release release;
               label = s.load(i, out.mutable_data());
             }
             return py::make_tuple(out, label);
           }, py::arg("index"), "Example `index` as (C x H x W float32 in [0, 255], label).");

  m.def("read_idx", [](const std::string& path) {
          IdxArray a = read_idx(path);
          const std::map<int, const char*> dtypes = {{0x08, "uint8"}, {0x09, "int8"}, {0x0B, "int16"},
                                                     {0x0C, "int32"}, {0x0D, "float32"}, {0x0E, "float64"}};
          std::vector<py::ssize_t> shape(a.dims.begin(), a.dims.end());
          py::array out(py::dtype(dtypes.at(a.type)), shape);
          std::memcpy(out.mutable_data(), a.data.data(), a.data.size());
          return out;
        }, py::arg("path"), "An IDX file (gzip or raw, any IDX type) as a numpy array.");
  m.def("idx_source", &idx_source, py::arg("images"), py::arg("labels"));
  m.def("folder_source", &folder_source, py::arg("root"), py::arg("size") = 256);
  m.def("image_files_source", &image_files_source, py::arg("paths"), py::arg("size") = 256);
  m.def("generated_source", &generated_source, py::arg("count"), py::arg("classes"),
        py::arg("channels"), py::arg("size"), py::arg("seed") = 1);
  m.def("array_source", [](py::array_t<float, py::array::c_style | py::array::forcecast> x,
                           py::array_t<int, py::array::c_style | py::array::forcecast> y, int classes) {
          if (x.ndim() != 4) throw ValueError("array_source: images must be N x C x H x W");
          if (y.ndim() != 1 || y.shape(0) != x.shape(0))
            throw ValueError(detail::concat("array_source: ", y.size(), " labels for ", x.shape(0), " images"));
          return array_source(x.data(), y.data(), x.shape(0), int(x.shape(1)), int(x.shape(2)),
                              int(x.shape(3)), classes);
        }, py::arg("images"), py::arg("labels"), py::arg("classes"));

  py::class_<DataStats>(m, "DataStats")
      .def(py::init<>())
      .def_property_readonly("mean", [](const DataStats& s) {
             return py::array_t<float>(py::ssize_t(s.mean.size()), s.mean.data());
           })
      .def_readonly("eigenvalues", &DataStats::eigenvalues)
      .def_readonly("eigenvectors", &DataStats::eigenvectors)
      .def_readonly("examples", &DataStats::examples)
      .def_readonly("pixel_std", &DataStats::pixel_std)
      .def("save", [](const DataStats& s, const std::string& path) { save_stats(s, path); });
  m.def("load_stats", &load_stats, py::arg("path"));
  m.def("parse_scale", &parse_scale, py::arg("text"), py::arg("stats"));
  m.def("compute_stats", [](const DataSource& s, int64_t sample,
                            std::function<void(int64_t, int64_t)> progress) {
          // The callback comes from Python: take the GIL only around it.
          std::function<void(int64_t, int64_t)> cb;
          if (progress)
            cb = [progress](int64_t done, int64_t total) {
              py::gil_scoped_acquire acquire;
              progress(done, total);
            };
          py::gil_scoped_release release;
          return compute_stats(s, sample, cb);
        }, py::arg("source"), py::arg("sample") = 0, py::arg("progress") = nullptr);

  py::class_<Batch>(m, "Batch")
      .def_readonly("epoch", &Batch::epoch)
      .def_readonly("index", &Batch::index)
      .def_readonly("skipped", &Batch::skipped)
      .def_property_readonly("size", [](const Batch& b) { return b.images.dim(3); })
      .def("images", [](const Batch& b) { return chwn_to_nchw(b.images); }, "The images as N x C x H x W.")
      .def("labels", [](const Batch& b) {
             std::vector<float> v = b.labels.to_vector();
             py::array_t<int64_t> out(py::ssize_t(v.size()));
             for (size_t i = 0; i < v.size(); ++i) out.mutable_data()[i] = int64_t(v[i]);
             return out;
           });

  // The defaults are PipelineOptions' and AugmentOptions' own (the Python wrapper passes only
  // what its caller gave).
  const PipelineOptions d;
  py::class_<Pipeline>(m, "Pipeline")
      .def(py::init([](std::shared_ptr<DataSource> source, int batch, bool shuffle, bool train,
                       bool drop_last, uint64_t seed, int workers, int prefetch, int crop,
                       bool random_crop, bool mirror, float pca_std, bool pca_rescale,
                       bool subtract_mean_image, float mean_value, float scale,
                       const DataStats& stats, bool pinned, int jitter_min, int jitter_max, int test_scale) {
             PipelineOptions o;
             o.batch = batch;
             o.shuffle = shuffle;
             o.train = train;
             o.drop_last = drop_last;
             o.seed = seed;
             o.workers = workers;
             o.prefetch = prefetch;
             // Safe here: Python never holds a batch's tensors outside its Batch (images() and
             // Net.set_batch copy them).
             o.reuse_batch_memory = true;
             o.pinned_memory = pinned;
             o.augment = make_augment(crop, random_crop, mirror, pca_std, pca_rescale,
                                      subtract_mean_image, mean_value, scale);
             o.augment.jitter_min = jitter_min;
             o.augment.jitter_max = jitter_max;
             o.augment.test_scale = test_scale;
             return std::make_unique<Pipeline>(std::move(source), o, stats);
           }),
           py::arg("source"), py::arg("batch") = d.batch, py::arg("shuffle") = d.shuffle,
           py::arg("train") = d.train, py::arg("drop_last") = d.drop_last, py::arg("seed") = d.seed,
           py::arg("workers") = d.workers, py::arg("prefetch") = d.prefetch, py::arg("crop") = d.augment.crop,
           py::arg("random_crop") = d.augment.random_crop, py::arg("mirror") = d.augment.mirror,
           py::arg("pca_std") = d.augment.pca_std, py::arg("pca_rescale") = d.augment.pca_rescale,
           py::arg("subtract_mean_image") = d.augment.subtract_mean_image,
           py::arg("mean_value") = d.augment.mean_value, py::arg("scale") = d.augment.scale,
           py::arg("stats") = DataStats{}, py::arg("pinned") = d.pinned_memory,
           py::arg("jitter_min") = d.augment.jitter_min, py::arg("jitter_max") = d.augment.jitter_max,
           py::arg("test_scale") = d.augment.test_scale)
      .def("next", [](Pipeline& p) -> py::object {
             auto b = std::make_unique<Batch>();
             bool ok;
             {
               py::gil_scoped_release release;
               ok = p.next(*b);
             }
             if (!ok) return py::none();
             return py::cast(std::move(b));
           }, "The next batch of the epoch, or None at its end.")
      .def("start_epoch", &Pipeline::start_epoch, py::arg("epoch"), py::arg("first_batch") = 0,
           "Continue at batch `first_batch` of `epoch` (what an uninterrupted run gets there).")
      .def_property_readonly("batches_per_epoch", &Pipeline::batches_per_epoch)
      .def_property_readonly("epoch", &Pipeline::epoch)
      .def_property_readonly("skipped_total", &Pipeline::skipped_total);

  m.def("ten_views", [](py::array_t<float, py::array::c_style | py::array::forcecast> chw, int crop) {
          if (chw.ndim() != 3) throw ValueError("ten_views: expected a C x H x W image");
          Tensor t = ten_views(chw.data(), int(chw.shape(0)), int(chw.shape(1)), int(chw.shape(2)), crop);
          return chwn_to_nchw(t);
        }, py::arg("image"), py::arg("crop"));
  m.def("augment_example", [](py::array_t<float, py::array::c_style | py::array::forcecast> chw,
                              const DataStats& stats, bool train, uint64_t key, int crop,
                              bool random_crop, bool mirror, float pca_std, bool pca_rescale,
                              bool subtract_mean_image, float mean_value, float scale) {
          if (chw.ndim() != 3) throw ValueError("augment_example: expected a C x H x W image");
          AugmentOptions o = make_augment(crop, random_crop, mirror, pca_std, pca_rescale,
                                          subtract_mean_image, mean_value, scale);
          const int c = int(chw.shape(0)), h = int(chw.shape(1)), w = int(chw.shape(2));
          const int side_h = crop ? crop : h, side_w = crop ? crop : w;
          py::array_t<float> out({c, side_h, side_w});
          augment_example(chw.data(), c, h, w, o, stats, train, key, out.mutable_data());
          return out;
        }, py::arg("image"), py::arg("stats"), py::arg("train"), py::arg("key"), py::arg("crop") = 0,
        py::arg("random_crop") = true, py::arg("mirror") = true, py::arg("pca_std") = 0.f,
        py::arg("pca_rescale") = false, py::arg("subtract_mean_image") = false,
        py::arg("mean_value") = 0.f, py::arg("scale") = 1.f);
}

}  // namespace convnet::python
