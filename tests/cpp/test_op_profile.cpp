// The per-op profile inside layers (convnet/op_profile.h): while a net profiles, each conv and fc
// layer's passes carry their GEMMs, im2col, col2im, bias and neuron with call counts and the
// work each did, counted here by hand from the shapes.
#include <map>
#include <string>

#include "convnet/net.h"
#include "convnet/op_profile.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

// c1: 3 -> 8 channels, 12 x 12 output in chunks of 5 rows (5, 5, 2); reads the input, so its
// backward has no data gradient. c2: 8 -> 6 channels, stride 2, 6 x 6 output in chunks of 4 (4, 2).
const char* kNet = R"([
  {"name":"data","type":"input","channels":3,"size":12},
  {"name":"labels","type":"labels"},
  {"name":"c1","type":"conv","inputs":["data"],"filters":8,"size":3,"padding":1,"neuron":"relu","chunk_rows":5,"initW":0.2},
  {"name":"c2","type":"conv","inputs":["c1"],"filters":6,"size":3,"stride":2,"padding":1,"neuron":"tanh","chunk_rows":4,"initW":0.2},
  {"name":"f1","type":"fc","inputs":["c2"],"outputs":5,"initW":0.1},
  {"name":"cost","type":"softmax_cost","inputs":["f1","labels"]}
])";
constexpr int kBatch = 4;

void feed(Net& net, uint32_t seed) {
  Tensor x({3, 12, 12, kBatch}, Device::cpu());
  x.copy_from_host(random_vector(size_t(x.numel()), seed).data());
  net.set_input("data", x);
  Tensor labels({kBatch}, Device::cpu());
  labels.copy_from_host(std::vector<float>{0, 1, 2, 3}.data());
  net.set_input("labels", labels);
}

std::map<std::string, Net::LayerTime> times_by_layer(const Net& net) {
  std::map<std::string, Net::LayerTime> out;
  for (const auto& t : net.layer_times()) out[t.layer] = t;
  return out;
}

// The pass ran `calls` GEMMs doing `flop` in all.
void expect_gemms(const OpTimes& ops, int64_t calls, double flop) {
  ASSERT_TRUE(ops.count("gemm"));
  EXPECT_EQ(ops.at("gemm").calls, calls);
  EXPECT_DOUBLE_EQ(ops.at("gemm").flop, flop);
}

double summed_ms(const OpTimes& ops) {
  double ms = 0;
  for (const auto& [op, t] : ops) ms += t.ms;
  return ms;
}

TEST(OpProfile, ConvAndFcPassesCarryTheirOpsWithTheirWork) {
  Net net(ModelSpec::from_json(kNet), {}, 3);
  net.set_profiling(true);
  const int steps = 2;
  for (int s = 0; s < steps; ++s) {
    feed(net, 10 + s);
    net.forward_backward();
  }
  auto times = times_by_layer(net);
  const double b = kBatch;

  // c1 forward: 3 chunks, each an im2col and a GEMM; then one bias + neuron pass.
  const OpTimes& c1f = times["c1"].forward_ops;
  const double c1_flop = 2.0 * 8 * 27 * 144 * b;
  ASSERT_TRUE(c1f.count("gemm") && c1f.count("im2col") && c1f.count("bias_neuron_forward"));
  expect_gemms(c1f, 3 * steps, c1_flop * steps);
  EXPECT_EQ(c1f.at("im2col").calls, 3 * steps);
  EXPECT_EQ(c1f.at("im2col").flop, 0);
  // Columns written (27 rows x 144 positions x batch) plus the input rows each chunk reads:
  // rows [0, 6), [4, 11) and [9, 12) of 3 channels of 12 x batch.
  EXPECT_DOUBLE_EQ(c1f.at("im2col").bytes, steps * 4.0 * (27 * 144 * b + 3 * 12 * b * (6 + 7 + 3)));
  EXPECT_EQ(c1f.at("bias_neuron_forward").calls, steps);
  EXPECT_DOUBLE_EQ(c1f.at("bias_neuron_forward").bytes, steps * 8.0 * 8 * 144 * b);
  EXPECT_EQ(c1f.count("col2im"), 0u);

  // c1 backward: the weight gradient only (nobody needs the input's gradient).
  const OpTimes& c1b = times["c1"].backward_ops;
  ASSERT_TRUE(c1b.count("gemm") && c1b.count("im2col") && c1b.count("bias_backward"));
  expect_gemms(c1b, 3 * steps, c1_flop * steps);
  EXPECT_EQ(c1b.count("col2im"), 0u);
  EXPECT_EQ(c1b.at("bias_backward").calls, steps);

  // c2: 2 chunks; its backward makes the weight and the data gradients, the latter through col2im.
  const OpTimes& c2f = times["c2"].forward_ops;
  const OpTimes& c2b = times["c2"].backward_ops;
  const double c2_flop = 2.0 * 6 * 72 * 36 * b;
  ASSERT_TRUE(c2f.count("gemm") && c2b.count("gemm") && c2b.count("col2im"));
  expect_gemms(c2f, 2 * steps, c2_flop * steps);
  expect_gemms(c2b, 4 * steps, 2 * c2_flop * steps);
  EXPECT_EQ(c2b.at("col2im").calls, 2 * steps);
  ASSERT_TRUE(c2b.count("neuron_backward"));
  EXPECT_EQ(c2b.at("neuron_backward").calls, steps);

  // f1: one GEMM forward, two backward (weights and data); no im2col.
  const OpTimes& f1f = times["f1"].forward_ops;
  const OpTimes& f1b = times["f1"].backward_ops;
  const double f1_flop = 2.0 * 5 * 216 * b;
  ASSERT_TRUE(f1f.count("gemm") && f1b.count("gemm"));
  expect_gemms(f1f, steps, f1_flop * steps);
  expect_gemms(f1b, 2 * steps, 2 * f1_flop * steps);
  EXPECT_EQ(f1f.count("im2col"), 0u);

  // The ops happen inside their layer's time; layers without such ops carry none.
  for (const auto& [layer, t] : times) {
    EXPECT_LE(summed_ms(t.forward_ops), t.forward_ms + 1e-6) << layer;
    EXPECT_LE(summed_ms(t.backward_ops), t.backward_ms + 1e-6) << layer;
    for (const auto& [op, time] : t.forward_ops) EXPECT_GT(time.bytes, 0) << layer << " " << op;
  }
  EXPECT_TRUE(times["cost"].forward_ops.empty());

  // Turning profiling on again starts from zero; with it off nothing is recorded.
  net.set_profiling(true);
  net.set_profiling(false);
  feed(net, 20);
  net.forward_backward();
  for (const auto& [layer, t] : times_by_layer(net)) {
    EXPECT_TRUE(t.forward_ops.empty() && t.backward_ops.empty()) << layer;
    EXPECT_EQ(t.forward_calls, 0) << layer;
  }
}

TEST(OpProfile, OpsOutsideAProfiledLayerAreNotRecorded) {
  // A scope with no sink (what the net sets when it does not profile) records nothing, and an
  // inner scope's sink ends with it.
  OpTimes outer, inner;
  {
    const OpProfileScope a(&outer);
    { const OpTimer t("gemm", Device::cpu(), 2, 3); }
    {
      const OpProfileScope b(&inner);
      { const OpTimer t("im2col", Device::cpu(), 0, 5); }
      {
        const OpProfileScope none(nullptr);
        const OpTimer t("col2im", Device::cpu(), 0, 7);
      }
    }
    {
      // An op timed inside another counts in the outer one only.
      const OpTimer t("gemm", Device::cpu(), 2, 3);
      const OpTimer nested("im2col", Device::cpu(), 0, 11);
    }
  }
  { const OpTimer t("gemm", Device::cpu(), 2, 3); }  // no scope: nowhere
  ASSERT_EQ(outer.size(), 1u);
  EXPECT_EQ(outer["gemm"].calls, 2);
  EXPECT_DOUBLE_EQ(outer["gemm"].flop, 4);
  EXPECT_DOUBLE_EQ(outer["gemm"].bytes, 6);
  ASSERT_EQ(inner.size(), 1u);
  EXPECT_EQ(inner["im2col"].calls, 1);
  EXPECT_DOUBLE_EQ(inner["im2col"].bytes, 5);
}

}  // namespace
}  // namespace convnet::testing
