#include "convnet/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <filesystem>
#include <map>
#include <sstream>

#include "convnet/error.h"
#include "convnet/named_params.h"

namespace convnet {

namespace {

namespace fs = std::filesystem;

// "name" with a .gz twin: whichever exists ("" when neither).
std::string idx_file(const fs::path& dir, const std::string& name) {
  for (const std::string& candidate : {name, name + ".gz"})
    if (fs::is_regular_file(dir / candidate)) return (dir / candidate).string();
  return "";
}

// Examples [first, first + count) of another source: a held-out part of a generated set.
class RangeSource : public DataSource {
 public:
  RangeSource(std::shared_ptr<DataSource> all, int64_t first, int64_t count)
      : all_(std::move(all)), first_(first), count_(count) {}
  int64_t size() const override { return count_; }
  int channels() const override { return all_->channels(); }
  int height() const override { return all_->height(); }
  int width() const override { return all_->width(); }
  int classes() const override { return all_->classes(); }
  int load(int64_t index, float* chw) const override { return all_->load(first_ + index, chw); }
  std::string describe(int64_t index) const override { return all_->describe(first_ + index); }

 private:
  std::shared_ptr<DataSource> all_;
  int64_t first_, count_;
};

// The accepted forms of a data-set spec, for messages.
constexpr const char* kDataForms =
    "fashion-mnist; a folder with train-images-idx3-ubyte[.gz] and the other IDX files; a folder "
    "with train/ and val/ (or test/) class folders of JPEG/PNG images; generated or "
    "generated[count=512;classes=4;channels=1;size=16;seed=1]";

Dataset generated(const std::string& spec) {
  // Each key's default and range (the sources' limits, data.h), checked before anything is built.
  struct Key {
    const char* name;
    int64_t value, min, max;
  };
  // count: its held-out quarter (below) must fit in generated_source's limit too.
  Key keys[] = {{"count", 512, 1, kMaxGeneratedCount / 5 * 4},
                {"classes", 4, 1, kMaxGeneratedClasses},
                {"channels", 1, 1, kMaxGeneratedChannels},
                {"size", 16, 1, kMaxSourceSide},
                {"seed", 1, 0, std::numeric_limits<int64_t>::max()}};
  const NamedParams parsed = parse_named_params(spec, "data set");
  CONVNET_CHECK(parsed.name == "generated", "data set '", spec, "': unknown kind of data set; the accepted forms are ",
                kDataForms);
  for (const auto& entry : parsed.params) {
    const std::string& key = entry.first;  // (not a structured binding: lambdas capture it in C++17)
    const std::string& value = entry.second;
    Key* k = std::find_if(std::begin(keys), std::end(keys), [&](const Key& c) { return key == c.name; });
    CONVNET_CHECK(k != std::end(keys), "data set '", spec, "': unknown key '", key,
                  "' (known: count, classes, channels, size, seed)");
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(value.c_str(), &end, 10);
    // ERANGE: strtoll saturates, which must not pass for the largest value.
    CONVNET_CHECK(!value.empty() && end && *end == '\0' && errno != ERANGE && x >= k->min && x <= k->max,
                  "data set '", spec, "': ", key, " '", value, "' must be a whole number in [", k->min,
                  ", ", k->max, "]");
    k->value = x;
  }
  std::map<std::string, int64_t> p;
  for (const Key& k : keys) p[k.name] = k.value;
  Dataset d;
  const int classes = int(p["classes"]), channels = int(p["channels"]), size = int(p["size"]);
  // The class patterns depend on the seed and each example on its index: the test set is a
  // quarter as many further examples of the same classes.
  const int64_t count = p["count"], held_out = std::max<int64_t>(count / 4, 1);
  auto all = generated_source(count + held_out, classes, channels, size, uint64_t(p["seed"]));
  d.train = std::make_shared<RangeSource>(all, 0, count);
  d.test = std::make_shared<RangeSource>(all, count, held_out);
  d.description = "generated images (" + std::to_string(p["count"]) + " training examples, " +
                  std::to_string(classes) + " classes, " + std::to_string(channels) + "x" +
                  std::to_string(size) + "x" + std::to_string(size) + ")";
  return d;
}

// The sources of a data set named as in dataset.h.
Dataset open_dataset_sources(const std::string& spec, int image_size) {
  // "generated" followed by anything but "[" is a typo, not a path: refused with the forms.
  if (spec.rfind("generated", 0) == 0) return generated(spec);
  CONVNET_CHECK(image_size >= 1 && image_size <= kMaxSourceSide, "data set '", spec, "': image size ",
                image_size, " must be in [1, ", kMaxSourceSide, "]");
  const fs::path dir = spec == "fashion-mnist" ? fs::path(kFashionMnistDir) : fs::path(spec);
  CONVNET_CHECK(fs::is_directory(dir), "data set '", spec, "': ", dir.string(),
                spec == "fashion-mnist" ? " does not exist (apt-get install dataset-fashion-mnist)"
                                        : detail::concat(" is not a folder (the accepted forms are ",
                                                         kDataForms, ")"));
  const std::string train_images = idx_file(dir, "train-images-idx3-ubyte");
  if (!train_images.empty()) {
    const std::string names[3] = {"train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    std::string files[3];
    for (int i = 0; i < 3; ++i) {
      files[i] = idx_file(dir, names[i]);
      CONVNET_CHECK(!files[i].empty(), "data set '", spec, "': ", (dir / names[i]).string(),
                    "[.gz] is missing (an IDX data set needs train- and t10k- images and labels)");
    }
    Dataset d{idx_source(train_images, files[0]), idx_source(files[1], files[2]),
              "IDX files in " + dir.string(), {}};
    // IDX files carry no class names: a test label the training set never has is a class the
    // net has no output for.
    CONVNET_CHECK(d.test->classes() <= d.train->classes(), "data set '", spec, "': ", files[2],
                  " has labels up to ", d.test->classes() - 1, " but the training labels ", files[0],
                  " only up to ", d.train->classes() - 1);
    return d;
  }
  const fs::path train = dir / "train";
  fs::path test = dir / "val";
  if (!fs::is_directory(test)) test = dir / "test";
  CONVNET_CHECK(fs::is_directory(train) && fs::is_directory(test), "data set '", spec, "': ",
                dir.string(), " holds neither IDX files (train-images-idx3-ubyte[.gz], ...) nor "
                "train/ and val/ (or test/) image folders");
  auto train_source = folder_source(train.string(), image_size);
  // The test folders take the training labels by class name (a missing test class is fine).
  auto test_source = folder_source_matching(test.string(), train_source->class_names(), image_size);
  return {train_source, test_source,
          "image folders " + train.string() + " and " + test.string() + " at " +
              std::to_string(image_size) + "x" + std::to_string(image_size),
          {}};
}

}  // namespace

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

Dataset open_dataset(const std::string& spec, int image_size) {
  Dataset d = open_dataset_sources(spec, image_size);
  d.class_names = d.train->class_names();
  if (d.class_names.empty() && spec == "fashion-mnist") d.class_names = fashion_mnist_classes();
  return d;
}

}  // namespace convnet
