// Checkpoints: the safetensors reader and writer (round trips, every malformed header, atomic
// replacement), checkpoint round trips, model mismatches, interrupted saves, a run's folder
// (pruning, latest), and a bit-exact resume of training through a checkpoint.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>

#include "convnet/checkpoint.h"
#include "convnet/error.h"
#include "convnet/net.h"
#include "convnet/safetensors.h"
#include "convnet/solver.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh folder under the system temp folder, removed with everything in it at the end.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() / ("convnet_checkpoint_test_" + std::to_string(::getpid()) +
                                         "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

  // Names of the files left by interrupted saves.
  std::vector<std::string> temp_files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos)
        out.push_back(e.path().filename().string());
    return out;
  }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A safetensors file by hand: the length prefix (the header's own length unless given), the
// header text and `data_bytes` bytes of data.
std::string safetensors_bytes(const std::string& header, size_t data_bytes,
                              uint64_t length = std::numeric_limits<uint64_t>::max()) {
  if (length == std::numeric_limits<uint64_t>::max()) length = header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((length >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

// The message of the ValueError that opening `path` raises ("no error" if it opens).
std::string open_error(const std::string& path) {
  try {
    SafetensorsReader reader(path);
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no error";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  // (memcmp of an empty vector's null data is undefined, which UBSan reports)
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// ---- safetensors ----

TEST(Safetensors, RoundTripIsBitIdenticalWithMetadata) {
  ScratchDir dir;
  const std::string path = dir / "t.safetensors";
  std::map<std::string, std::vector<int64_t>> shapes = {{"b.matrix", {3, 5}},
                                                        {"a.conv", {4, 2, 3, 3}},
                                                        {"c.one", {1}},
                                                        {"d.empty", {2, 0}},
                                                        {"e.scalar", {}}};
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, SafetensorsSpan> spans;
  uint32_t seed = 1;
  for (const auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    values[name] = random_vector(size_t(n), seed++);
  }
  // Values whose bits a lossy path would change.
  values["b.matrix"][0] = -0.f;
  values["b.matrix"][1] = std::numeric_limits<float>::quiet_NaN();
  values["b.matrix"][2] = std::numeric_limits<float>::denorm_min();
  values["b.matrix"][3] = -std::numeric_limits<float>::infinity();
  for (const auto& [name, shape] : shapes) spans[name] = {shape, values[name].data()};
  const std::map<std::string, std::string> metadata = {{"k", "v"}, {"json", R"({"a": [1, 2]})"}};
  write_safetensors(path, spans, metadata);

  SafetensorsReader reader(path);
  EXPECT_EQ(reader.metadata(), metadata);
  ASSERT_EQ(reader.tensors().size(), shapes.size());
  for (const auto& [name, shape] : shapes) {
    EXPECT_EQ(reader.entry(name).shape, shape) << name;
    EXPECT_TRUE(bit_identical(reader.read(name), values[name])) << name;
  }
  EXPECT_TRUE(dir.temp_files().empty());
}

TEST(Safetensors, LayoutFollowsTheFormat) {
  ScratchDir dir;
  const std::string path = dir / "t.safetensors";
  std::vector<float> x = {1, 2, 3}, y = {4};
  write_safetensors(path, {{"zeta", {{3}, x.data()}}, {"alpha", {{1}, y.data()}}}, {{"m", "n"}});
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u) << "the header is padded to a multiple of 8";
  ASSERT_EQ(bytes.size(), 8 + n + 16);
  const json header = json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["__metadata__"], json({{"m", "n"}}));
  // Data in sorted name order: alpha first.
  EXPECT_EQ(header["alpha"]["data_offsets"], json({0, 4}));
  EXPECT_EQ(header["zeta"]["data_offsets"], json({4, 16}));
  EXPECT_EQ(header["zeta"]["dtype"], "F32");
  float first = 0;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  EXPECT_EQ(first, 4.f);
}

TEST(Safetensors, OverwritesAnExistingFile) {
  ScratchDir dir;
  const std::string path = dir / "t.safetensors";
  std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_safetensors(path, {{"x", {{2}, a.data()}}});
  write_safetensors(path, {{"x", {{3}, b.data()}}});
  SafetensorsReader reader(path);
  EXPECT_EQ(reader.read("x"), b);
  EXPECT_TRUE(dir.temp_files().empty());
}

TEST(Safetensors, MalformedFilesAreValueErrorsNamingTheFile) {
  ScratchDir dir;
  const std::string f32 = R"("dtype":"F32")";
  struct Case {
    const char* what;
    std::string bytes;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"shorter than the length", "abc", "too short"},
      {"length beyond the file", safetensors_bytes("{}      ", 0, 1000), "runs past the end"},
      {"bad JSON", safetensors_bytes("{not json", 0), "not valid JSON"},
      {"not an object", safetensors_bytes("[1, 2]", 0), "not a JSON object"},
      {"unknown dtype",
       safetensors_bytes(R"({"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4),
       "dtype F16 is not supported (only F32 is)"},
      {"no dtype", safetensors_bytes(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", 4), "no dtype"},
      {"bad shape",
       safetensors_bytes(R"({"x":{)" + f32 + R"(,"shape":[-1],"data_offsets":[0,4]}})", 4),
       "not a list of sizes"},
      {"bad offsets",
       safetensors_bytes(R"({"x":{)" + f32 + R"(,"shape":[1],"data_offsets":[0]}})", 4),
       "data_offsets must be [begin, end]"},
      {"offsets reversed",
       safetensors_bytes(R"({"x":{)" + f32 + R"(,"shape":[0],"data_offsets":[4,0]}})", 4),
       "end before they begin"},
      {"offsets not matching the shape",
       safetensors_bytes(R"({"x":{)" + f32 + R"(,"shape":[3],"data_offsets":[0,8]}})", 8),
       "needs 12"},
      {"offsets beyond the data",
       safetensors_bytes(R"({"x":{)" + f32 + R"(,"shape":[2],"data_offsets":[0,8]}})", 4),
       "truncated"},
      {"overlapping tensors",
       safetensors_bytes(R"({"a":{)" + f32 + R"(,"shape":[2],"data_offsets":[0,8]},"b":{)" + f32 +
                             R"(,"shape":[2],"data_offsets":[4,12]}})",
                         12),
       "tensors 'a' and 'b' overlap"},
      {"a gap", safetensors_bytes(R"({"x":{)" + f32 + R"(,"shape":[1],"data_offsets":[4,8]}})", 8),
       "belong to no tensor"},
      {"trailing bytes",
       safetensors_bytes(R"({"x":{)" + f32 + R"(,"shape":[1],"data_offsets":[0,4]}})", 12),
       "8 bytes after the last tensor"},
      {"metadata not strings", safetensors_bytes(R"({"__metadata__":{"step":3}})", 0),
       "metadata 'step' is not a string"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir / ("bad" + std::to_string(i) + ".safetensors");
    write_bytes(path, cases[i].bytes);
    const std::string message = open_error(path);
    EXPECT_TRUE(contains(message, "'" + path + "'")) << cases[i].what << ": " << message;
    EXPECT_TRUE(contains(message, cases[i].expected)) << cases[i].what << ": " << message;
  }
  EXPECT_TRUE(contains(open_error(dir / "missing.safetensors"), "missing.safetensors"));
}

TEST(Safetensors, WellFormedHandMadeFileReads) {
  // The same helper that makes the malformed files makes a good one: the checks above are not
  // artefacts of the helper.
  ScratchDir dir;
  const std::string path = dir / "good.safetensors";
  write_bytes(path,
              safetensors_bytes(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4));
  SafetensorsReader reader(path);
  std::vector<float> x = reader.read("x");
  uint32_t bits = 0;
  std::memcpy(&bits, x.data(), 4);
  EXPECT_EQ(bits, 0x01010101u);
}

TEST(Safetensors, TruncatedFileIsAValueErrorNamingIt) {
  ScratchDir dir;
  const std::string path = dir / "t.safetensors";
  std::vector<float> x = random_vector(100, 3);
  write_safetensors(path, {{"x", {{10, 10}, x.data()}}});
  fs::resize_file(path, fs::file_size(path) - 1);
  const std::string message = open_error(path);
  EXPECT_TRUE(contains(message, path)) << message;
  EXPECT_TRUE(contains(message, "truncated")) << message;
}

TEST(Safetensors, FailedWriteLeavesNoTemporaryFile) {
  ScratchDir dir;
  const std::string path = dir / "target";
  fs::create_directories(path + "/inside");  // a folder where the file should go: rename fails
  std::vector<float> x = {1};
  try {
    write_safetensors(path, {{"x", {{1}, x.data()}}});
    FAIL() << "no error writing over a folder";
  } catch (const RuntimeError& e) {
    EXPECT_TRUE(contains(e.what(), "'" + path + "'")) << e.what();
  }
  EXPECT_TRUE(dir.temp_files().empty());
  EXPECT_THROW(write_safetensors(dir / "no/such/folder/x", {{"x", {{1}, x.data()}}}), RuntimeError);
}

// ---- checkpoints ----

// conv -> pool -> dropout -> fc -> softmax: small, with parameters, momentum and dropout masks.
const char* kModel = R"([
  {"name":"data","type":"input","channels":2,"size":6},
  {"name":"labels","type":"labels"},
  {"name":"conv1","type":"conv","inputs":["data"],"filters":4,"size":3,"padding":1,"neuron":"relu","initW":0.3,"initB":0.1},
  {"name":"pool1","type":"pool","inputs":["conv1"],"size":2,"stride":2},
  {"name":"drop1","type":"dropout","inputs":["pool1"],"rate":0.5},
  {"name":"fc2","type":"fc","inputs":["drop1"],"outputs":3,"initW":0.3},
  {"name":"cost","type":"softmax_cost","inputs":["fc2","labels"]}
])";

ModelSpec spec_with(const std::string& from, const std::string& to) {
  std::string text = kModel;
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return ModelSpec::from_json(text.replace(at, from.size(), to));
}

// Batch number `index` of a fixed sequence of batches.
void feed(Net& net, int index, int batch = 5) {
  Tensor x({2, 6, 6, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), 100 + uint32_t(index)).data());
  net.set_input("data", x);
  std::vector<float> y(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) y[size_t(i)] = float((i + index) % 3);
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
}

void train(Net& net, int first_batch, int steps) {
  for (int i = 0; i < steps; ++i) {
    feed(net, first_batch + i);
    net.forward(true);
    net.backward();
    net.update();
  }
}

// Parameter name -> {value, velocity}.
std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> snapshot(Net& net) {
  std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> out;
  for (Param* p : net.params()) out[p->name] = {p->value.to_vector(), p->state_tensor("velocity").to_vector()};
  return out;
}

void expect_same_params(Net& a, Net& b) {
  const auto sa = snapshot(a), sb = snapshot(b);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, values] : sa) {
    EXPECT_TRUE(bit_identical(values.first, sb.at(name).first)) << name << " value";
    EXPECT_TRUE(bit_identical(values.second, sb.at(name).second)) << name << " velocity";
  }
}

std::string load_error(Net& net, const std::string& path) {
  try {
    load_checkpoint(net, path);
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Checkpoint, NameIsZeroPadded) {
  EXPECT_EQ(checkpoint_name(3, 42), "ckpt-e0003-b000042.safetensors");
  EXPECT_EQ(checkpoint_name(12345, 1234567), "ckpt-e12345-b1234567.safetensors");
  EXPECT_THROW(checkpoint_name(-1, 0), ValueError);
}

TEST(Checkpoint, RoundTripRestoresValuesVelocitiesStepAndState) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  const ModelSpec spec = ModelSpec::from_json(kModel);
  Net trained(spec, {}, 7);
  train(trained, 0, 3);
  const json state = {{"epoch", 2}, {"batch", 17}, {"lr_scale", 0.5}, {"history", {1.5, 1.25}}};
  save_checkpoint(trained, path, state);

  Net fresh(spec, {}, 12345);
  // The test can fail: the fresh net differs before loading, and momentum is non-zero.
  EXPECT_FALSE(bit_identical(fresh.param("conv1.weights").value.to_vector(),
                             trained.param("conv1.weights").value.to_vector()));
  for (Param* p : trained.params()) {
    const auto v = p->state_tensor("velocity").to_vector();
    EXPECT_TRUE(std::any_of(v.begin(), v.end(), [](float x) { return x != 0.f; })) << p->name;
  }
  EXPECT_EQ(load_checkpoint(fresh, path), state);
  EXPECT_EQ(fresh.step(), 3u);
  EXPECT_EQ(fresh.seed(), 7u);
  expect_same_params(fresh, trained);

  const CheckpointMeta meta = read_checkpoint_meta(path);
  EXPECT_EQ(meta.model_json, spec.to_json());
  EXPECT_EQ(meta.step, 3u);
  EXPECT_EQ(meta.seed, 7u);
  EXPECT_EQ(meta.state, state);
}

TEST(Checkpoint, TensorsAreNamedAfterTheParameters) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net net(ModelSpec::from_json(kModel));
  save_checkpoint(net, path);
  SafetensorsReader reader(path);
  std::set<std::string> names;
  for (const auto& [name, entry] : reader.tensors()) names.insert(name);
  EXPECT_EQ(names,
            std::set<std::string>({"conv1.weights", "conv1.biases", "fc2.weights", "fc2.biases",
                                   "conv1.weights.velocity", "conv1.biases.velocity",
                                   "fc2.weights.velocity", "fc2.biases.velocity"}));
  EXPECT_EQ(reader.metadata().at("convnet.format"), "1");
  EXPECT_EQ(reader.metadata().at("convnet.state"), "null");
}

TEST(Checkpoint, DifferentFilterCountNamesTheLayer) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net saved(ModelSpec::from_json(kModel));
  save_checkpoint(saved, path);
  Net other(spec_with(R"("filters":4)", R"("filters":8)"));
  const std::string message = load_error(other, path);
  EXPECT_TRUE(contains(message, "'" + path + "'")) << message;
  EXPECT_TRUE(contains(message, "layer 'conv1': filters is 4 in the checkpoint, 8 in this model"))
      << message;
}

TEST(Checkpoint, ExtraOrMissingLayerNamesTheLayer) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net saved(ModelSpec::from_json(kModel));
  save_checkpoint(saved, path);
  Net extra(spec_with(R"({"name":"cost","type":"softmax_cost","inputs":["fc2","labels"]})",
                      R"({"name":"fc3","type":"fc","inputs":["fc2"],"outputs":3},
                         {"name":"cost","type":"softmax_cost","inputs":["fc3","labels"]})"));
  std::string message = load_error(extra, path);
  EXPECT_TRUE(contains(message, "layer 'fc3' is in this model but not in the checkpoint"))
      << message;

  const std::string bigger = dir / "bigger.safetensors";
  save_checkpoint(extra, bigger);
  message = load_error(saved, bigger);
  EXPECT_TRUE(contains(message, "'" + bigger + "'")) << message;
  EXPECT_TRUE(contains(message, "layer 'cost': inputs are [\"fc3\",\"labels\"] in the checkpoint"))
      << message;
}

TEST(Checkpoint, LayerOnlyInTheCheckpointIsNamed) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net saved(spec_with(R"({"name":"cost")",
                      R"({"name":"spare","type":"neuron","inputs":["fc2"]},{"name":"cost")"));
  save_checkpoint(saved, path);
  Net net(ModelSpec::from_json(kModel));
  const std::string message = load_error(net, path);
  EXPECT_TRUE(contains(message, "layer 'spare' is in the checkpoint but not in this model"))
      << message;
}

TEST(Checkpoint, FailedLoadLeavesTheNetUnchanged) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net saved(ModelSpec::from_json(kModel), {}, 3);
  save_checkpoint(saved, path);
  Net other(spec_with(R"("rate":0.5)", R"("rate":0.25)"), {}, 4);
  const auto before = snapshot(other);
  const std::string message = load_error(other, path);
  EXPECT_TRUE(contains(message, "layer 'drop1': rate is 0.5 in the checkpoint, 0.25 in this model"))
      << message;
  EXPECT_EQ(snapshot(other), before);
  EXPECT_EQ(other.seed(), 4u);
  EXPECT_EQ(other.step(), 0u);
}

TEST(Checkpoint, ParameterShapeMismatchNamesTheParameter) {
  // A hand-edited checkpoint whose model matches but whose tensor does not.
  ScratchDir dir;
  const std::string path = dir / "c.safetensors", edited = dir / "edited.safetensors";
  Net net(ModelSpec::from_json(kModel));
  save_checkpoint(net, path);
  SafetensorsReader reader(path);
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, SafetensorsSpan> spans;
  for (const auto& [name, entry] : reader.tensors()) values[name] = reader.read(name);
  for (const auto& [name, entry] : reader.tensors())
    spans[name] = {entry.shape, values[name].data()};
  const Shape real = net.param("conv1.weights").value.shape();
  spans["conv1.weights"].shape = {int64_t(values["conv1.weights"].size())};
  write_safetensors(edited, spans, reader.metadata());

  std::string want = "parameter 'conv1.weights': shape " +
                     std::to_string(values["conv1.weights"].size()) + " in the checkpoint, ";
  for (size_t i = 0; i < real.size(); ++i) want += (i ? "x" : "") + std::to_string(real[i]);
  const std::string message = load_error(net, edited);
  EXPECT_TRUE(contains(message, want + " here")) << message << "\nwant: " << want;

  spans["conv1.weights"].shape = reader.entry("conv1.weights").shape;
  spans.erase("fc2.biases.velocity");
  write_safetensors(edited, spans, reader.metadata());
  const std::string missing = load_error(net, edited);
  EXPECT_TRUE(contains(missing, "parameter 'fc2.biases': its velocity is not in the checkpoint"))
      << missing;
}

TEST(Checkpoint, LearningHyperparametersAndDevicesMayDiffer) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net trained(ModelSpec::from_json(kModel), {}, 5);
  train(trained, 0, 2);
  save_checkpoint(trained, path);
  ModelSpec tuned = spec_with(
      R"("initW":0.3,"initB":0.1)",
      R"("initW":0.05,"init":"kaiming","epsW":0.001,"epsB":0.002,"momW":0.5,"momB":0.5,"wc":0.01,"wcB":0.001)");
  for (LayerSpec& l : tuned.layers)
    if (l.name == "fc2") l.device = 1;  // a second (CPU) device
  Net fine_tune(tuned, {Device::cpu(0), Device::cpu(1)}, 5);
  EXPECT_EQ(load_error(fine_tune, path), "no error");
  expect_same_params(fine_tune, trained);
  EXPECT_FLOAT_EQ(fine_tune.param("conv1.weights").lr, 0.001f);
}

TEST(Checkpoint, PlainSafetensorsFileIsNotACheckpoint) {
  ScratchDir dir;
  const std::string path = dir / "plain.safetensors";
  std::vector<float> x = {1};
  write_safetensors(path, {{"x", {{1}, x.data()}}});
  Net net(ModelSpec::from_json(kModel));
  const std::string message = load_error(net, path);
  EXPECT_TRUE(contains(message, "'" + path + "'")) << message;
  EXPECT_TRUE(contains(message, "not a convnet checkpoint")) << message;
  EXPECT_THROW(read_checkpoint_meta(path), ValueError);
}

TEST(Checkpoint, TruncatedCheckpointIsAValueErrorNamingIt) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net net(ModelSpec::from_json(kModel));
  save_checkpoint(net, path);
  fs::resize_file(path, fs::file_size(path) - 10);
  const std::string message = load_error(net, path);
  EXPECT_TRUE(contains(message, "'" + path + "'")) << message;
  EXPECT_TRUE(contains(message, "truncated")) << message;
  try {
    read_checkpoint_meta(path);
    FAIL() << "no error reading a truncated checkpoint's metadata";
  } catch (const ValueError& e) {
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
}

TEST(Checkpoint, InterruptedSaveKeepsThePreviousCheckpoint) {
  ScratchDir dir;
  const ModelSpec spec = ModelSpec::from_json(kModel);
  Net net(spec, {}, 9);
  train(net, 0, 1);
  const std::string first = save_checkpoint_in(net, dir.path().string(), 0, 1, {{"n", 1}}, 3);
  const auto saved = snapshot(net);
  train(net, 1, 1);
  // A folder where the next checkpoint should go: its rename fails after the data was written.
  const std::string blocked = dir / checkpoint_name(0, 2);
  fs::create_directories(fs::path(blocked) / "inside");
  try {
    save_checkpoint_in(net, dir.path().string(), 0, 2, {{"n", 2}}, 3);
    FAIL() << "no error saving over a folder";
  } catch (const RuntimeError& e) {
    EXPECT_TRUE(contains(e.what(), blocked)) << e.what();
  }
  EXPECT_TRUE(dir.temp_files().empty());
  EXPECT_EQ(latest_checkpoint(dir.path().string()), first);  // the folder is not a checkpoint
  Net restored(spec, {}, 9);
  EXPECT_EQ(load_checkpoint(restored, first), json({{"n", 1}}));
  EXPECT_EQ(snapshot(restored), saved);
}

TEST(Checkpoint, KeepsTheNewestK) {
  ScratchDir dir;
  const std::string d = dir.path().string();
  Net net(ModelSpec::from_json(kModel));
  for (int b = 1; b <= 5; ++b) save_checkpoint_in(net, d, 1, b * 100, {}, 2);
  EXPECT_EQ(list_checkpoints(d), std::vector<std::string>({dir / checkpoint_name(1, 400),
                                                           dir / checkpoint_name(1, 500)}));
  // The checkpoint just written is kept even when it is not the newest (a run resumed earlier).
  save_checkpoint_in(net, d, 0, 7, {}, 2);
  EXPECT_EQ(list_checkpoints(d),
            std::vector<std::string>({dir / checkpoint_name(0, 7), dir / checkpoint_name(1, 500)}));
  // keep <= 0 keeps everything.
  for (int b = 1; b <= 3; ++b) save_checkpoint_in(net, d, 2, b, {}, 0);
  EXPECT_EQ(list_checkpoints(d).size(), 5u);
}

TEST(Checkpoint, ListingIsNumericAndIgnoresOtherFiles) {
  ScratchDir dir;
  const std::string d = dir.path().string();
  EXPECT_EQ(latest_checkpoint(d), "");
  EXPECT_EQ(latest_checkpoint(dir / "missing"), "");
  Net net(ModelSpec::from_json(kModel));
  save_checkpoint_in(net, d, 9999, 999999, {}, 0);
  save_checkpoint_in(net, d, 2, 5, {}, 0);
  save_checkpoint_in(net, d, 10000, 1, {}, 0);  // past the padding: still newest
  write_bytes(dir / (checkpoint_name(20000, 0) + ".tmp.1234"), "partial");
  write_bytes(dir / "notes.txt", "x");
  write_bytes(dir / "ckpt-e1-b2.safetensors.bak", "x");
  EXPECT_EQ(list_checkpoints(d), std::vector<std::string>({dir / checkpoint_name(2, 5),
                                                           dir / checkpoint_name(9999, 999999),
                                                           dir / checkpoint_name(10000, 1)}));
  EXPECT_EQ(latest_checkpoint(d), dir / checkpoint_name(10000, 1));
  // save_checkpoint_in creates the folder.
  EXPECT_EQ(save_checkpoint_in(net, dir / "new/run", 0, 0, {}, 1),
            dir / ("new/run/" + checkpoint_name(0, 0)));
}

TEST(Checkpoint, ResumedTrainingIsBitIdentical) {
  const ModelSpec spec = ModelSpec::from_json(kModel);
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net straight(spec, {}, 7);
  train(straight, 0, 6);

  Net first_half(spec, {}, 7);
  train(first_half, 0, 3);
  save_checkpoint(first_half, path);

  // Another seed than the saved net's: the dropout masks are keyed by the seed, so loading
  // must restore it along with the step.
  Net resumed(spec, {}, 99);
  load_checkpoint(resumed, path);
  EXPECT_EQ(resumed.seed(), 7u);
  EXPECT_EQ(resumed.step(), 3u);
  train(resumed, 3, 3);
  EXPECT_EQ(resumed.step(), 6u);
  expect_same_params(resumed, straight);

  // The same resume under another seed diverges: the seed (and so this test) matters.
  Net other_seed(spec, {}, 7);
  load_checkpoint(other_seed, path);
  other_seed.set_seed(8);
  train(other_seed, 3, 3);
  EXPECT_NE(snapshot(other_seed), snapshot(straight));
}


// ---- solvers in checkpoints ----

// Every tensor of the net a checkpoint holds, by its name there: values and solver state.
std::map<std::string, std::vector<float>> all_tensors(Net& net) {
  std::map<std::string, std::vector<float>> out;
  for (Param* p : net.params()) {
    out[p->name] = p->value.to_vector();
    for (auto& [state, t] : p->state) out[p->name + "." + state] = t.to_vector();
  }
  return out;
}

void expect_bitwise_equal(Net& a, Net& b) {
  const auto ta = all_tensors(a), tb = all_tensors(b);
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, values] : ta) {
    ASSERT_TRUE(tb.count(name)) << name;
    EXPECT_TRUE(bit_identical(values, tb.at(name))) << name;
  }
}

TEST(CheckpointSolvers, ResumedTrainingIsBitIdenticalForEverySolver) {
  const ModelSpec spec = ModelSpec::from_json(kModel);
  for (const std::string& name : solver_names()) {
    SCOPED_TRACE(name);
    const SolverOptions solver{name, 0.8, 0.99, 1e-7};  // betas and eps are used by adamw only
    ScratchDir dir;
    const std::string path = dir / "c.safetensors";
    Net straight(spec, {}, 7);
    straight.set_solver(solver);
    train(straight, 0, 6);

    Net first_half(spec, {}, 7);
    first_half.set_solver(solver);
    train(first_half, 0, 3);
    save_checkpoint(first_half, path);

    Net resumed(spec, {}, 99);
    resumed.set_solver(solver);
    load_checkpoint(resumed, path);
    EXPECT_EQ(resumed.solver().step(), 3u);
    train(resumed, 3, 3);
    EXPECT_EQ(resumed.solver().step(), 6u);
    expect_bitwise_equal(resumed, straight);
  }
}

TEST(CheckpointSolvers, ForgettingTheStateChangesTheResult) {
  // Guards the test above: a resume that dropped the solver state (or AdamW's counter) would
  // not match the uninterrupted run.
  const ModelSpec spec = ModelSpec::from_json(kModel);
  for (const std::string& name : {"nesterov", "adamw"}) {
    SCOPED_TRACE(name);
    Net straight(spec, {}, 7), resumed(spec, {}, 7);
    straight.set_solver(SolverOptions{name});
    resumed.set_solver(SolverOptions{name});
    train(straight, 0, 6);
    train(resumed, 0, 3);
    const uint64_t t = resumed.solver().step();
    resumed.set_solver(SolverOptions{"sgd"});  // drops the state...
    resumed.set_solver(SolverOptions{name});
    resumed.solver().set_step(t);  // ...but keeps the counter
    train(resumed, 3, 3);
    EXPECT_NE(all_tensors(resumed), all_tensors(straight));
  }
}

TEST(CheckpointSolvers, AdamWStateAndSolverAreSaved) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net net(ModelSpec::from_json(kModel), {}, 3);
  net.set_solver(SolverOptions{"adamw", 0.85, 0.995, 1e-6});
  train(net, 0, 2);
  save_checkpoint(net, path);
  SafetensorsReader reader(path);
  std::set<std::string> names;
  for (const auto& [name, entry] : reader.tensors()) names.insert(name);
  std::set<std::string> want;
  for (const char* p : {"conv1.weights", "conv1.biases", "fc2.weights", "fc2.biases"})
    for (const char* suffix : {"", ".m", ".v"}) want.insert(std::string(p) + suffix);
  EXPECT_EQ(names, want);
  const json solver = json::parse(reader.metadata().at("convnet.solver"));
  EXPECT_EQ(solver, json({{"name", "adamw"}, {"beta1", 0.85}, {"beta2", 0.995}, {"eps", 1e-6},
                          {"step", 2}}));
  const CheckpointMeta meta = read_checkpoint_meta(path);
  EXPECT_EQ(meta.solver.name, "adamw");
  EXPECT_EQ(meta.solver.beta1, 0.85);
  EXPECT_EQ(meta.solver_step, 2u);
}

TEST(CheckpointSolvers, AnotherSolverIsRefusedNamingBoth) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net adam(ModelSpec::from_json(kModel), {}, 3);
  adam.set_solver(SolverOptions{"adamw"});
  train(adam, 0, 2);
  save_checkpoint(adam, path);
  Net sgd(ModelSpec::from_json(kModel), {}, 4);
  const auto before = all_tensors(sgd);
  const std::string message = load_error(sgd, path);
  EXPECT_TRUE(contains(message, "checkpoint '" + path + "': saved by solver 'adamw', but this "
                                "net's solver is 'sgd'")) << message;
  EXPECT_EQ(all_tensors(sgd), before);  // unchanged
  EXPECT_EQ(sgd.step(), 0u);
}

TEST(CheckpointSolvers, OldCheckpointsWithoutSolverLoadAsSgd) {
  // A checkpoint as written before solvers were chosen: velocity tensors, no convnet.solver.
  ScratchDir dir;
  const std::string path = dir / "c.safetensors", old = dir / "old.safetensors";
  Net trained(ModelSpec::from_json(kModel), {}, 7);
  train(trained, 0, 3);
  save_checkpoint(trained, path);
  SafetensorsReader reader(path);
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, SafetensorsSpan> spans;
  for (const auto& [name, entry] : reader.tensors()) values[name] = reader.read(name);
  for (const auto& [name, entry] : reader.tensors()) spans[name] = {entry.shape, values[name].data()};
  auto metadata = reader.metadata();
  ASSERT_EQ(metadata.erase("convnet.solver"), 1u);
  write_safetensors(old, spans, metadata);

  EXPECT_EQ(read_checkpoint_meta(old).solver.name, "sgd");
  Net fresh(ModelSpec::from_json(kModel), {}, 1);
  load_checkpoint(fresh, old);
  expect_bitwise_equal(fresh, trained);
  EXPECT_EQ(fresh.solver().step(), 3u);  // SGD's counter is the net's step
  Net adam(ModelSpec::from_json(kModel), {}, 1);
  adam.set_solver(SolverOptions{"adamw"});
  EXPECT_TRUE(contains(load_error(adam, old), "saved by solver 'sgd'"));
}


// ---- integrity: checksum, non-finite values, damaged files in a run's folder ----

// A copy of checkpoint `from` written to `to` with its tensors changed by `edit` and metadata
// key `drop` removed (as a file from before the checksum, or a hand-edited one).
void rewrite_checkpoint(const std::string& from, const std::string& to,
                        const std::function<void(std::map<std::string, std::vector<float>>&)>& edit,
                        const std::string& drop) {
  SafetensorsReader reader(from);
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, SafetensorsSpan> spans;
  for (const auto& [name, entry] : reader.tensors()) values[name] = reader.read(name);
  edit(values);
  for (const auto& [name, entry] : reader.tensors()) spans[name] = {entry.shape, values[name].data()};
  auto metadata = reader.metadata();
  metadata.erase(drop);
  write_safetensors(to, spans, metadata);
}

// Flips one bit of byte `from_end` bytes before the end of the file (in the last tensor's data).
void flip_bit(const std::string& path, size_t from_end = 3) {
  std::string bytes = read_bytes(path);
  bytes[bytes.size() - from_end] ^= 0x10;
  write_bytes(path, bytes);
}

TEST(CheckpointIntegrity, AFlippedBitIsRefusedAndTheNetKeepsItsValues) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net trained(ModelSpec::from_json(kModel), {}, 7);
  train(trained, 0, 2);
  save_checkpoint(trained, path);
  EXPECT_EQ(read_checkpoint_meta(path).step, 2u);
  EXPECT_NO_THROW(verify_checkpoint(path));
  flip_bit(path);
  Net net(ModelSpec::from_json(kModel), {}, 3);
  const auto before = snapshot(net);
  const std::string message = load_error(net, path);
  EXPECT_TRUE(contains(message, "checkpoint '" + path + "': corrupt")) << message;
  EXPECT_TRUE(contains(message, "checksum")) << message;
  EXPECT_EQ(snapshot(net), before);
  EXPECT_THROW(verify_checkpoint(path), ValueError);
}

TEST(CheckpointIntegrity, SavingANonFiniteValueIsRefusedNamingTheTensor) {
  ScratchDir dir;
  const std::string path = dir / "c.safetensors";
  Net net(ModelSpec::from_json(kModel), {}, 7);
  save_checkpoint(net, path);
  const std::string good = read_bytes(path);
  Param* fc = nullptr;
  for (Param* p : net.params())
    if (p->name == "fc2.weights") fc = p;
  ASSERT_NE(fc, nullptr);
  std::vector<float> w = fc->value.to_vector();
  w[5] = std::numeric_limits<float>::quiet_NaN();
  fc->value.copy_from_host(w.data());
  try {
    save_checkpoint(net, path);
    FAIL() << "a NaN weight was saved";
  } catch (const RuntimeError& e) {
    EXPECT_TRUE(contains(e.what(), "not saving '" + path + "': tensor 'fc2.weights' holds nan at index 5"))
        << e.what();
  }
  EXPECT_EQ(read_bytes(path), good);  // the previous file stands
  EXPECT_TRUE(dir.temp_files().empty());
}

TEST(CheckpointIntegrity, LoadingANonFiniteValueIsRefusedNamingTheTensor) {
  // Written without a checksum (as before checksums, or by another tool), so only the values
  // can tell.
  ScratchDir dir;
  const std::string good = dir / "good.safetensors", bad = dir / "bad.safetensors";
  Net trained(ModelSpec::from_json(kModel), {}, 7);
  save_checkpoint(trained, good);
  rewrite_checkpoint(good, bad, [](auto& v) { v.at("conv1.weights.velocity")[3] = INFINITY; },
                     "convnet.checksum");
  Net net(ModelSpec::from_json(kModel), {}, 3);
  const auto before = snapshot(net);
  const std::string message = load_error(net, bad);
  EXPECT_TRUE(contains(message, "checkpoint '" + bad + "': tensor 'conv1.weights.velocity' holds inf at index 3"))
      << message;
  EXPECT_EQ(snapshot(net), before);
  // Without the checksum, a file with finite values still loads (older checkpoints).
  const std::string old = dir / "old.safetensors";
  rewrite_checkpoint(good, old, [](auto&) {}, "convnet.checksum");
  load_checkpoint(net, old);
  expect_same_params(net, trained);
}

TEST(CheckpointIntegrity, ResumeFallsBackToTheNewestIntactCheckpoint) {
  ScratchDir dir;
  const std::string d = dir.path().string();
  Net net(ModelSpec::from_json(kModel), {}, 7);
  for (int b = 1; b <= 3; ++b) {
    train(net, b, 1);
    save_checkpoint_in(net, d, 0, b, {}, 0);
  }
  const std::string newest = dir / checkpoint_name(0, 3), middle = dir / checkpoint_name(0, 2);
  flip_bit(newest);
  std::vector<std::string> notes;
  EXPECT_EQ(newest_intact_checkpoint(d, notes), middle);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_TRUE(contains(notes[0], "not resuming from '" + newest + "'")) << notes[0];
  EXPECT_TRUE(contains(notes[0], "checksum")) << notes[0];
  EXPECT_TRUE(contains(notes[0], "renamed to '" + newest + ".corrupt'")) << notes[0];
  EXPECT_TRUE(fs::exists(newest + ".corrupt"));  // kept for a look, no longer listed
  EXPECT_EQ(latest_checkpoint(d), middle);
  // Without set_aside (ranks other than 0) the file stays where it is.
  flip_bit(middle);
  notes.clear();
  EXPECT_EQ(newest_intact_checkpoint(d, notes, false), dir / checkpoint_name(0, 1));
  EXPECT_TRUE(fs::exists(middle));
  // None intact: an error with each file's reason.
  flip_bit(dir / checkpoint_name(0, 1));
  notes.clear();
  try {
    newest_intact_checkpoint(d, notes);
    FAIL() << "damaged checkpoints were accepted";
  } catch (const ValueError& e) {
    EXPECT_TRUE(contains(e.what(), "no intact checkpoint in '" + d + "'")) << e.what();
    EXPECT_TRUE(contains(e.what(), checkpoint_name(0, 1))) << e.what();
    EXPECT_TRUE(contains(e.what(), checkpoint_name(0, 2))) << e.what();
  }
  std::vector<std::string> none;
  EXPECT_EQ(newest_intact_checkpoint(dir / "empty", none), "");
}

TEST(CheckpointIntegrity, TemporaryFilesOfKilledSavesAreRemoved) {
  ScratchDir dir;
  const std::string d = dir.path().string();
  // A process that has exited: its pid names no running process (until reused, which a test
  // this short does not meet).
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  const std::string dead = dir / (checkpoint_name(0, 1) + ".tmp." + std::to_string(child));
  const std::string mine = dir / (checkpoint_name(0, 2) + ".tmp." + std::to_string(::getpid()));
  const std::string parent = dir / (checkpoint_name(0, 3) + ".tmp." + std::to_string(::getppid()));
  const std::string other = dir / "notes.tmp.1";
  for (const std::string& f : {dead, mine, parent, other}) write_bytes(f, "partial");
  EXPECT_EQ(remove_stale_temporaries(d), std::vector<std::string>({dead}));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(mine) && fs::exists(parent) && fs::exists(other));
  // A save in the folder clears them too.
  write_bytes(dead, "partial");
  Net net(ModelSpec::from_json(kModel));
  save_checkpoint_in(net, d, 0, 4, {}, 0);
  EXPECT_FALSE(fs::exists(dead));
}

}  // namespace
}  // namespace convnet::testing
