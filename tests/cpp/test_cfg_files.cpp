// cuda-convnet2's model files: the twelve real ones (tests/data/cuda-convnet2) read with the
// shapes and parameter counts cuda-convnet2 computes, each key's mapping, round trips through
// the writer, and malformed files named by file, section and key.
#include <cmath>
#include <fstream>
#include <sstream>

#include "convnet/cuda_convnet_cfg.h"
#include "convnet/error.h"
#include "convnet/layer_type.h"
#include "convnet/net.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

// The text contains the part (the message says both when it does not).
#define EXPECT_HAS(text, part)                                                       \
  do {                                                                               \
    const std::string text_ = (text), part_ = (part);                               \
    EXPECT_NE(text_.find(part_), std::string::npos) << "'" << text_ << "' lacks '" << part_ << "'"; \
  } while (0)

std::string data_file(const std::string& name) {
  return std::string(CONVNET_SOURCE_DIR) + "/tests/data/cuda-convnet2/" + name;
}

ModelSpec read_pair(const std::string& model, int size) {
  return read_cuda_convnet_cfg(data_file("layers-" + model + ".cfg"),
                               data_file("layer-params-" + model + ".cfg"), size);
}

std::vector<Device> cpus(const ModelSpec& spec) {
  return std::vector<Device>(size_t(spec.logical_devices()), Device::cpu());
}

const LayerSpec& layer(const ModelSpec& spec, const std::string& name) {
  for (const LayerSpec& l : spec.layers)
    if (l.name == name) return l;
  throw std::runtime_error("no layer " + name);
}

bool types_exist(std::initializer_list<const char*> types) {
  for (const char* t : types)
    if (!find_layer_type(t)) return false;
  return true;
}

TEST(CfgFiles, ParamsFileNameFollowsTheLayersFile) {
  EXPECT_EQ(cuda_convnet_params_path("/a/layers-imagenet-1gpu.cfg"), "/a/layer-params-imagenet-1gpu.cfg");
  EXPECT_EQ(cuda_convnet_params_path("model.cfg"), "");
  EXPECT_TRUE(is_cuda_convnet_cfg("x/layers-a.cfg"));
  EXPECT_FALSE(is_cuda_convnet_cfg("x/a.json"));
}

// The paper's two-GPU model: 60,965,224 parameters, cuda-convnet2's rounded-up sizes.
TEST(CfgFiles, TwoGpuModelIsThePapersNet) {
  if (!types_exist({"rnorm"})) GTEST_SKIP() << "the rnorm layer type is not built in";
  const ModelSpec spec = read_pair("imagenet-2gpu-model", 224);
  Net net(spec, cpus(spec));
  EXPECT_EQ(net.parameter_count(), 60965224);
  EXPECT_EQ(net.output_shape("conv1a"), Shape({48, 55, 55, 1}));  // 1 + ceil((224 - 11) / 4)
  EXPECT_EQ(net.output_shape("pool1a_neuron"), Shape({48, 27, 27, 1}));
  EXPECT_EQ(net.output_shape("pool2b"), Shape({128, 13, 13, 1}));
  EXPECT_EQ(net.output_shape("pool3a_neuron"), Shape({128, 6, 6, 1}));
  EXPECT_EQ(net.output_shape("logprob"), Shape({1000, 1, 1, 1}));
  // Two inputs of conv3a join; its consumers read the detached neurons.
  EXPECT_EQ(net.layer("conv3a").inputs(), std::vector<std::string>({"pool2a", "pool2b"}));
  EXPECT_EQ(net.layer("conv2a").inputs(), std::vector<std::string>({"pool1a_neuron"}));
  EXPECT_EQ(net.layer("fc2048bb").inputs(), std::vector<std::string>({"dropout1b", "dropout1a"}));
  EXPECT_EQ(layer(spec, "conv1b").device, 1);
  EXPECT_EQ(layer(spec, "conv4b").device, 1);  // no gpu=: its input's
}

TEST(CfgFiles, EveryImagenetFileBuildsWithItsParameterCount) {
  // conv1..5 + fc of each file, counted by hand from the files' filters and outputs.
  const std::vector<std::pair<std::string, int64_t>> files = {
      {"imagenet-1gpu", 0}, {"imagenet-2gpu-data", 0}, {"imagenet-4gpu-data", 0}, {"imagenet-4gpu-data-model", 0}};
  for (const auto& [name, unused] : files) {
    SCOPED_TRACE(name);
    const ModelSpec spec = read_pair(name, 224);
    Net net(spec, cpus(spec));
    // conv1 64x3x11x11, conv2 192x64x5x5, conv3 384x192x3x3, conv4 256x384x3x3, conv5 256x256x3x3,
    // pool3 6x6x256 = 9216 into the fc layers.
    const int64_t convs = (64 * 3 * 121 + 64) + (192 * 64 * 25 + 192) + (384 * 192 * 9 + 384) +
                          (256 * 384 * 9 + 256) + (256 * 256 * 9 + 256);
    const int64_t fcs = name == "imagenet-4gpu-data-model"
                            ? 4 * (9216 * 1024 + 1024) + 4 * (4096 * 1024 + 1024) + (4096 * 1000 + 1000)
                            : (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000);
    EXPECT_EQ(net.parameter_count(), convs + fcs);
    const Shape conv1 = net.output_shape("conv1");  // the batch is the replicas' count
    EXPECT_EQ(Shape(conv1.begin(), conv1.begin() + 3), Shape({64, 55, 55}));
  }
}

TEST(CfgFiles, CifarFileHasLocalLayersWithUnsharedWeights) {
  if (!types_exist({"local"})) GTEST_SKIP() << "the local layer type is not built in";
  const ModelSpec spec = read_pair("cifar10-11pct", 24);
  Net net(spec, cpus(spec));
  EXPECT_EQ(net.output_shape("pool1"), Shape({64, 12, 12, 1}));  // 1 + ceil((24 - 3) / 2)
  EXPECT_EQ(net.output_shape("pool2"), Shape({64, 6, 6, 1}));
  EXPECT_EQ(net.output_shape("local3"), Shape({64, 6, 6, 1}));
  const int64_t expected = (64 * 3 * 25 + 64) + (64 * 64 * 25 + 64) + (36 * 64 * 64 * 9 + 36 * 64) +
                           (36 * 32 * 64 * 9 + 36 * 32) + (6 * 6 * 32 * 10 + 10);
  EXPECT_EQ(net.parameter_count(), expected);
}

TEST(CfgFiles, KeysMapOntoConvnetOptions) {
  const ModelSpec spec = read_pair("imagenet-2gpu-data", 224);
  const nlohmann::json& conv1 = layer(spec, "conv1").options.values();
  EXPECT_EQ(conv1.at("size"), 11);
  EXPECT_EQ(conv1.at("stride"), 4);
  EXPECT_EQ(conv1.at("ceil"), true);
  EXPECT_EQ(conv1.at("initW"), 0.01);
  EXPECT_EQ(conv1.at("wc"), 0.0005);
  EXPECT_EQ(conv1.at("wcB"), 0.0);
  // epsW=dexp[base=0.04;tgtFactor=250;numSteps=4]: the base is the rate, the rest its schedule.
  EXPECT_EQ(conv1.at("epsW"), 0.02);
  EXPECT_EQ(conv1.at("scheduleW"), "dexp[tgtFactor=250;numSteps=4]");
  EXPECT_EQ(layer(spec, "data").options.values().at("channels"), 3);  // from conv1's channels=
  EXPECT_EQ(layer(spec, "data").options.values().at("size"), 224);
  EXPECT_EQ(layer(spec, "labvec").type, "labels");
  EXPECT_EQ(layer(spec, "conv1").replicas, std::vector<int>({0, 1}));
  // cmrnorm: scale 0.0001 over size 5 -> alpha 2e-5; minDiv -> k; pow -> beta.
  const nlohmann::json& rnorm1 = layer(spec, "rnorm1").options.values();
  EXPECT_EQ(layer(spec, "rnorm1").type, "lrn");
  EXPECT_DOUBLE_EQ(rnorm1.at("alpha").get<double>(), 0.0001 / 5);
  EXPECT_EQ(rnorm1.at("k"), 2.0);
  EXPECT_EQ(rnorm1.at("beta"), 0.75);
  // dropout2: the paper's rule (unscaled in training, times keep at test).
  EXPECT_EQ(layer(spec, "dropout1").type, "dropout");
  EXPECT_EQ(layer(spec, "dropout1").options.values().at("inverted"), false);
  EXPECT_EQ(layer(spec, "dropout1").options.values().at("rate"), 0.5);
  // softmax + cost.logreg: one softmax_cost named after the cost, reading the softmax's input.
  EXPECT_EQ(layer(spec, "logprob").type, "softmax_cost");
  EXPECT_EQ(layer(spec, "logprob").inputs, std::vector<std::string>({"fc1000", "labvec"}));
  for (const LayerSpec& l : spec.layers) EXPECT_NE(l.name, "probs");
  // pool with neuron=relu: a neuron layer after it, named as cuda-convnet2 names it.
  EXPECT_EQ(layer(spec, "pool1_neuron").type, "neuron");
  EXPECT_EQ(layer(spec, "pool1_neuron").inputs, std::vector<std::string>({"pool1"}));
  EXPECT_EQ(layer(spec, "conv2").inputs, std::vector<std::string>({"pool1_neuron"}));
}

// A model as the writer writes it and the reader reads it back.
ModelSpec round_trip(const ModelSpec& spec, int size) {
  const CudaConvnetCfg cfg = write_cuda_convnet_cfg(spec);
  return parse_cuda_convnet_cfg(cfg.layers, cfg.params, size);
}

// Two nets compute the same thing: the same layers, inputs, devices and shapes, and with the
// first's weights copied into the second the same outputs on the same batch (test mode).
void expect_same_net(const ModelSpec& a_spec, const ModelSpec& b_spec, int channels, int size) {
  Net a(a_spec, cpus(a_spec)), b(b_spec, cpus(b_spec));
  ASSERT_EQ(a.layers().size(), b.layers().size());
  for (size_t i = 0; i < a.layers().size(); ++i) {
    const Layer& la = *a.layers()[i];
    const Layer& lb = b.layer(la.name());
    EXPECT_EQ(la.inputs(), lb.inputs()) << la.name();
    EXPECT_EQ(a.output_shape(la.name()), b.output_shape(la.name())) << la.name();
  }
  ASSERT_EQ(a.params().size(), b.params().size());
  for (size_t i = 0; i < a.params().size(); ++i) {
    ASSERT_EQ(a.params()[i]->name, b.params()[i]->name);
    ASSERT_EQ(a.params()[i]->value.shape(), b.params()[i]->value.shape());
    EXPECT_EQ(a.params()[i]->lr, b.params()[i]->lr) << a.params()[i]->name;
    EXPECT_EQ(a.params()[i]->momentum, b.params()[i]->momentum) << a.params()[i]->name;
    EXPECT_EQ(a.params()[i]->weight_decay, b.params()[i]->weight_decay) << a.params()[i]->name;
    EXPECT_EQ(a.params()[i]->schedule, b.params()[i]->schedule) << a.params()[i]->name;
    b.params()[i]->value.copy_from(a.params()[i]->value);
  }
  const int n = 4;
  std::string input, labels;
  for (const Layer* l : a.layers()) {
    if (l->role() == LayerRole::Input) input = l->name();
    if (l->role() == LayerRole::Labels) labels = l->name();
  }
  Tensor x({channels, size, size, n}, Device::cpu()), y({1, 1, 1, n}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), 7, 0.f, 255.f).data());
  const std::vector<float> classes = {0, 1, 2, 3};
  y.copy_from_host(classes.data());
  for (Net* net : {&a, &b}) {
    net->set_input(input, x);
    net->set_input(labels, y);
  }
  const CostReport ra = a.forward(false), rb = b.forward(false);
  for (const Layer* l : a.layers()) {
    if (l->role() == LayerRole::Labels) continue;
    EXPECT_EQ(a.output(l->name()).to_vector(), b.output(l->name()).to_vector()) << l->name();
  }
  ASSERT_EQ(ra.costs.size(), rb.costs.size());
  for (size_t i = 0; i < ra.costs.size(); ++i) EXPECT_EQ(ra.costs[i].cost, rb.costs[i].cost);
}

TEST(CfgFiles, OurModelsRoundTripToTheSameNet) {
  for (const char* name : {"alexnet_2012.json", "fashion_alexnet.json", "small_convnet.json"}) {
    SCOPED_TRACE(name);
    const ModelSpec spec = ModelSpec::from_file(std::string(CONVNET_SOURCE_DIR) + "/configs/" + name);
    const int size = spec.layers[0].options.values().at("size").get<int>();
    const int channels = spec.layers[0].options.values().at("channels").get<int>();
    const ModelSpec back = round_trip(spec, size);
    expect_same_net(spec, back, channels, size);
    // Written again, the file is the same: the reader and the writer agree on every key.
    EXPECT_EQ(write_cuda_convnet_cfg(back).layers, write_cuda_convnet_cfg(spec).layers);
    EXPECT_EQ(write_cuda_convnet_cfg(back).params, write_cuda_convnet_cfg(spec).params);
  }
}

TEST(CfgFiles, TheirFilesRoundTripToTheSameNet) {
  for (const char* name : {"imagenet-2gpu-data", "imagenet-4gpu-data-model", "imagenet-2gpu-model", "cifar10-11pct"}) {
    SCOPED_TRACE(name);
    const bool cifar = std::string(name) == "cifar10-11pct";
    if (!types_exist({"local", "rnorm"})) GTEST_SKIP() << "the local and rnorm layer types are not built in";
    const int size = cifar ? 24 : 99;  // small images: the same layers, quicker
    const ModelSpec spec = read_pair(name, size);
    const ModelSpec back = round_trip(spec, size);
    EXPECT_EQ(back.to_json(), round_trip(back, size).to_json());  // a fixed point after one trip
    if (std::string(name) == "imagenet-4gpu-data-model") continue;  // its fc layers are 2gpu-data's, in four
    expect_same_net(spec, back, 3, size);
  }
}

// ---- malformed files: the error names the file, the section and the key ----

const char* kLayers = R"([data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[conv1]
type=conv
inputs=data
channels=3
filters=16
padding=2
stride=1
filterSize=5
initW=0.01
sumWidth=4
neuron=relu

[fc10]
type=fc
inputs=conv1
outputs=10
initW=0.01

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
)";

const char* kParams = R"([conv1]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=0.004

[fc10]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9

[logprob]
coeff=1
)";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  if (at == std::string::npos) throw std::runtime_error("no '" + from + "' in the test's file");
  return text.replace(at, from.size(), to);
}

std::string error_of(const std::string& layers, const std::string& params = kParams, int size = 8) {
  try {
    Net net(parse_cuda_convnet_cfg(layers, params, size, "layers-t.cfg", "layer-params-t.cfg"));
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no error";
}

TEST(CfgFileErrors, TheSmallFileReads) {
  EXPECT_EQ(error_of(kLayers), "no error");
  const ModelSpec spec = parse_cuda_convnet_cfg(kLayers, kParams, 8);
  EXPECT_EQ(layer(spec, "conv1").options.values().at("wc"), 0.004);
  EXPECT_EQ(layer(spec, "fc10").options.values().at("wc"), 0.0);  // cuda-convnet2's default
}

TEST(CfgFileErrors, UnknownKeyNamesFileSectionAndKey) {
  EXPECT_HAS(error_of(replace(kLayers, "sumWidth=4", "sumWidht=4")),
              ("layers-t.cfg:18: section [conv1], key 'sumWidht': not a key"));
  EXPECT_HAS(error_of(kLayers, replace(kParams, "wc=0.004", "wcc=0.004")),
              ("layer-params-t.cfg:6: section [conv1], key 'wcc'"));
}

TEST(CfgFileErrors, UnknownTypeAndNeuron) {
  EXPECT_HAS(error_of(replace(kLayers, "type=fc", "type=fcc")),
              ("section [fc10], key 'type': unknown or unsupported layer type 'fcc'"));
  EXPECT_HAS(error_of(replace(kLayers, "neuron=relu", "neuron=brelu[5]")),
              ("section [conv1], key 'neuron': 'brelu[5]' has no convnet equivalent"));
}

TEST(CfgFileErrors, MissingSectionAndCycle) {
  EXPECT_HAS(error_of(replace(kLayers, "inputs=conv1", "inputs=conv9")),
              ("section [fc10], key 'inputs': 'conv9' is not a layer of the file"));
  // conv1 reading fc10, which reads conv1: an input below its reader.
  EXPECT_HAS(error_of(replace(kLayers, "inputs=data\nchannels=3", "inputs=fc10\nchannels=3")),
              ("section [conv1], key 'inputs': 'fc10' is defined below this layer"));
  EXPECT_HAS(error_of(kLayers, std::string(kParams) + "\n[conv2]\nepsW=1\n"),
              ("layer-params-t.cfg:17: section [conv2] names no layer of layers-t.cfg"));
}

TEST(CfgFileErrors, ListsOfTheWrongLengthAndValues) {
  EXPECT_HAS(error_of(replace(kLayers, "initW=0.01\nsumWidth", "initW=0.01,0.02\nsumWidth")),
              ("key 'initW': a list of 2 values for 1 inputs"));
  EXPECT_HAS(error_of(replace(kLayers, "[fc10]\ntype=fc\ninputs=conv1",
                             "[pool1]\ntype=pool\ninputs=conv1\nchannels=8\npool=max\nsizeX=2\nstride=2\n\n"
                             "[fc10]\ntype=fc\ninputs=pool1")),
             ("section [pool1], key 'channels': says 8 for input 'conv1', which has 16 channels"));
  EXPECT_HAS(error_of(kLayers, replace(kParams, "epsW=0.001\nepsB=0.002\nmomW=0.9\nmomB=0.9\nwc=0.004", "epsB=0.002\nmomW=0.9\nmomB=0.9\nwc=0.004")),
              ("section [conv1], key 'epsW': missing"));
  EXPECT_HAS(error_of(kLayers, replace(kParams, "epsW=0.001", "epsW=dexp[base=0.1;tgtFactor=10;steps=4]")),
              ("key 'epsW': 'steps' is not a parameter of dexp schedules"));
  EXPECT_HAS(error_of(kLayers, replace(kParams, "wc=0.004", "wc=0.004\nwball=0.1")),
              ("key 'wball': cuda-convnet2's weight-ball term has no convnet equivalent"));
  EXPECT_HAS(error_of(replace(kLayers, "padding=2", "padding=x")),
              ("key 'padding': 'x' is not an integer"));
}

// int(strtol) wrapped 4294967300 filters to 4; the model's one range check (option_int) now
// names the file, line and key. filters times groups is checked too: each alone is in range.
TEST(CfgFileErrors, IntegersOutOfRangeAreNotWrapped) {
  EXPECT_HAS(error_of(replace(kLayers, "filters=16", "filters=4294967300")),
             "layers-t.cfg:13: section [conv1], key 'filters' is 4294967300, outside the range of an integer option");
  EXPECT_HAS(error_of(replace(kLayers, "outputs=10", "outputs=99999999999999999999999")),
             "section [fc10], key 'outputs' is 99999999999999999999999, outside the range");
  EXPECT_HAS(error_of(replace(kLayers, "filters=16", "filters=16777216\ngroups=3")),
             "key 'filters' times groups=3 is 50331648, outside the range");
}

// Found by fuzz_cuda_convnet_cfg: bytes that are not UTF-8 in a section name ended in an uncaught
// nlohmann::json type_error (names become JSON strings). Now a ValueError naming file and line.
TEST(CfgFileErrors, TextThatIsNotUtf8IsRefusedNamingTheLine) {
  EXPECT_HAS(error_of(replace(kLayers, "[conv1]", "[conv\xff\xff~\xff]")), "layers-t.cfg:");
  EXPECT_HAS(error_of(replace(kLayers, "[conv1]", "[conv\xff\xff~\xff]")), ": not UTF-8 text (byte 6 of the line)");
  EXPECT_HAS(error_of(replace(kLayers, "filters=16", "filters=16 \xc3\x28")), "not UTF-8 text");
  EXPECT_HAS(error_of(replace(kLayers, "filters=16", "filters=16 \xed\xa0\x80")), "not UTF-8 text");  // a surrogate
  // Well-formed UTF-8 outside ASCII is text like any other.
  EXPECT_NO_THROW(parse_cuda_convnet_cfg(replace(kLayers, "sumWidth=4", "sumWidth=4\n# \xc3\xa9t\xc3\xa9"),
                                         kParams, 8, "layers-t.cfg", "layer-params-t.cfg"));
}

TEST(CfgFileErrors, ImageSizeMustBeGiven) {
  EXPECT_HAS(error_of(kLayers, kParams, 0),
              ("section [data], key 'dataIdx': cuda-convnet2 takes the image size from its data provider"));
}

TEST(CfgFileErrors, KeyGivenInBothFiles) {
  EXPECT_HAS(error_of(replace(kLayers, "sumWidth=4", "sumWidth=4\nepsW=0.1")),
              ("section [conv1], key 'epsW': also given in layers-t.cfg"));
}

TEST(CfgFileErrors, MalformedLines) {
  EXPECT_HAS(error_of(replace(kLayers, "[fc10]", "[fc10")), ("layers-t.cfg:21: '[fc10' is not a [section] line"));
  EXPECT_HAS(error_of(std::string("type=conv\n") + kLayers), ("layers-t.cfg:1: key 'type' comes before any [section]"));
  EXPECT_HAS(error_of(replace(kLayers, "[fc10]", "[conv1]")), ("section [conv1] appears twice"));
}

TEST(CfgFileErrors, WriterNamesWhatCudaConvnet2CannotExpress) {
  ModelSpec spec = parse_cuda_convnet_cfg(kLayers, kParams, 8);
  auto with = [&](const std::string& layer_name, const std::string& key, nlohmann::json value) {
    ModelSpec s = ModelSpec::from_json(spec.to_json());
    for (LayerSpec& l : s.layers)
      if (l.name == layer_name) {
        nlohmann::json v = l.options.values();
        v[key] = value;
        l.options = LayerOptions(l.name, v);
      }
    try {
      write_cuda_convnet_cfg(s);
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(with("conv1", "stride", 1), "no error");
  EXPECT_HAS(with("conv1", "neuron", "softsign"), ("layer 'conv1' (conv): neuron 'softsign'"));
  EXPECT_HAS(with("conv1", "wcB", 0.1), ("layer 'conv1' (conv): cuda-convnet2 has no weight decay of biases"));
  EXPECT_HAS(with("fc10", "scheduleW", "step[every=2;factor=0.1]"),
              ("layer 'fc10' (fc): its schedule"));
}

}  // namespace
}  // namespace convnet::testing
