// Towers at once: the device threads (jobs side by side, events, failures, the host's work) and
// a two-tower net on cpu:0/cpu:1, whose towers run concurrently and compute what one device
// computes, bit for bit, over several training steps; the step timeline as Chrome trace JSON.
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "convnet/error.h"
#include "convnet/net.h"
#include "convnet/trace.h"
#include "core/device_threads.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

// Two jobs that hand events back and forth: this finishes only if both run at the same time,
// each on a thread of its own, neither the caller's.
TEST(DeviceThreads, JobsRunSideBySide) {
  DeviceThreads threads(2);
  std::vector<std::thread::id> ids(2);
  std::vector<int> trail;  // who passed each event, in order
  threads.run(8, [&](int k) {
    ids[size_t(k)] = std::this_thread::get_id();
    for (size_t e = size_t(k); e < 8; e += 2) {
      if (e > 0) threads.wait(e - 1);
      trail.push_back(k);
      threads.signal(e);
    }
  });
  EXPECT_EQ(trail, (std::vector<int>{0, 1, 0, 1, 0, 1, 0, 1}));
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_NE(ids[0], std::this_thread::get_id());
  EXPECT_NE(ids[1], std::this_thread::get_id());
}

// A job that throws ends the run with its error, even while another waits for an event the
// failed job would have signalled; the threads serve the next run.
TEST(DeviceThreads, AFailingJobCancelsTheOthersAndItsErrorComesBack) {
  DeviceThreads threads(3);
  try {
    threads.run(1, [&](int k) {
      if (k == 1) throw ValueError("layer 'x' on cpu:1 failed");
      threads.wait(0);  // never signalled
    });
    FAIL() << "no error";
  } catch (const ValueError& e) {
    EXPECT_STREQ(e.what(), "layer 'x' on cpu:1 failed");
  }
  std::vector<int> ran(3, 0);
  threads.run(0, [&](int k) { ran[size_t(k)] = 1; });
  EXPECT_EQ(ran, (std::vector<int>{1, 1, 1}));
}

// The host's work runs on the calling thread, at least once after every job has finished.
TEST(DeviceThreads, HostWorkRunsOnTheCallingThread) {
  for (int count : {1, 2}) {
    DeviceThreads threads(count);
    std::atomic<int> finished{0};
    int seen_at_end = -1, calls = 0;
    std::set<std::thread::id> host_ids;
    threads.run(
        0,
        [&](int) {
          threads.wake_host();
          ++finished;
        },
        [&] {
          host_ids.insert(std::this_thread::get_id());
          seen_at_end = finished.load();
          ++calls;
        });
    EXPECT_EQ(host_ids, std::set<std::thread::id>{std::this_thread::get_id()}) << count;
    EXPECT_EQ(seen_at_end, count);
    EXPECT_GE(calls, 1);
  }
}

// AlexNet-2012's structure in miniature: two towers of conv, LRN and pool, the cross-tower
// convolution that reads both, cross-tower fc layers with dropout, one classifier.
const char* kTowers = R"([
  {"name":"data","type":"input","channels":3,"size":19},
  {"name":"labels","type":"labels"},
  {"name":"conv1a","type":"conv","inputs":["data"],"filters":8,"size":5,"stride":2,"neuron":"relu","initW":0.1,"initB":0.1,"device":0},
  {"name":"rnorm1a","type":"lrn","inputs":["conv1a"],"size":5,"alpha":0.01,"beta":0.75,"k":2,"device":0},
  {"name":"pool1a","type":"pool","inputs":["rnorm1a"],"size":3,"stride":2,"device":0},
  {"name":"conv1b","type":"conv","inputs":["data"],"filters":8,"size":5,"stride":2,"neuron":"relu","initW":0.1,"initB":0.1,"device":1},
  {"name":"rnorm1b","type":"lrn","inputs":["conv1b"],"size":5,"alpha":0.01,"beta":0.75,"k":2,"device":1},
  {"name":"pool1b","type":"pool","inputs":["rnorm1b"],"size":3,"stride":2,"device":1},
  {"name":"conv2a","type":"conv","inputs":["pool1a","pool1b"],"filters":12,"size":3,"padding":1,"neuron":"relu","initW":0.1,"initB":0.1,"device":0},
  {"name":"conv2b","type":"conv","inputs":["pool1a","pool1b"],"filters":12,"size":3,"padding":1,"neuron":"relu","initW":0.1,"initB":0.1,"device":1},
  {"name":"fc3a","type":"fc","inputs":["conv2a","conv2b"],"outputs":16,"neuron":"relu","initW":0.05,"initB":0.1,"device":0},
  {"name":"drop3a","type":"dropout","inputs":["fc3a"],"rate":0.5,"device":0},
  {"name":"fc3b","type":"fc","inputs":["conv2a","conv2b"],"outputs":16,"neuron":"relu","initW":0.05,"initB":0.1,"device":1},
  {"name":"drop3b","type":"dropout","inputs":["fc3b"],"rate":0.5,"device":1},
  {"name":"fc4","type":"fc","inputs":["drop3a","drop3b"],"outputs":10,"initW":0.05,"device":0},
  {"name":"cost","type":"softmax_cost","inputs":["fc4","labels"]}
])";

void feed_images(Net& net, int batch, uint32_t seed) {
  Tensor x({3, 19, 19, batch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), seed, -120.f, 130.f).data());  // pixel range
  net.set_input("data", x);
  std::vector<float> y(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) y[size_t(i)] = float((i * 7 + seed) % 10);
  Tensor labels({batch}, Device::cpu());
  labels.copy_from_host(y.data());
  net.set_input("labels", labels);
}

TEST(Towers, TwoCpuDevicesSideBySideComputeWhatOneDeviceComputes) {
  Net one(ModelSpec::from_json(kTowers), {}, 5);
  Net two(ModelSpec::from_json(kTowers), {Device::cpu(0), Device::cpu(1)}, 5);
  ASSERT_EQ(two.lanes().size(), 2u);
  two.set_device_threads(1);
  for (Net* net : {&one, &two}) {
    SolverOptions sgd;
    sgd.name = "sgd";
    net->set_solver(sgd);
  }
  std::vector<double> costs[2];
  for (int step = 0; step < 4; ++step)
    for (int k = 0; k < 2; ++k) {
      Net& net = k == 0 ? one : two;
      feed_images(net, 6, 40 + uint32_t(step));
      costs[k].push_back(net.forward_backward().objective);
      if (step < 3) net.update();
    }
  EXPECT_EQ(costs[0], costs[1]);
  for (Layer* layer : one.layers())
    EXPECT_EQ(one.output(layer->name()).to_vector(), two.output(layer->name()).to_vector())
        << layer->name();
  auto p1 = one.params(), p2 = two.params();
  ASSERT_EQ(p1.size(), p2.size());
  for (size_t i = 0; i < p1.size(); ++i) {
    EXPECT_EQ(p1[i]->value.to_vector(), p2[i]->value.to_vector()) << p1[i]->name;
    EXPECT_EQ(p1[i]->grad.to_vector(), p2[i]->grad.to_vector()) << p1[i]->name;
  }
  // Training moved the weights: the equality is not that of two untouched nets.
  Net fresh(ModelSpec::from_json(kTowers), {}, 5);
  EXPECT_NE(fresh.param("conv1b.weights").value.to_vector(), two.param("conv1b.weights").value.to_vector());
}

// The all-reduce hook keeps its contract with devices side by side: once per bucket, in bucket
// order, on the thread that called backward, each bucket final when its call comes.
TEST(Towers, BucketHookComesInOrderOnTheCallingThread) {
  Net net(ModelSpec::from_json(kTowers), {Device::cpu(0), Device::cpu(1)}, 5);
  const auto& buckets = net.gradient_buckets();
  ASSERT_EQ(buckets.size(), 2u);  // one per device: the whole model is far below the cap
  feed_images(net, 4, 3);
  net.forward(true);
  std::vector<size_t> order;
  std::vector<std::vector<float>> at_hook(buckets.size());
  std::set<std::thread::id> ids;
  net.set_bucket_ready_hook([&](size_t b) {
    order.push_back(b);
    ids.insert(std::this_thread::get_id());
    at_hook[b] = buckets[b].flat.to_vector();
  });
  net.backward();
  EXPECT_EQ(order, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
  for (size_t b = 0; b < buckets.size(); ++b) EXPECT_EQ(at_hook[b], buckets[b].flat.to_vector()) << b;
}

// The trace: a span per layer and pass on each device's track, the gradients brought across the
// towers as copies, and valid Chrome trace JSON (complete events, named tracks).
TEST(Towers, TraceHasEveryLayerOnItsDevicesTrack) {
  Net net(ModelSpec::from_json(kTowers), {Device::cpu(0), Device::cpu(1)}, 5);
  Trace trace;
  net.set_trace(&trace);
  feed_images(net, 4, 3);
  net.forward_backward();
  net.set_trace(nullptr);
  std::map<std::string, std::set<std::string>> forward_on, backward_on;  // layer -> tracks
  int copies = 0;
  for (const Trace::Span& s : trace.spans()) {
    EXPECT_LE(s.start_us, s.end_us) << s.name;
    if (s.category == "forward") forward_on[s.name].insert(s.track);
    if (s.category == "backward") backward_on[s.name].insert(s.track);
    copies += s.category == "copy";
  }
  for (Layer* layer : net.layers()) {
    if (layer->is_input()) continue;
    const std::string track = net.device_of(layer->name()).str();
    EXPECT_EQ(forward_on[layer->name()], std::set<std::string>{track}) << layer->name();
    const bool fused = layer->name().rfind("pool1", 0) == 0;  // its LRN goes back through it
    EXPECT_EQ(backward_on.count(layer->name()), fused ? 0u : 1u) << layer->name();
  }
  // Gradients cross from conv2a/b to pool1b/a, from fc3a/b to conv2b/a, from fc4 to drop3b.
  EXPECT_EQ(copies, 5);
  const auto path = std::filesystem::temp_directory_path() / "convnet_towers_trace.json";
  trace.write(path.string());
  std::ifstream in(path);
  const auto doc = nlohmann::json::parse(in);
  std::set<std::string> tracks;
  size_t complete = 0;
  for (const auto& e : doc.at("traceEvents")) {
    if (e.at("ph") == "M") tracks.insert(e.at("args").at("name").get<std::string>());
    if (e.at("ph") == "X") {
      ++complete;
      EXPECT_GE(e.at("dur").get<double>(), 0.0);
    }
  }
  EXPECT_EQ(tracks, (std::set<std::string>{"cpu:0", "cpu:1"}));
  EXPECT_EQ(complete, trace.spans().size());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace convnet::testing
