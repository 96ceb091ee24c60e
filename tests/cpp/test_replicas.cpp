// Data parallelism inside one process: layers replicated over 2 and 4 CPU devices (each replica
// its part of the batch, the gradients summed over the replicas) and the hybrid of
// cuda-convnet2's layers-imagenet-4gpu-data-model.cfg (replicated convolutions gathered into
// model-parallel fc layers, concatenated as its `pass` layers do) train what one device trains,
// up to float32 summation order; and the errors of replicated definitions.
#include <cmath>
#include <string>

#include "convnet/error.h"
#include "convnet/net.h"
#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

// A convolutional net whose every layer but the inputs is replicated over `replicas` logical
// devices (cuda-convnet2's gpu=0,1 on the first layer, inherited by the rest), dropout included.
std::string data_parallel(const std::string& replicas) {
  const std::string d = "\"device\":" + replicas;
  return R"([
  {"name":"data","type":"input","channels":3,"size":12},
  {"name":"labels","type":"labels"},
  {"name":"conv1","type":"conv","inputs":["data"],"filters":8,"size":3,"padding":1,"neuron":"relu","initW":0.1,"initB":0.1,)" + d + R"(},
  {"name":"rnorm1","type":"lrn","inputs":["conv1"],"size":3,"alpha":0.01,"k":2,)" + d + R"(},
  {"name":"pool1","type":"pool","inputs":["rnorm1"],"size":2,"stride":2,)" + d + R"(},
  {"name":"fc2","type":"fc","inputs":["pool1"],"outputs":16,"neuron":"relu","initW":0.05,"initB":0.1,)" + d + R"(},
  {"name":"drop2","type":"dropout","inputs":["fc2"],"rate":0.5,)" + d + R"(},
  {"name":"fc3","type":"fc","inputs":["drop2"],"outputs":5,"initW":0.05,)" + d + R"(},
  {"name":"cost","type":"softmax_cost","inputs":["fc3","labels"],)" + d + R"(}
])";
}

// layers-imagenet-4gpu-data-model.cfg in miniature (tests/data/hybrid_4dev.json): conv layers on
// all four devices, one fc layer per device reading every replica's examples, dropout, each fc's
// output concatenated on two devices (the cfg's pass1a-d: cuda-convnet2's `pass` is a
// concatenation), a second model-parallel fc stage, and the classifier on device 0.
ModelSpec hybrid() { return ModelSpec::from_file(std::string(CONVNET_SOURCE_DIR) + "/tests/data/hybrid_4dev.json"); }

std::vector<Device> cpus(int count) {
  std::vector<Device> d;
  for (int k = 0; k < count; ++k) d.push_back(Device::cpu(k));
  return d;
}

void feed_batch(Net& net, int batch, uint32_t seed) {
  Tensor x({3, 12, 12, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), seed, -110.f, 140.f).data());  // pixel range
  net.set_input("data", x);
  std::vector<float> y(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) y[size_t(i)] = float((i * 3 + seed) % 5);
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
}

void expect_near(const std::vector<float>& got, const std::vector<float>& want, double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(std::fabs(double(got[i]) - want[i]), rel * scale + 1e-30) << what << " element " << i;
}

// Trains `steps` SGD steps of batch 8 on both nets; compares costs, every layer's output (the
// replicas' parts gathered), every gradient and weight.
void expect_same_training(Net& one, Net& many, int steps) {
  for (int step = 0; step < steps; ++step) {
    double costs[2];
    for (int k = 0; k < 2; ++k) {
      Net& net = k == 0 ? one : many;
      feed_batch(net, 8, 70 + uint32_t(step));
      costs[k] = net.forward_backward().objective;
      if (step + 1 < steps) net.update();
    }
    EXPECT_NEAR(costs[1], costs[0], 1e-5 * std::fabs(costs[0])) << "step " << step;
  }
  for (Layer* layer : one.layers())
    expect_near(many.output(layer->name()).to_vector(), one.output(layer->name()).to_vector(), 1e-5,
                "output of " + layer->name());
  auto p1 = one.params(), p2 = many.params();
  ASSERT_EQ(p1.size(), p2.size());
  for (size_t i = 0; i < p1.size(); ++i) {
    ASSERT_EQ(p1[i]->name, p2[i]->name);
    double norm = 0;
    for (float g : p1[i]->grad.to_vector()) norm += double(g) * g;
    EXPECT_GT(norm, 0.0) << "no gradient reaches " << p1[i]->name << ": the comparison would prove little";
    expect_near(p2[i]->grad.to_vector(), p1[i]->grad.to_vector(), 1e-5, "gradient of " + p1[i]->name);
    expect_near(p2[i]->value.to_vector(), p1[i]->value.to_vector(), 1e-6, p1[i]->name);
  }
  // Training moved the weights: the equality is not that of two untouched nets.
  Net fresh(one.spec(), {}, 9);
  EXPECT_NE(fresh.param("conv1.weights").value.to_vector(), many.param("conv1.weights").value.to_vector());
}

TEST(Replicas, TwoAndFourReplicasTrainWhatOneDeviceTrains) {
  for (int replicas : {2, 4}) {
    SCOPED_TRACE(std::to_string(replicas) + " replicas");
    const std::string list = replicas == 2 ? "[0,1]" : "[0,1,2,3]";
    Net one(ModelSpec::from_json(data_parallel("0")), {}, 9);
    Net many(ModelSpec::from_json(data_parallel(list)), cpus(replicas), 9);
    ASSERT_EQ(many.lanes().size(), size_t(replicas));
    EXPECT_EQ(many.parameter_count(), one.parameter_count());
    // Before any batch the net is planned for the smallest batch that gives each replica one.
    EXPECT_EQ(many.output_shape("fc2"), (Shape{16, 1, 1, replicas}));
    expect_same_training(one, many, 4);
  }
}

// The definition with every layer on logical device 0, unreplicated.
ModelSpec on_one_device(ModelSpec spec) {
  for (LayerSpec& l : spec.layers) {
    l.replicas.clear();
    l.device = 0;
  }
  return spec;
}

TEST(Replicas, TheHybridTrainsWhatOneDeviceTrains) {
  Net one(on_one_device(hybrid()), {}, 9);
  Net four(hybrid(), cpus(4), 9);
  ASSERT_EQ(four.lanes().size(), 4u);
  expect_same_training(one, four, 4);
}

// The replicas' parts of a replicated layer's output are the examples one device computes for
// them, bit for bit (forward is per example; only the gradient sums are ordered differently).
// The same bits, where this OpenBLAS computes a column of C alike wherever it lies in a call;
// with kernels that do not (OpenBLAS's Haswell kernels: a replica's smaller GEMMs end calls at
// other columns), within float32 rounding.
void expect_same_as_one_device(const std::vector<float>& got, const std::vector<float>& want,
                               const std::string& what) {
  if (cpu::blas_call_edges_change_bits())
    expect_near(got, want, 1e-5, what + " (this OpenBLAS's kernels round by the call's edges)");
  else
    EXPECT_EQ(got, want) << what;
}

TEST(Replicas, ForwardIsTheSameBitsAsOneDevice) {
  Net one(ModelSpec::from_json(data_parallel("0")), {}, 4);
  Net two(ModelSpec::from_json(data_parallel("[0,1]")), cpus(2), 4);
  for (Net* net : {&one, &two}) {
    feed_batch(*net, 6, 5);
    net->forward(true);
  }
  for (const char* layer : {"conv1", "pool1", "fc2", "drop2", "fc3", "cost"})
    expect_same_as_one_device(two.output(layer).to_vector(), one.output(layer).to_vector(), layer);
}

// A batch that does not divide (the last of an epoch, a test set's): 7 over 4 replicas computes
// parts of 2, 2, 2 and 1 examples, and the step is one device's.
TEST(Replicas, ABatchThatDoesNotDivideIsSplitUnevenly) {
  Net one(ModelSpec::from_json(data_parallel("0")), {}, 4);
  Net four(ModelSpec::from_json(data_parallel("[0,1,2,3]")), cpus(4), 4);
  CostReport r[2];
  for (int k = 0; k < 2; ++k) {
    Net& net = k == 0 ? one : four;
    feed_batch(net, 7, 5);
    r[k] = net.forward_backward();
  }
  EXPECT_EQ(r[1].batch, 7);
  EXPECT_NEAR(r[1].objective, r[0].objective, 1e-5 * std::fabs(r[0].objective));
  expect_same_as_one_device(four.output("fc3").to_vector(), one.output("fc3").to_vector(), "fc3");
  auto p1 = one.params(), p4 = four.params();
  for (size_t i = 0; i < p1.size(); ++i)
    expect_near(p4[i]->grad.to_vector(), p1[i]->grad.to_vector(), 1e-5, "gradient of " + p1[i]->name);
}

TEST(Replicas, BadDefinitionsAndBatchesNameTheLayer) {
  auto expect_error = [](const std::string& json, const std::vector<Device>& devices, const std::string& part) {
    try {
      Net net(ModelSpec::from_json(json), devices);
      FAIL() << "no error; wanted one containing: " << part;
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error(data_parallel("[0,1,1]"), cpus(2), "layer 'conv1': logical device 1 is named twice");
  expect_error(data_parallel("[0,1,2]"), cpus(2),
               "layer 'conv1' is placed on logical device 2 but only 2 device(s) were given");
  expect_error(R"([{"name":"data","type":"input","channels":1,"size":4,"device":[0,1]}])", cpus(2),
               "layer 'data' is an input layer and cannot be replicated");
  expect_error(data_parallel("[]"), cpus(2), "layer 'conv1': \"device\" is an empty list");

  Net net(ModelSpec::from_json(data_parallel("[0,1,2,3]")), cpus(4));
  try {
    feed_batch(net, 3, 1);
    FAIL() << "no error for a batch of 3 over 4 replicas";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'conv1' has 4 replicas: a batch of 3 leaves some of them without an example"),
              std::string::npos) << e.what();
  }
  // The list survives a round trip through JSON (a checkpoint stores the model).
  const ModelSpec spec = ModelSpec::from_json(data_parallel("[0,1,2,3]"));
  EXPECT_EQ(ModelSpec::from_json(spec.to_json()).layers[2].replicas, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(spec.logical_devices(), 4);
}

}  // namespace
}  // namespace convnet::testing
