// Whole nets: AlexNet-2012's size and shapes, definition errors that name the culprit,
// gradients through a DAG (shared outputs, joins, splits), and the two-device path.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

#include "convnet/checkpoint.h"
#include "convnet/error.h"
#include "convnet/gradcheck.h"
#include "convnet/net.h"
#include "convnet/ops.h"
#include "convnet/solver.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

std::string config(const std::string& name) {
  return std::string(CONVNET_SOURCE_DIR) + "/configs/" + name;
}

TEST(AlexNet2012, ParameterCountAndShapesMatchThePaper) {
  Net net(ModelSpec::from_file(config("alexnet_2012.json")), {Device::cpu(), Device::cpu()});
  EXPECT_EQ(net.parameter_count(), 60965224);
  // Each tower holds half the paper's channels.
  EXPECT_EQ(net.output_shape("conv1a"), Shape({48, 55, 55, 1}));
  EXPECT_EQ(net.output_shape("conv1b"), Shape({48, 55, 55, 1}));
  EXPECT_EQ(net.output_shape("pool2a"), Shape({128, 27 / 2, 27 / 2, 1}));
  EXPECT_EQ(net.output_shape("pool1a"), Shape({48, 27, 27, 1}));
  EXPECT_EQ(net.output_shape("conv2b"), Shape({128, 27, 27, 1}));
  EXPECT_EQ(net.output_shape("conv3a"), Shape({192, 13, 13, 1}));
  EXPECT_EQ(net.output_shape("conv4b"), Shape({192, 13, 13, 1}));
  EXPECT_EQ(net.output_shape("conv5a"), Shape({128, 13, 13, 1}));
  EXPECT_EQ(net.output_shape("pool5b"), Shape({128, 6, 6, 1}));
  EXPECT_EQ(net.output_shape("fc6a"), Shape({2048, 1, 1, 1}));
  EXPECT_EQ(net.output_shape("fc8"), Shape({1000, 1, 1, 1}));
  // The paper's split: conv3 and the fc layers read both towers, conv2/4/5 only their own.
  EXPECT_EQ(net.layer("conv3a").inputs(), std::vector<std::string>({"pool2a", "pool2b"}));
  EXPECT_EQ(net.layer("conv4b").inputs(), std::vector<std::string>({"conv3b"}));
  EXPECT_EQ(net.layer("fc7b").inputs(), std::vector<std::string>({"drop6a", "drop6b"}));
}

// ---- definition errors ----

std::string error_of(const std::string& json, std::vector<Device> devices = {}) {
  try {
    Net net(ModelSpec::from_json(json), devices);
  } catch (const ValueError& e) {
    return e.what();
  }
  return "no error";
}

const char* kHead =
    R"({"name":"data","type":"input","channels":3,"size":8},{"name":"labels","type":"labels"},)";

std::string model(const std::string& body) { return std::string("[") + kHead + body + "]"; }

TEST(NetErrors, UnknownLayerTypeNamesTheLayer) {
  auto msg = error_of(model(R"({"name":"c1","type":"convolution","inputs":["data"]})"));
  EXPECT_NE(msg.find("layer 'c1': unknown layer type 'convolution'"), std::string::npos) << msg;
}

TEST(NetErrors, MissingInputNamesBothLayers) {
  auto msg = error_of(model(R"({"name":"c1","type":"conv","inputs":["dat"],"filters":4,"size":3})"));
  EXPECT_NE(msg.find("layer 'c1' reads 'dat', which no layer defines"), std::string::npos) << msg;
}

TEST(NetErrors, CycleIsReported) {
  auto msg = error_of(model(R"({"name":"a","type":"neuron","inputs":["b"]},{"name":"b","type":"neuron","inputs":["a"]})"));
  EXPECT_NE(msg.find("cycle"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a, b"), std::string::npos) << msg;
}

TEST(NetErrors, DuplicateName) {
  auto msg = error_of(model(R"({"name":"data","type":"neuron","inputs":["labels"]})"));
  EXPECT_NE(msg.find("layer 'data' is defined twice"), std::string::npos) << msg;
}

TEST(NetErrors, FilterLargerThanInput) {
  auto msg = error_of(model(R"({"name":"c1","type":"conv","inputs":["data"],"filters":4,"size":11})"));
  EXPECT_NE(msg.find("layer 'c1'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("larger than the padded input"), std::string::npos) << msg;
}

TEST(NetErrors, GroupsMustDivideChannels) {
  auto msg = error_of(model(R"({"name":"c1","type":"conv","inputs":["data"],"filters":4,"size":3,"groups":2})"));
  EXPECT_NE(msg.find("layer 'c1'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("do not divide into 2 groups"), std::string::npos) << msg;
}

TEST(NetErrors, MisspeltOptionIsRejected) {
  auto msg = error_of(model(R"({"name":"c1","type":"conv","inputs":["data"],"filters":4,"size":3,"strid":2})"));
  EXPECT_NE(msg.find("layer 'c1': unknown option 'strid'"), std::string::npos) << msg;
}

TEST(NetErrors, MissingRequiredOption) {
  auto msg = error_of(model(R"({"name":"c1","type":"conv","inputs":["data"],"size":3})"));
  EXPECT_NE(msg.find("layer 'c1': missing option 'filters'"), std::string::npos) << msg;
}

TEST(NetErrors, WrongInputCount) {
  auto msg = error_of(model(R"({"name":"p","type":"pool","inputs":["data","data"],"size":2})"));
  EXPECT_NE(msg.find("layer 'p' (pool) takes 1 input(s), got 2"), std::string::npos) << msg;
}

TEST(NetErrors, ConcatOfMismatchedSizes) {
  auto msg = error_of(model(R"({"name":"p","type":"pool","inputs":["data"],"size":2},{"name":"j","type":"concat","inputs":["data","p"]})"));
  EXPECT_NE(msg.find("layer 'j' (concat)"), std::string::npos) << msg;
}

TEST(NetErrors, LogicalDeviceOutOfRange) {
  auto msg = error_of(model(R"({"name":"n","type":"neuron","inputs":["data"],"device":2})"),
                      {Device::cpu(), Device::cpu()});
  EXPECT_NE(msg.find("layer 'n' is placed on logical device 2 but only 2 device(s)"), std::string::npos) << msg;
}

TEST(NetErrors, MalformedJson) {
  EXPECT_THROW(ModelSpec::from_json("[{\"name\": \"x\", "), ValueError);
  EXPECT_THROW(ModelSpec::from_file("/nonexistent/model.json"), ValueError);
}

TEST(NetErrors, WrongBatchShapeAndBadLabel) {
  Net net(ModelSpec::from_json(model(R"({"name":"f","type":"fc","inputs":["data"],"outputs":3},{"name":"cost","type":"softmax_cost","inputs":["f","labels"]})")));
  Tensor wrong({3, 9, 8, 2}, Device::cpu());
  try {
    net.set_input("data", wrong);
    FAIL() << "no error for a wrong batch shape";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("input 'data': expected a batch of shape (3, 8, 8, 2)"),
              std::string::npos) << e.what();
  }
  Tensor x({3, 8, 8, 2}, Device::cpu());
  x.fill(0.5f);
  net.set_input("data", x);
  Tensor labels({2}, Device::cpu());
  std::vector<float> bad = {1, 7};
  labels.copy_from_host(bad.data());
  net.set_input("labels", labels);
  try {
    net.forward(true);
    FAIL() << "no error for label 7 of 3 classes";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("label 7 of case 1"), std::string::npos) << e.what();
  }
}

// ---- gradients through a DAG ----

// Every kind of layer and edge: a shared output feeding three layers, a join, a split, a sum,
// LRN, both pools, dropout, a multi-input fc. Smooth neurons so finite differences hold.
const char* kDag = R"([
  {"name":"data","type":"input","channels":4,"size":9},
  {"name":"labels","type":"labels"},
  {"name":"c1","type":"conv","inputs":["data"],"filters":6,"size":3,"padding":1,"neuron":"tanh","initW":0.3,"initB":0.1},
  {"name":"r1","type":"lrn","inputs":["c1"],"size":3,"alpha":0.5},
  {"name":"s1","type":"split","inputs":["c1"],"start":2,"count":3},
  {"name":"c2","type":"conv","inputs":["r1"],"filters":3,"size":3,"padding":1,"groups":3,"neuron":"logistic","initW":0.3},
  {"name":"sum","type":"sum","inputs":["c2","s1"],"coeffs":[1.0,-0.5]},
  {"name":"p1","type":"pool","inputs":["sum"],"pool":"avg","size":3,"stride":2},
  {"name":"p2","type":"pool","inputs":["c1"],"pool":"avg","size":2,"stride":2,"ceil":true},
  {"name":"d1","type":"dropout","inputs":["p1"],"rate":0.3},
  {"name":"f1","type":"fc","inputs":["d1","p2"],"outputs":7,"neuron":"softsign","initW":0.2},
  {"name":"f2","type":"fc","inputs":["f1"],"outputs":5,"initW":0.3},
  {"name":"cost","type":"softmax_cost","inputs":["f2","labels"]}
])";

void feed(Net& net, int batch, uint32_t seed) {
  Tensor x({4, 9, 9, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), seed).data());
  net.set_input("data", x);
  std::vector<float> y(batch);
  for (int i = 0; i < batch; ++i) y[i] = float((i * 3 + seed) % 5);
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
}

TEST(NetGradients, WholeDagMatchesFiniteDifferences) {
  Net net(ModelSpec::from_json(kDag), {}, 3);
  feed(net, 3, 5);
  GradCheckOptions o;
  o.samples = 24;
  o.step = 1e-2;
  o.tolerance = 1e-2;
  auto results = check_gradients(net, o);
  ASSERT_EQ(results.size(), 8u);  // weights and biases of c1, c2, f1, f2
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok) << r.param << " relative error " << r.relative_error;
    EXPECT_LT(r.max_element_error, 2e-2) << r.param;  // smooth net: every element agrees too
    EXPECT_GT(r.max_abs_analytic, 0) << r.param << " has an all-zero gradient";
  }
}

TEST(NetGradients, TwoDevicesGiveTheSameNumbersAsOne) {
  // Same DAG with layers spread over logical devices 0 and 1, mapped to two CPU "devices":
  // every cross-device edge becomes an explicit copy, forward and backward.
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers)
    if (l.name == "r1" || l.name == "c2" || l.name == "p2" || l.name == "f2") l.device = 1;
  Net one(ModelSpec::from_json(kDag), {}, 3);
  Net two(spec, {Device::cpu(0), Device::cpu(1)}, 3);
  ASSERT_EQ(two.device_of("c2"), Device::cpu(1));
  for (Net* net : {&one, &two}) {
    feed(*net, 4, 9);
    net->forward(true);
    net->backward();
    net->update();
  }
  for (Net* net : {&one, &two}) {
    feed(*net, 4, 10);
    net->forward(true);
    net->backward();
  }
  auto p1 = one.params(), p2 = two.params();
  ASSERT_EQ(p1.size(), p2.size());
  for (size_t i = 0; i < p1.size(); ++i) {
    EXPECT_EQ(p1[i]->value.to_vector(), p2[i]->value.to_vector()) << p1[i]->name;
    EXPECT_EQ(p1[i]->grad.to_vector(), p2[i]->grad.to_vector()) << p1[i]->name;
  }
}

// forward_backward is the trainer's pass: on the CPU (and on a GPU without CUDA graphs) it is
// exactly forward(true) then backward(), dropout masks included.
TEST(NetTraining, ForwardBackwardEqualsForwardThenBackward) {
  Net a(ModelSpec::from_json(kDag), {}, 3), b(ModelSpec::from_json(kDag), {}, 3);
  for (uint32_t step = 0; step < 3; ++step) {
    feed(a, 4, 20 + step);
    feed(b, 4, 20 + step);
    const CostReport ra = a.forward(true);
    a.backward();
    const CostReport rb = b.forward_backward();
    EXPECT_EQ(ra.objective, rb.objective) << "step " << step;
    ASSERT_EQ(rb.costs.size(), 1u);
    EXPECT_EQ(ra.costs[0].top1_error, rb.costs[0].top1_error);
    EXPECT_EQ(rb.batch, 4);
    auto pa = a.params(), pb = b.params();
    for (size_t i = 0; i < pa.size(); ++i)
      EXPECT_EQ(pa[i]->grad.to_vector(), pb[i]->grad.to_vector()) << pa[i]->name << ", step " << step;
    a.update();
    b.update();
  }
  EXPECT_EQ(b.cuda_graph_nodes(), 0u);
}

// LRN then pooling: the fused backward gives the numbers of the two layers' own backward passes,
// bit for bit, for max and average (ceil) pooling and odd and even LRN windows; an LRN with a
// second reader is not fused; finite differences agree with the fused gradients.
std::string lrn_pool_net(const std::string& pool, int lrn_size, bool second_reader) {
  return model(R"({"name":"c1","type":"conv","inputs":["data"],"filters":6,"size":3,"padding":1,"neuron":"tanh","initW":0.3,"initB":0.1},)"
               R"({"name":"r1","type":"lrn","inputs":["c1"],"size":)" + std::to_string(lrn_size) + R"(,"alpha":0.5},)"
               R"({"name":"p1","type":"pool","inputs":["r1"],)" + pool + R"(},)" +
               (second_reader ? R"({"name":"f0","type":"fc","inputs":["r1"],"outputs":3,"initW":0.2},)" : "") +
               R"({"name":"f1","type":"fc","inputs":["p1"],"outputs":3,"initW":0.2},)" +
               (second_reader ? R"({"name":"s","type":"sum","inputs":["f1","f0"]},{"name":"cost","type":"softmax_cost","inputs":["s","labels"]})"
                              : R"({"name":"cost","type":"softmax_cost","inputs":["f1","labels"]})"));
}

void feed8(Net& net, int batch, uint32_t seed) {
  Tensor x({3, 8, 8, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), seed).data());
  net.set_input("data", x);
  std::vector<float> y(batch);
  for (int i = 0; i < batch; ++i) y[i] = float((i + seed) % 3);
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
}

TEST(NetFusion, LrnPoolBackwardEqualsTheTwoLayersBitForBit) {
  for (const std::string pool : {R"("pool":"max","size":3,"stride":2)", R"("pool":"avg","size":3,"stride":2,"ceil":true)"})
    for (int lrn_size : {5, 4}) {
      SCOPED_TRACE(pool + ", lrn size " + std::to_string(lrn_size));
      const auto spec = ModelSpec::from_json(lrn_pool_net(pool, lrn_size, false));
      Net fused(spec, {}, 4), separate(spec, {}, 4);
      separate.set_fusion(false);
      EXPECT_EQ(fused.fused_layers(), std::vector<std::string>{"r1"});
      EXPECT_TRUE(separate.fused_layers().empty());
      fused.set_profiling(true);
      separate.set_profiling(true);
      for (uint32_t step = 0; step < 3; ++step) {
        for (Net* n : {&fused, &separate}) {
          feed8(*n, 5, 30 + step);
          n->forward_backward();
        }
        auto pf = fused.params(), ps = separate.params();
        for (size_t i = 0; i < pf.size(); ++i) {
          EXPECT_EQ(pf[i]->grad.to_vector(), ps[i]->grad.to_vector()) << pf[i]->name << ", step " << step;
          const auto g = pf[i]->grad.to_vector();
          if (pf[i]->name == "c1.weights")
            EXPECT_TRUE(std::any_of(g.begin(), g.end(), [](float v) { return v != 0.f; }))
                << "no gradient reached c1 through the fused LRN and pool";
        }
        fused.update();
        separate.update();
      }
      // The fused net really skipped the pool's backward; the separate one ran it.
      for (Net* n : {&fused, &separate})
        for (const auto& t : n->layer_times())
          if (t.layer == "p1") EXPECT_EQ(t.backward_calls, n == &fused ? 0 : 3) << (n == &fused ? "fused" : "separate");
    }
  Net two_readers(ModelSpec::from_json(lrn_pool_net(R"("pool":"max","size":3,"stride":2)", 5, true)), {}, 4);
  EXPECT_TRUE(two_readers.fused_layers().empty()) << "an LRN read by a pool and an fc was fused";
}

TEST(NetFusion, FusedLrnPoolGradientsMatchFiniteDifferences) {
  Net net(ModelSpec::from_json(lrn_pool_net(R"("pool":"avg","size":3,"stride":2)", 3, false)), {}, 6);
  ASSERT_EQ(net.fused_layers(), std::vector<std::string>{"r1"});
  feed8(net, 3, 40);
  GradCheckOptions o;
  o.samples = 24;
  o.step = 1e-2;
  o.tolerance = 1e-2;
  for (const auto& r : check_gradients(net, o)) {
    EXPECT_TRUE(r.ok) << r.param << " relative error " << r.relative_error;
    EXPECT_GT(r.max_abs_analytic, 0) << r.param;
  }
}

TEST(NetErrors, CudaGraphsNeedEveryLayerOnOneGpu) {
  Net net(ModelSpec::from_json(kDag), {}, 3);
  try {
    net.set_cuda_graph(true);
    FAIL() << "CUDA graphs were accepted for a net on the CPU";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA graphs need every layer on one GPU: layer 'data' is on cpu"),
              std::string::npos) << e.what();
  }
  EXPECT_FALSE(net.cuda_graph());
  net.set_cuda_graph(false);  // switching off is always allowed
}

TEST(NetTraining, SgdFollowsThePaperRule) {
  // One fc layer: after a step, v = -wc*lr*w - lr*g and w' = w + v (momentum buffer starts at 0).
  Net net(ModelSpec::from_json(model(R"({"name":"f","type":"fc","inputs":["data"],"outputs":3,"epsW":0.1,"wc":0.01,"epsB":0.2},{"name":"cost","type":"softmax_cost","inputs":["f","labels"]})")));
  Tensor labels({2}, Device::cpu());
  std::vector<float> y = {2, 0};
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
  Tensor x({3, 8, 8, 2}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), 4).data());
  net.set_input("data", x);
  net.forward(true);
  net.backward();
  Param& w = net.param("f.weights");
  auto w0 = w.value.to_vector(), g = w.grad.to_vector();
  net.update();
  auto w1 = w.value.to_vector(), v = w.state_tensor("velocity").to_vector();
  for (size_t i = 0; i < w0.size(); ++i) {
    double want_v = -0.01 * 0.1 * w0[i] - 0.1 * g[i];
    EXPECT_NEAR(v[i], want_v, 1e-7);
    EXPECT_NEAR(w1[i], w0[i] + want_v, 1e-7);
  }
}


// updatePeriod 2 on the fc layer (a conv layer before it updates every step): after the first
// step its weights have not moved; after the second they have taken one SGD step with the sum of
// both steps' gradients, v = -wc*lr*w - lr*(g1 + g2). A checkpoint between the two keeps the sum,
// so a resumed net ends with the same weights.
TEST(NetTraining, UpdatePeriodUpdatesWithTheSumOfItsSteps) {
  const std::string json = model(
      R"({"name":"c","type":"conv","inputs":["data"],"filters":4,"size":3,"padding":1,"neuron":"relu","initW":0.1},)"
      R"({"name":"f","type":"fc","inputs":["c"],"outputs":3,"epsW":0.1,"wc":0.01,"epsB":0.2,"updatePeriod":2},)"
      R"({"name":"cost","type":"softmax_cost","inputs":["f","labels"]})");
  auto feed_step = [](Net& net, uint32_t seed) {
    Tensor labels({2}, Device::cpu());
    std::vector<float> y = {float(seed % 3), 0};
    labels.copy_from_host(y.data());
    net.set_input("labels", labels);
    Tensor x({3, 8, 8, 2}, Device::cpu());
    x.copy_from_host(random_vector(size_t(x.numel()), seed).data());
    net.set_input("data", x);
    net.forward(true);
    net.backward();
  };
  Net net(ModelSpec::from_json(json));
  Param& w = net.param("f.weights");
  const auto w0 = w.value.to_vector(), c0 = net.param("c.weights").value.to_vector();
  feed_step(net, 4);
  const auto g1 = w.grad.to_vector();
  net.update();
  EXPECT_EQ(w.value.to_vector(), w0) << "updated before its period";
  EXPECT_NE(net.param("c.weights").value.to_vector(), c0) << "the conv layer updates every step";
  const std::string saved = ::testing::TempDir() + "update_period.safetensors";
  save_checkpoint(net, saved, nlohmann::json::object());
  feed_step(net, 5);
  const auto g2 = w.grad.to_vector();
  net.update();
  const auto w2 = w.value.to_vector();
  for (size_t i = 0; i < w0.size(); ++i)
    EXPECT_NEAR(w2[i], w0[i] - 0.01 * 0.1 * w0[i] - 0.1 * (double(g1[i]) + g2[i]), 1e-6) << i;
  Net resumed(ModelSpec::from_json(json));
  load_checkpoint(resumed, saved);
  feed_step(resumed, 5);
  resumed.update();
  EXPECT_EQ(resumed.param("f.weights").value.to_vector(), w2);
  EXPECT_EQ(resumed.param("c.weights").value.to_vector(), net.param("c.weights").value.to_vector());
  std::remove(saved.c_str());
}

// ---- gradient buckets ----

// The bucket's floats: each parameter's gradient at its offset, zero in the gaps.
std::vector<float> expected_bucket(const Net::GradientBucket& b) {
  std::vector<float> want(size_t(b.flat.numel()), 0.f);
  for (size_t k = 0; k < b.params.size(); ++k) {
    const auto g = b.params[k]->grad.to_vector();
    std::copy(g.begin(), g.end(), want.begin() + b.offsets[k]);
  }
  return want;
}

TEST(NetBuckets, EveryGradientIsAViewOfItsBucketInBackwardOrder) {
  Net net(ModelSpec::from_json(kDag), {}, 3);
  const auto& buckets = net.gradient_buckets();
  ASSERT_EQ(buckets.size(), 1u);  // a small net: one bucket
  const Net::GradientBucket& b = buckets[0];
  EXPECT_EQ(b.device, Device::cpu());
  // Reverse topological order: f2's parameters first, c1's last.
  std::vector<std::string> names;
  for (Param* p : b.params) names.push_back(p->name);
  EXPECT_EQ(names, (std::vector<std::string>{"f2.biases", "f2.weights", "f1.biases", "f1.weights",
                                             "c2.biases", "c2.weights", "c1.biases", "c1.weights"}));
  for (size_t k = 0; k < b.params.size(); ++k) {
    EXPECT_EQ(b.offsets[k] % Net::kBucketAlign, 0) << names[k];
    EXPECT_EQ(b.params[k]->grad.data(), b.flat.data() + b.offsets[k]) << names[k];
    if (k + 1 < b.params.size())
      EXPECT_GE(b.offsets[k + 1], b.offsets[k] + b.params[k]->value.numel()) << names[k];
  }
  feed(net, 6, 2);
  net.forward(true);
  net.backward();
  const auto got = b.flat.to_vector();
  // The test can fail: the gradients are not all zero.
  EXPECT_TRUE(std::any_of(got.begin(), got.end(), [](float x) { return x != 0.f; }));
  EXPECT_EQ(got, expected_bucket(b));
}

TEST(NetBuckets, HalvingABucketHalvesTheUpdate) {
  // What an all-reduce average over two replicas does to the bucket must equal halving each
  // parameter's gradient, for every solver.
  for (const std::string& solver : solver_names()) {
    SCOPED_TRACE(solver);
    Net a(ModelSpec::from_json(kDag), {}, 3), b(ModelSpec::from_json(kDag), {}, 3),
        full(ModelSpec::from_json(kDag), {}, 3);
    for (Net* n : {&a, &b, &full}) {
      n->set_solver(SolverOptions{solver});
      feed(*n, 6, 2);
      n->forward(true);
      n->backward();
    }
    for (const Net::GradientBucket& bucket : a.gradient_buckets()) {
      Tensor flat = bucket.flat;
      axpby(0.5f, flat, flat, false);
    }
    for (Param* p : b.params()) axpby(0.5f, p->grad, p->grad, false);
    for (Net* n : {&a, &b, &full}) n->update();
    auto pa = a.params(), pb = b.params(), pf = full.params();
    bool any_differs = false;
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_EQ(pa[i]->value.to_vector(), pb[i]->value.to_vector()) << pa[i]->name;
      any_differs |= pa[i]->value.to_vector() != pf[i]->value.to_vector();
    }
    // ... and the halving mattered (AdamW is nearly scale-free, but not at eps and decay).
    EXPECT_TRUE(any_differs);
  }
}

TEST(NetBuckets, BucketsNeverMixDevices) {
  auto spec = ModelSpec::from_json(kDag);
  for (auto& l : spec.layers)
    if (l.name == "r1" || l.name == "c2" || l.name == "p2" || l.name == "f2") l.device = 1;
  Net two(spec, {Device::cpu(0), Device::cpu(1)}, 3);
  std::set<std::string> devices;
  size_t params = 0;
  for (const Net::GradientBucket& b : two.gradient_buckets()) {
    devices.insert(b.device.str());
    EXPECT_EQ(b.flat.device(), b.device);
    for (Param* p : b.params) {
      EXPECT_EQ(p->value.device(), b.device) << p->name;
      ++params;
    }
  }
  EXPECT_EQ(devices, (std::set<std::string>{Device::cpu(0).str(), Device::cpu(1).str()}));
  EXPECT_EQ(params, two.params().size());
  feed(two, 5, 3);
  two.forward(true);
  two.backward();
  for (const Net::GradientBucket& b : two.gradient_buckets())
    EXPECT_EQ(b.flat.to_vector(), expected_bucket(b)) << b.device.str();
}

// fc layers of 4M floats (16 MB) each: two cannot share a 25 MB bucket.
const char* const kLargeFc = R"([
  {"name":"data","type":"input","channels":1024,"size":2},
  {"name":"labels","type":"labels"},
  {"name":"f1","type":"fc","inputs":["data"],"outputs":1024},
  {"name":"f2","type":"fc","inputs":["f1"],"outputs":4096},
  {"name":"f3","type":"fc","inputs":["f2"],"outputs":3},
  {"name":"cost","type":"softmax_cost","inputs":["f3","labels"]}
])";

// The hook an all-reduce starts from: once per bucket per backward, in backward, and only when
// every gradient in the bucket is final (its contents then equal what backward ends with); on
// the whole DAG (several buckets once the cap is small: each parameter its own).
TEST(NetBuckets, ReadyHookFiresOncePerBucketWithItsGradientsFinal) {
  Net net(ModelSpec::from_json(kLargeFc));
  const size_t buckets = net.gradient_buckets().size();
  ASSERT_GE(buckets, 2u);
  Tensor x({1024, 2, 2, 3}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), 7).data());
  net.set_input("data", x);
  Tensor labels({3}, Device::cpu());
  const float y[3] = {0, 2, 1};
  labels.copy_from_host(y);
  net.set_input("labels", labels);
  net.forward(true);
  std::vector<std::vector<float>> at_hook(buckets);
  std::vector<size_t> order;
  net.set_bucket_ready_hook([&](size_t b) {
    order.push_back(b);
    at_hook[b] = net.gradient_buckets()[b].flat.to_vector();
  });
  net.backward();
  net.set_bucket_ready_hook({});
  ASSERT_EQ(order.size(), buckets);
  for (size_t b = 0; b < buckets; ++b) {
    EXPECT_EQ(order[b], b) << "buckets are filled in backward order";
    EXPECT_EQ(at_hook[b], net.gradient_buckets()[b].flat.to_vector()) << "bucket " << b << " changed after its hook";
  }
  // The buckets keep each layer whole: f3 and f2 in the first, f1 (16 MB more) in the second, so
  // the first is summed while backward still works on f1.
  std::vector<std::string> first;
  for (Param* p : net.gradient_buckets()[0].params) first.push_back(p->name);
  EXPECT_EQ(first, (std::vector<std::string>{"f3.biases", "f3.weights", "f2.biases", "f2.weights"}));
  net.backward();  // no hook: nothing called
  EXPECT_EQ(order.size(), buckets);
}

TEST(NetBuckets, LargeParametersSplitTheBuckets) {
  Net net(ModelSpec::from_json(kLargeFc));
  const int64_t cap = Net::kBucketBytes / 4;
  size_t params = 0;
  for (const Net::GradientBucket& b : net.gradient_buckets()) {
    // Over the cap only for a single layer's parameters (a layer's stay together).
    const std::string layer = b.params[0]->name.substr(0, b.params[0]->name.rfind('.'));
    bool one_layer = true;
    for (Param* p : b.params) one_layer = one_layer && p->name.rfind(layer + ".", 0) == 0;
    EXPECT_TRUE(b.flat.numel() <= cap || one_layer) << b.flat.numel();
    params += b.params.size();
  }
  EXPECT_EQ(params, net.params().size());
  EXPECT_GE(net.gradient_buckets().size(), 2u);
}

// ---- issue 16: no silent wrong answers ----

// Integer options reach a C++ int through one range check: 2^32 + 4 filters were 4 before.
// ---- memory accounting ----

int64_t allocated(int64_t floats) { return (floats * 4 + 63) / 64 * 64; }  // Storage rounds to 64 bytes

TEST(HostMemory, CountsEveryHostTensorWhileItLives) {
  const HostMemoryStats before = host_memory_stats();
  {
    Tensor a({1000}, Device::cpu());
    Tensor view = a.view(10, {20});  // shares a's memory: adds nothing
    const HostMemoryStats during = host_memory_stats();
    EXPECT_EQ(during.current_bytes - before.current_bytes, size_t(allocated(1000)));
    EXPECT_EQ(during.allocations - before.allocations, 1u);
    EXPECT_GE(during.peak_bytes, during.current_bytes);
    EXPECT_EQ(view.storage_id(), a.storage_id());
    EXPECT_EQ(view.storage_bytes(), allocated(1000));
  }
  const HostMemoryStats after = host_memory_stats();
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_GE(after.peak_bytes, before.current_bytes + size_t(allocated(1000)));
  host_reset_peak();
  EXPECT_EQ(host_memory_stats().peak_bytes, after.current_bytes);
}

// memory_use names every block the net holds, once: after a training step its entries add up to
// exactly what the host counter saw the net allocate (nothing missed, nothing counted twice),
// and each kind has the size the model implies.
TEST(NetMemory, EveryBlockOnceAddingUpToTheHostCounter) {
  const HostMemoryStats before = host_memory_stats();
  {
    Net net(ModelSpec::from_json(kDag), {}, 3);
    EXPECT_TRUE(net.memory_use().size() > 0);
    const int batch = 4;
    feed(net, batch, 9);
    net.forward(true);
    net.backward();
    net.update();
    std::map<std::string, int64_t> by_kind;
    std::set<std::pair<std::string, std::string>> names;
    int64_t total = 0;
    for (const auto& m : net.memory_use()) {
      EXPECT_GT(m.bytes, 0) << m.layer << " " << m.what;
      EXPECT_TRUE(names.insert({m.layer, m.what + " " + m.kind}).second) << "listed twice: " << m.layer << " " << m.what;
      by_kind[m.kind] += m.bytes;
      total += m.bytes;
    }
    const int64_t held = int64_t(host_memory_stats().current_bytes - before.current_bytes);
    EXPECT_EQ(total, held) << "memory_use misses (or double counts) host memory";
    int64_t params = 0;
    for (const Param* p : net.params()) params += allocated(p->value.numel());
    EXPECT_EQ(by_kind["parameters"], params);
    EXPECT_EQ(by_kind["solver state"], params);  // SGD: one velocity per parameter
    EXPECT_GE(by_kind["parameter gradients"], params);  // the buckets, aligned
    for (const char* layer : {"c1", "c2", "f1", "f2"}) {
      const Shape s = net.output_shape(layer);
      bool found = false;
      for (const auto& m : net.memory_use())
        if (m.layer == layer && m.kind == "activations") {
          found = true;
          EXPECT_EQ(m.bytes, allocated(int64_t(s[0]) * s[1] * s[2] * batch)) << layer;
        }
      EXPECT_TRUE(found) << layer << "'s output is not listed";
    }
    EXPECT_GT(by_kind["activation gradients"], 0);
    EXPECT_GT(by_kind["layer buffers"], 0);  // the LRN's denominators at least
  }
  EXPECT_EQ(host_memory_stats().current_bytes, before.current_bytes) << "a net left host memory behind";
}

TEST(NetErrors, IntegerOptionsAreRangeCheckedNotWrapped) {
  for (const std::string value : {"4294967300", "18446744073709551615", "-1099511627776", "1e30"}) {
    SCOPED_TRACE(value);
    const std::string msg = error_of(model(R"({"name":"c","type":"conv","inputs":["data"],"size":3,"filters":)" +
                                           value + "}"));
    EXPECT_NE(msg.find("layer 'c': option 'filters' is "), std::string::npos) << msg;
    EXPECT_NE(msg.find("outside the range of an integer option [-16777216, 16777216]"), std::string::npos) << msg;
  }
  EXPECT_NE(error_of(model(R"({"name":"n","type":"neuron","inputs":["data"],"device":4294967296})"))
                .find("layer 'n': \"device\" is 4294967296, outside the range"),
            std::string::npos);
  EXPECT_EQ(option_int(kOptionIntLimit, "x"), int(kOptionIntLimit));  // the bound itself is allowed
  EXPECT_THROW(option_int(kOptionIntLimit + 1, "x"), ValueError);
}

const char* kFcNet = R"({"name":"f","type":"fc","inputs":["data"],"outputs":3},)"
                     R"({"name":"cost","type":"softmax_cost","inputs":["f","labels"]})";

void fill(Net& net, const std::string& param, float value) {
  Param& p = net.param(param);
  p.value.copy_from_host(std::vector<float>(size_t(p.value.numel()), value).data());
}

// NaN scores rank below no class, so the softmax counted their examples as correct: a NaN
// checkpoint tested as accuracy 1.0. A test pass now refuses to score them.
TEST(NetNonFinite, TestPassRefusesNanScoresNamingTheLayer) {
  Net net(ModelSpec::from_json(model(kFcNet)));
  fill(net, "f.weights", std::numeric_limits<float>::quiet_NaN());
  feed8(net, 4, 1);
  try {
    net.forward(false);
    FAIL() << "a NaN cost was scored";
  } catch (const NonFiniteError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cost layer 'cost' gives a cost of nan"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer 'f' (fc): nan at example 0 (its parameter 'f.weights' holds nan)"), std::string::npos) << msg;
  }
  const CostReport r = net.forward(true);  // training reports it, with no error rate
  EXPECT_TRUE(std::isnan(r.objective));
  EXPECT_TRUE(std::isnan(r.costs[0].top1_error) && std::isnan(r.costs[0].top5_error));
  EXPECT_EQ(r.primary, 0u);
}

TEST(NetNonFinite, FirstNonFiniteOutputAndGradient) {
  Net net(ModelSpec::from_json(model(kFcNet)));
  feed8(net, 4, 2);
  net.forward_backward();
  EXPECT_EQ(net.first_nonfinite_gradient(), "");
  Tensor x({3, 8, 8, 4}, Device::cpu());
  std::vector<float> v(size_t(x.numel()), 0.5f);
  v[size_t(7) * 4 + 2] = std::numeric_limits<float>::infinity();  // example 2 (CHWN)
  x.copy_from_host(v.data());
  net.set_input("data", x);
  net.forward_backward();
  EXPECT_EQ(net.first_nonfinite_output().rfind("layer 'data' (input): inf at example 2", 0), 0u)
      << net.first_nonfinite_output();
  EXPECT_NE(net.first_nonfinite_gradient().find("the gradient of 'f.weights' holds"), std::string::npos)
      << net.first_nonfinite_gradient();
}

TEST(NetNonFinite, UpdateRefusesABadLrScaleBeforeChangingAnything) {
  Net net(ModelSpec::from_json(model(kFcNet)));
  feed8(net, 4, 3);
  net.forward_backward();
  const std::vector<float> before = net.param("f.weights").value.to_vector();
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1.f})
    EXPECT_THROW(net.update(bad), ValueError) << bad;
  EXPECT_EQ(net.param("f.weights").value.to_vector(), before);
  EXPECT_EQ(net.step(), 0u);
}

// Backward shares the output gradients: on a chain each gradient dies with the layer that reads
// it, so two slabs the size of the largest output hold them all (what PyTorch's autograd frees
// as it goes). The numbers stay those of unshared buffers: a backward from given gradients gives
// every layer its own, and switching to it and back changes no bit.
TEST(NetMemory, OutputGradientsShareSlabsOnAChain) {
  const char* chain = R"([
    {"name":"data","type":"input","channels":3,"size":16},
    {"name":"labels","type":"labels"},
    {"name":"c1","type":"conv","inputs":["data"],"filters":8,"size":3,"padding":1,"neuron":"relu","initW":0.2},
    {"name":"c2","type":"conv","inputs":["c1"],"filters":8,"size":3,"padding":1,"neuron":"relu","initW":0.2},
    {"name":"p1","type":"pool","inputs":["c2"],"pool":"max","size":2,"stride":2},
    {"name":"c3","type":"conv","inputs":["p1"],"filters":16,"size":3,"padding":1,"neuron":"relu","initW":0.2},
    {"name":"f1","type":"fc","inputs":["c3"],"outputs":10,"neuron":"relu","initW":0.05},
    {"name":"f2","type":"fc","inputs":["f1"],"outputs":5,"initW":0.1},
    {"name":"cost","type":"softmax_cost","inputs":["f2","labels"]}
  ])";
  Net net(ModelSpec::from_json(chain), {}, 7);
  const int batch = 4;
  Tensor x({3, 16, 16, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), 11).data());
  net.set_input("data", x);
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(std::vector<float>{0, 1, 2, 3}.data());
  net.set_input("labels", labels);
  auto grads = [&] {
    std::vector<std::vector<float>> g;
    for (const Param* p : net.params()) g.push_back(p->grad.to_vector());
    return g;
  };
  auto gradient_bytes = [&] {
    int64_t b = 0;
    for (const auto& m : net.memory_use())
      if (m.kind == "activation gradients") b += m.bytes;
    return b;
  };
  net.forward(true);
  net.backward();
  const auto shared = grads();
  int64_t largest = 0, sum = 0;
  for (const char* layer : {"c1", "c2", "p1", "c3", "f1", "f2"}) {
    const Shape s = net.output_shape(layer);
    const int64_t bytes = allocated(int64_t(s[0]) * s[1] * s[2] * s[3]);
    largest = std::max(largest, bytes);
    sum += bytes;
  }
  EXPECT_EQ(gradient_bytes(), 2 * largest) << "sum of the gradients unshared: " << sum;
  EXPECT_LT(2 * largest, sum);
  // Given gradients (zero: they add nothing) make every layer's gradient its own...
  const Shape f1 = net.output_shape("f1");
  net.backward({{"f1", Tensor::zeros(f1, Device::cpu())}});
  EXPECT_GT(gradient_bytes(), 2 * largest);
  // ...and the plain backward after it shares again, with the same bits as before.
  net.backward();
  EXPECT_EQ(gradient_bytes(), 2 * largest);
  EXPECT_EQ(grads(), shared);
}

}  // namespace
}  // namespace convnet::testing
