// CPU dropout: the Philox generator against Random123's known answers, the mask and scaling
// against a float64 reference, the statistics of the mask, and the backward pass (the same call
// on the gradient) against finite differences.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "convnet/error.h"
#include "convnet/net.h"
#include "convnet/ops.h"
#include "convnet/philox.h"
#include "cpu/cpu_ops.h"
#include "test_util.h"

namespace convnet {
namespace {

using testing::expect_close;
using testing::numeric_gradient;
using testing::random_vector;
using testing::to_double;
using testing::weighted_sum;

// Known-answer vectors of Philox4x32-10 from Random123's kat_vectors (counter, key, result).
TEST(Philox, KnownAnswers) {
  struct Kat {
    uint32_t c[4], k[2], want[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& t : kats) {
    Philox4 r = philox4x32_10(t.c[0], t.c[1], t.c[2], t.c[3], t.k[0], t.k[1]);
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(r.v[i], t.want[i]) << "counter word0 " << std::hex << t.c[0] << " output " << i;
  }
}

// philox_uniform's documented layout: element i is word i % 4 of the block for counter
// (i / 4, step), key seed, scaled from its top 24 bits into [0, 1).
TEST(Philox, UniformLayout) {
  const uint64_t seed = 0x123456789abcdefull, step = 0xfedcba9876ull;
  for (uint64_t i : {0ull, 1ull, 2ull, 3ull, 4ull, 7ull, 1001ull, (1ull << 34) + 6}) {
    uint64_t b = i / 4;
    Philox4 r = philox4x32_10(uint32_t(b), uint32_t(b >> 32), uint32_t(step), uint32_t(step >> 32),
                              uint32_t(seed), uint32_t(seed >> 32));
    double want = double(r.v[i % 4] >> 8) / 16777216.0;
    float u = philox_uniform(seed, step, i);
    EXPECT_EQ(double(u), want) << "index " << i;
    EXPECT_GE(u, 0.f);
    EXPECT_LT(u, 1.f);
  }
}

// out[i] = in[i] / (1 - rate) where philox_uniform(seed, step, i) >= rate, else 0; in float64.
std::vector<double> ref_dropout(const std::vector<double>& in, double rate, uint64_t seed,
                                uint64_t step) {
  std::vector<double> out(in.size());
  for (size_t i = 0; i < in.size(); ++i)
    out[i] = philox_uniform(seed, step, i) >= float(rate) ? in[i] / (1 - rate) : 0.0;
  return out;
}

std::vector<float> run(const std::vector<float>& in, float rate, uint64_t seed, uint64_t step) {
  std::vector<float> out(in.size(), std::nanf(""));  // garbage: must not be read
  cpu::dropout_apply(in.data(), out.data(), int64_t(in.size()), rate, seed, step, false, 0, 0, 0);
  return out;
}

TEST(CpuDropout, MatchesReference) {
  uint32_t data_seed = 1;
  // Odd sizes that end partway through a Philox block of four, and a large one (parallel path).
  for (size_t n : {size_t(1), size_t(2), size_t(3), size_t(5), size_t(7), size_t(1023),
                   size_t(100003)}) {
    for (float rate : {0.1f, 0.5f, 0.75f}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " rate=" + std::to_string(rate));
      auto in = random_vector(n, data_seed++, -2.f, 2.f);
      const uint64_t seed = 0x5eedull + n, step = 17;
      auto out = run(in, rate, seed, step);
      expect_close(out, ref_dropout(to_double(in), rate, seed, step), 1e-6, 0, "dropout");
    }
  }
}

// Data parallelism: a shard of a global batch draws each example's mask by its place in the
// global batch, so shards side by side drop what the whole batch drops (rows of any width: the
// shards start anywhere in a Philox block of four).
TEST(CpuDropout, ShardsSideBySideDropWhatTheWholeBatchDrops) {
  for (int batch : {6, 24, 130}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    const Shape whole_shape = {7, 3, 2, batch};
    Tensor whole({whole_shape}, Device::cpu()), whole_out(whole_shape, Device::cpu());
    const auto values = random_vector(size_t(whole.numel()), uint32_t(batch), -2.f, 2.f);
    whole.copy_from_host(values.data());
    dropout_apply(whole, whole_out, 0.5f, 99, 5, false);
    const auto want = whole_out.to_vector();
    const int64_t rows = whole.numel() / batch;
    for (int shards : {2, 3}) {
      for (int s = 0; s < shards; ++s) {
        const int first = s * batch / shards, n = (s + 1) * batch / shards - first;
        Tensor part({7, 3, 2, n}, Device::cpu()), part_out({7, 3, 2, n}, Device::cpu());
        std::vector<float> v(size_t(part.numel()));
        for (int64_t r = 0; r < rows; ++r)
          for (int c = 0; c < n; ++c) v[size_t(r * n + c)] = values[size_t(r * batch + first + c)];
        part.copy_from_host(v.data());
        dropout_apply(part, part_out, 0.5f, 99, 5, false, BatchShard{first, batch});
        const auto got = part_out.to_vector();
        for (int64_t r = 0; r < rows; ++r)
          for (int c = 0; c < n; ++c)
            ASSERT_EQ(got[size_t(r * n + c)], want[size_t(r * batch + first + c)])
                << shards << " shards, shard " << s << ", row " << r << ", example " << c;
      }
    }
  }
  Tensor x({2, 1, 1, 8}, Device::cpu()), y({2, 1, 1, 8}, Device::cpu());
  x.fill(1.f);
  convnet::testing::expect_throw_containing<ValueError>(
      [&] { dropout_apply(x, y, 0.5f, 1, 1, false, BatchShard{4, 10}); }, "does not fit a global batch of 10");
}

TEST(CpuDropout, KeptValuesScaledAndDroppedValuesZero) {
  const size_t n = 4099;
  auto in = random_vector(n, 2, 0.5f, 1.5f);  // never zero, so a zero output means dropped
  const float rate = 0.4f;
  auto out = run(in, rate, 99, 3);
  size_t kept = 0;
  for (size_t i = 0; i < n; ++i) {
    if (out[i] == 0.f) continue;
    ++kept;
    ASSERT_NEAR(double(out[i]), double(in[i]) / 0.6, 1e-6) << "element " << i;
  }
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, n);
}

TEST(CpuDropout, SameSeedAndStepGiveSameMaskOtherwiseDifferent) {
  const size_t n = 10001;
  auto in = random_vector(n, 3, 0.5f, 1.5f);
  auto a = run(in, 0.5f, 7, 11);
  auto b = run(in, 0.5f, 7, 11);
  ASSERT_EQ(0, std::memcmp(a.data(), b.data(), n * sizeof(float)));

  auto differs = [&](const std::vector<float>& x, const std::vector<float>& y) {
    size_t d = 0;
    for (size_t i = 0; i < n; ++i) d += (x[i] == 0.f) != (y[i] == 0.f);
    return d;
  };
  // Independent masks of rate 0.5 disagree on about half the elements.
  auto other_step = run(in, 0.5f, 7, 12);
  auto other_seed = run(in, 0.5f, 8, 11);
  auto high_step = run(in, 0.5f, 7, 11 + (1ull << 32));  // the step's upper word counts too
  auto high_seed = run(in, 0.5f, 7 + (1ull << 32), 11);  // and the seed's
  for (const auto* v : {&other_step, &other_seed, &high_step, &high_seed}) {
    size_t d = differs(a, *v);
    EXPECT_GT(d, n * 4 / 10);
    EXPECT_LT(d, n * 6 / 10);
  }
}

TEST(CpuDropout, KeptFractionIsOneMinusRate) {
  const size_t n = 1000000;
  auto in = random_vector(n, 4, 0.5f, 1.5f);
  for (float rate : {0.5f, 0.2f, 0.9f}) {
    SCOPED_TRACE("rate=" + std::to_string(rate));
    auto out = run(in, rate, 2024, 5);
    size_t kept = 0;
    for (float v : out) kept += v != 0.f;
    const double p = 1.0 - rate, se = std::sqrt(p * (1 - p) / double(n));
    EXPECT_NEAR(double(kept) / double(n), p, 5 * se);
    // Inverted dropout keeps the mean: sum(out) ~ sum(in).
    double sum_in = 0, sum_out = 0;
    for (size_t i = 0; i < n; ++i) {
      sum_in += in[i];
      sum_out += out[i];
    }
    EXPECT_NEAR(sum_out / sum_in, 1.0, 6 * std::sqrt((1 - p) / p / double(n)) * 1.2);
    // The whole large output matches the reference too (parallel path).
    expect_close(out, ref_dropout(to_double(in), rate, 2024, 5), 1e-6, 0, "large");
  }
}

// The backward pass is the same call on dy: check it against finite differences of the
// float64 forward, with dy = w.
TEST(CpuDropout, BackwardMatchesFiniteDifferences) {
  for (size_t n : {size_t(1), size_t(6), size_t(301)}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const float rate = 0.5f;
    const uint64_t seed = 31337, step = 2;
    auto x = random_vector(n, 5 + uint32_t(n));
    auto w = random_vector(n, 6 + uint32_t(n));
    auto dx = run(w, rate, seed, step);
    const auto wd = to_double(w);
    auto want = numeric_gradient(
        [&](const std::vector<double>& xx) {
          return weighted_sum(ref_dropout(xx, rate, seed, step), wd);
        },
        to_double(x));
    expect_close(dx, want, 1e-5, 1e-7, "dropout backward");
  }
}

TEST(CpuDropout, Accumulate) {
  for (float rate : {0.f, 0.3f}) {
    SCOPED_TRACE("rate=" + std::to_string(rate));
    const size_t n = 777;
    auto dy = random_vector(n, 7);
    auto base = random_vector(n, 8, -3.f, 3.f);
    auto acc = base;
    cpu::dropout_apply(dy.data(), acc.data(), int64_t(n), rate, 1, 2, true, 0, 0, 0);
    auto want = ref_dropout(to_double(dy), rate, 1, 2);
    for (size_t i = 0; i < n; ++i) want[i] += base[i];
    expect_close(acc, want, 1e-6, 1e-6, "accumulate");
  }
}

TEST(CpuDropout, RateZeroIsACopy) {
  for (size_t n : {size_t(1), size_t(5), size_t(70001)}) {
    auto in = random_vector(n, 9 + uint32_t(n));
    auto out = run(in, 0.f, 1, 1);
    ASSERT_EQ(0, std::memcmp(in.data(), out.data(), n * sizeof(float))) << "n=" << n;
  }
}

// The layer's two rules. Inverted (the default, cuda-convnet2's dropout): kept units times
// 1 / (1 - rate) in training, the identity at test time. The paper's (inverted=false, dropout2):
// kept units unscaled in training, everything times 1 - rate at test time. The same mask goes
// into the gradient; enable=false acts as at test time in training too.
struct DropoutNet {
  Net net;
  std::vector<float> x;
  explicit DropoutNet(const std::string& options)
      : net(ModelSpec::from_json(R"([{"name":"data","type":"input","channels":3,"size":6},
            {"name":"drop","type":"dropout","inputs":["data"],"rate":0.4)" + options + R"(}])")) {
    x = random_vector(3 * 6 * 6 * 5, 21, 0.5f, 1.5f);  // never zero: a zero output was dropped
    Tensor t({3, 6, 6, 5}, Device::cpu());
    t.copy_from_host(x.data());
    net.set_input("data", t);
    net.set_input_grad("data", true);
  }
  std::vector<float> forward(bool train) {
    net.forward(train);
    return net.output("drop").to_vector();
  }
  std::vector<float> backward(const std::vector<float>& dy) {
    Tensor t({3, 6, 6, 5}, Device::cpu());
    t.copy_from_host(dy.data());
    net.backward({{"drop", t}});
    return net.input_grad("data").to_vector();
  }
};

TEST(DropoutLayer, InvertedAndThePapersRuleScaleInDifferentPasses) {
  for (const bool inverted : {true, false}) {
    SCOPED_TRACE(inverted ? "inverted" : "the paper's");
    DropoutNet d(std::string(R"(,"inverted":)") + (inverted ? "true" : "false"));
    const std::vector<float> train = d.forward(true);
    const std::vector<float> dy = random_vector(train.size(), 22, -1.f, 1.f);
    const std::vector<float> dx = d.backward(dy);
    const double kept_scale = inverted ? 1.0 / 0.6 : 1.0;
    size_t kept = 0;
    for (size_t i = 0; i < train.size(); ++i) {
      if (train[i] == 0.f) {
        ASSERT_EQ(dx[i], 0.f) << "a dropped unit passes no gradient, element " << i;
        continue;
      }
      ++kept;
      ASSERT_NEAR(train[i], d.x[i] * kept_scale, 1e-6) << "element " << i;
      ASSERT_NEAR(dx[i], dy[i] * kept_scale, 1e-6) << "element " << i;
    }
    EXPECT_NEAR(double(kept) / double(train.size()), 0.6, 0.05);
    const std::vector<float> test = d.forward(false);
    const std::vector<float> dx_test = d.backward(dy);
    for (size_t i = 0; i < test.size(); ++i) {
      ASSERT_NEAR(test[i], d.x[i] * (inverted ? 1.0 : 0.6), 1e-6) << "element " << i;
      ASSERT_NEAR(dx_test[i], dy[i] * (inverted ? 1.0 : 0.6), 1e-6) << "element " << i;
    }
  }
}

TEST(DropoutLayer, DisabledActsAsAtTestTime) {
  for (const char* rule : {"true", "false"}) {
    DropoutNet d(std::string(R"(,"enable":false,"inverted":)") + rule);
    EXPECT_EQ(d.forward(true), d.forward(false)) << "inverted=" << rule;
  }
}

}  // namespace
}  // namespace convnet
