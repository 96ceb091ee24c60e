// Tests of the AlexNet augmentation (data/augment.cpp) on small hand-filled images: the ten
// test-time views pixel by pixel, centre crops at test time, random crops and reflections
// (every position reached, reflections half the time, each output exactly one window of the
// input), PCA colour noise (exactly sum_i alpha_i sqrt(lambda_i) p_i per channel,
// alpha_i ~ N(0, std): offsets of covariance std^2 times the colour covariance, not 10x more or
// less), cuda-convnet2's rescale, and mean subtraction that follows the crop and the reflection.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <vector>

#include "convnet/data.h"
#include "convnet/error.h"

namespace convnet {
namespace {

// A 1 x 4 x 5 image whose pixel values are their indices: row y holds 5y .. 5y + 4.
std::vector<float> index_image(int c = 1, int h = 4, int w = 5) {
  std::vector<float> img(size_t(c * h * w));
  for (size_t i = 0; i < img.size(); ++i) img[i] = float(i);
  return img;
}

// View v (of 10) of a {C, crop, crop, 10} tensor, as C*crop*crop CHW values.
std::vector<float> view_of(const Tensor& t, int v) {
  const auto all = t.to_vector();
  std::vector<float> out(all.size() / 10);
  for (size_t p = 0; p < out.size(); ++p) out[p] = all[p * 10 + size_t(v)];
  return out;
}

TEST(AugmentTenViews, EveryViewOfA4x5ImageExactly) {
  const auto img = index_image();
  const Tensor t = ten_views(img.data(), 1, 4, 5, 3);
  ASSERT_EQ(t.shape(), (Shape{1, 3, 3, 10}));
  // Worked out by hand from the image (row y = 5y .. 5y+4).
  const std::vector<std::vector<float>> want = {
      {0, 1, 2, 5, 6, 7, 10, 11, 12},        // top-left
      {2, 3, 4, 7, 8, 9, 12, 13, 14},        // top-right
      {5, 6, 7, 10, 11, 12, 15, 16, 17},     // bottom-left
      {7, 8, 9, 12, 13, 14, 17, 18, 19},     // bottom-right
      {1, 2, 3, 6, 7, 8, 11, 12, 13},        // centre: (4-3)/2 = 0, (5-3)/2 = 1
      {2, 1, 0, 7, 6, 5, 12, 11, 10},        // and the same five reflected
      {4, 3, 2, 9, 8, 7, 14, 13, 12},
      {7, 6, 5, 12, 11, 10, 17, 16, 15},
      {9, 8, 7, 14, 13, 12, 19, 18, 17},
      {3, 2, 1, 8, 7, 6, 13, 12, 11},
  };
  for (int v = 0; v < 10; ++v) EXPECT_EQ(view_of(t, v), want[size_t(v)]) << "view " << v;
}

TEST(AugmentTenViews, ChannelsStayApart) {
  const auto img = index_image(2, 4, 5);  // channel 1 = channel 0 + 20
  const Tensor t = ten_views(img.data(), 2, 4, 5, 2);
  ASSERT_EQ(t.shape(), (Shape{2, 2, 2, 10}));
  for (int v = 0; v < 10; ++v) {
    const auto view = view_of(t, v);
    for (int p = 0; p < 4; ++p) EXPECT_EQ(view[size_t(4 + p)], view[size_t(p)] + 20.f);
  }
  // Bottom-right of channel 1, reflected: rows 2-3, columns 4, 3.
  EXPECT_EQ(view_of(t, 8), (std::vector<float>{14, 13, 19, 18, 34, 33, 39, 38}));
}

TEST(AugmentTenViews, RejectsACropThatDoesNotFit) {
  const auto img = index_image();
  EXPECT_THROW(ten_views(img.data(), 1, 4, 5, 5), ValueError);
  EXPECT_THROW(ten_views(img.data(), 1, 4, 5, -1), ValueError);
}

std::vector<float> augment(const std::vector<float>& img, int c, int h, int w,
                           const AugmentOptions& o, const DataStats& stats, bool train,
                           uint64_t key) {
  const int oh = o.crop ? o.crop : h, ow = o.crop ? o.crop : w;
  std::vector<float> out(size_t(c * oh * ow), -12345.f);
  augment_example(img.data(), c, h, w, o, stats, train, key, out.data());
  return out;
}

// The ch x cw window at (y0, x0), reflected or not, of a C x H x W image: ((in - mean) * scale).
std::vector<float> window(const std::vector<float>& img, int c, int h, int w, int y0, int x0,
                          int crop, bool mirror, const std::vector<float>* mean = nullptr,
                          float scale = 1.f) {
  std::vector<float> out;
  for (int k = 0; k < c; ++k)
    for (int y = 0; y < crop; ++y)
      for (int x = 0; x < crop; ++x) {
        const int sx = x0 + (mirror ? crop - 1 - x : x);
        const size_t i = size_t((k * h + y0 + y) * w + sx);
        out.push_back((img[i] - (mean ? (*mean)[i] : 0.f)) * scale);
      }
  return out;
}

TEST(AugmentExample, TestTimeIsTheCentreCropUnreflected) {
  const auto img = index_image();
  AugmentOptions o;
  o.crop = 3;  // random_crop and mirror are on, but train = false
  for (uint64_t key : {0ull, 1ull, 99ull, 0xdeadbeefull})
    EXPECT_EQ(augment(img, 1, 4, 5, o, {}, false, key), window(img, 1, 4, 5, 0, 1, 3, false));
  // Training with both switched off is the centre crop too.
  o.random_crop = false;
  o.mirror = false;
  EXPECT_EQ(augment(img, 1, 4, 5, o, {}, true, 7), window(img, 1, 4, 5, 0, 1, 3, false));
  // A 6 x 6 image with crop 3: centre at (6-3)/2 = 1.
  const auto sq = index_image(1, 6, 6);
  EXPECT_EQ(augment(sq, 1, 6, 6, o, {}, false, 3), window(sq, 1, 6, 6, 1, 1, 3, false));
}

TEST(AugmentExample, CropZeroKeepsTheWholeImage) {
  const auto img = index_image(2, 4, 5);
  AugmentOptions o;
  o.mirror = false;
  EXPECT_EQ(augment(img, 2, 4, 5, o, {}, true, 5), img);
}

TEST(AugmentExample, RandomCropsReachEveryPositionAndReflectHalfTheTime) {
  const auto img = index_image();
  AugmentOptions o;
  o.crop = 3;
  std::map<std::array<int, 3>, int> seen;  // (y0, x0, mirror) -> count
  const int trials = 6000;
  for (int k = 0; k < trials; ++k) {
    const auto out = augment(img, 1, 4, 5, o, {}, true, uint64_t(k) * 7919 + 13);
    int matches = 0;
    for (int y0 = 0; y0 <= 1; ++y0)
      for (int x0 = 0; x0 <= 2; ++x0)
        for (int m = 0; m <= 1; ++m)
          if (out == window(img, 1, 4, 5, y0, x0, 3, m != 0)) {
            ++matches;
            ++seen[{y0, x0, m}];
          }
    ASSERT_EQ(matches, 1) << "key " << k << ": the output is not exactly one window";
  }
  ASSERT_EQ(seen.size(), 12u);  // 2 x 3 positions, each reflected or not
  int mirrored = 0;
  for (const auto& [where, n] : seen) {
    EXPECT_NEAR(double(n) / trials, 1.0 / 12, 0.02) << where[0] << "," << where[1] << "," << where[2];
    if (where[2]) mirrored += n;
  }
  EXPECT_NEAR(double(mirrored) / trials, 0.5, 0.03);
}

TEST(AugmentExample, SameKeySameOutputOtherKeysDiffer) {
  const auto img = index_image(3, 8, 8);
  AugmentOptions o;
  o.crop = 5;
  DataStats stats;
  stats.eigenvalues = {10.f, 5.f, 1.f};
  stats.eigenvectors = {{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}};
  o.pca_std = 0.1f;
  const auto a = augment(img, 3, 8, 8, o, stats, true, 42);
  EXPECT_EQ(a, augment(img, 3, 8, 8, o, stats, true, 42));
  int differ = 0;
  for (uint64_t k = 43; k < 53; ++k) differ += augment(img, 3, 8, 8, o, stats, true, k) != a;
  EXPECT_EQ(differ, 10);  // the colour noise alone makes every key different
}

// A rotated orthonormal RGB basis and eigenvalues, as compute_stats would give.
DataStats pca_stats(std::array<float, 3> lambda) {
  DataStats s;
  s.eigenvalues = lambda;
  const double r = 1.0 / std::sqrt(3.0), q = 1.0 / std::sqrt(2.0), t = 1.0 / std::sqrt(6.0);
  s.eigenvectors = {{{float(r), float(r), float(r)},
                     {float(q), 0.f, float(-q)},
                     {float(t), float(-2 * t), float(t)}}};
  return s;
}

// The per-channel offset the augmentation added, checking that it is the same at every pixel.
std::array<double, 3> offsets(const std::vector<float>& in, const std::vector<float>& out, int plane) {
  std::array<double, 3> d{};
  for (int c = 0; c < 3; ++c) {
    d[size_t(c)] = double(out[size_t(c * plane)]) - in[size_t(c * plane)];
    for (int p = 0; p < plane; ++p)
      EXPECT_NEAR(double(out[size_t(c * plane + p)]) - in[size_t(c * plane + p)], d[size_t(c)], 1e-4);
  }
  return d;
}

TEST(AugmentExample, PcaNoiseIsSumOfAlphaSqrtLambdaP) {
  std::vector<float> img(3 * 4 * 4);
  for (size_t i = 0; i < img.size(); ++i) img[i] = float((i * 37) % 200 + 20);
  AugmentOptions o;
  o.random_crop = false;
  o.mirror = false;
  for (float pca_std : {0.1f, 0.5f}) {
    o.pca_std = pca_std;
    const DataStats s = pca_stats({60.f, 12.f, 3.f});
    const int n = 4000;
    double sum[3] = {0, 0, 0}, sq[3] = {0, 0, 0}, cross01 = 0, dsum[3] = {0, 0, 0};
    for (int k = 0; k < n; ++k) {
      const auto out = augment(img, 3, 4, 4, o, s, true, uint64_t(k) + 1000);
      const auto d = offsets(img, out, 16);
      double alpha[3];
      for (int i = 0; i < 3; ++i) {
        // p_i are orthonormal, so alpha_i = (p_i . d) / sqrt(lambda_i).
        double dot = 0;
        for (int c = 0; c < 3; ++c) dot += double(s.eigenvectors[size_t(i)][size_t(c)]) * d[size_t(c)];
        alpha[i] = dot / std::sqrt(double(s.eigenvalues[size_t(i)]));
        sum[i] += alpha[i];
        sq[i] += alpha[i] * alpha[i];
        dsum[i] += d[size_t(i)];
      }
      cross01 += alpha[0] * alpha[1];
    }
    for (int i = 0; i < 3; ++i) {
      const double mean = sum[i] / n, sd = std::sqrt(sq[i] / n - mean * mean);
      EXPECT_NEAR(mean, 0.0, 4 * pca_std / std::sqrt(n)) << "alpha " << i;
      EXPECT_NEAR(sd, pca_std, 0.05 * pca_std) << "alpha " << i;
      EXPECT_NEAR(dsum[i] / n, 0.0, 4 * pca_std * std::sqrt(60.0) / std::sqrt(n)) << "offset of channel " << i;
    }
    EXPECT_NEAR(cross01 / n, 0.0, 4 * pca_std * pca_std / std::sqrt(n)) << "alphas correlated";
  }
}

// The magnitude, pinned: over many images the offsets' covariance is pca_std^2 times the colour
// covariance P diag(lambda) P^T, entry by entry within sampling error. Noise built from the
// eigenvalues themselves (the paper's words read literally: 60x larger along p_0 here, about 110x
// on ImageNet), or 10x too large or too small, fails it by far.
TEST(AugmentExample, PcaNoiseCovarianceIsPcaStdSquaredTimesTheColourCovariance) {
  const std::array<float, 3> lambda{3600.f, 400.f, 100.f};  // colour sds 60, 20, 10 levels
  const DataStats s = pca_stats(lambda);
  std::vector<float> img(3 * 2 * 2, 128.f);
  AugmentOptions o;
  o.random_crop = false;
  o.mirror = false;
  o.pca_std = 0.1f;
  const int n = 20000;
  double m[3] = {0, 0, 0}, c[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
  for (int k = 0; k < n; ++k) {
    const auto d = offsets(img, augment(img, 3, 2, 2, o, s, true, uint64_t(k) * 7919 + 3), 4);
    for (int a = 0; a < 3; ++a) {
      m[a] += d[size_t(a)];
      for (int b = 0; b < 3; ++b) c[a][b] += d[size_t(a)] * d[size_t(b)];
    }
  }
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) {
      double want = 0;
      for (int i = 0; i < 3; ++i)
        want += double(lambda[size_t(i)]) * s.eigenvectors[size_t(i)][size_t(a)] * s.eigenvectors[size_t(i)][size_t(b)];
      want *= 0.01;  // pca_std^2
      const double got = c[a][b] / n - (m[a] / n) * (m[b] / n);
      // Sampling error of a covariance from n gaussian draws is about sqrt(2 / n) = 1% of the
      // variances; 5% of the largest is four of those.
      EXPECT_NEAR(got, want, 0.05 * 0.01 * lambda[0]) << "covariance entry " << a << "," << b;
    }
  // The total variance (trace) within 5%, and so nowhere near 10x too large or too small.
  double trace = 0;
  for (int a = 0; a < 3; ++a) trace += c[a][a] / n - (m[a] / n) * (m[a] / n);
  const double want_trace = 0.01 * (3600.0 + 400.0 + 100.0);
  EXPECT_NEAR(trace / want_trace, 1.0, 0.05);
}

TEST(AugmentExample, PcaRescaleDividesTrainingInputsByOnePlusPcaStd) {
  const DataStats s = pca_stats({60.f, 12.f, 3.f});
  std::vector<float> img(3 * 4 * 4);
  for (size_t i = 0; i < img.size(); ++i) img[i] = float((i * 53) % 240 + 5);
  AugmentOptions o;
  o.random_crop = false;
  o.mirror = false;
  o.pca_std = 0.25f;
  o.mean_value = 100.f;
  o.scale = 0.5f;
  const auto plain = augment(img, 3, 4, 4, o, s, true, 77);
  o.pca_rescale = true;
  const auto rescaled = augment(img, 3, 4, 4, o, s, true, 77);
  for (size_t i = 0; i < img.size(); ++i)
    EXPECT_NEAR(rescaled[i], plain[i] / 1.25f, 1e-5f * std::fabs(plain[i]) + 1e-6f) << i;
  // Not at test time, and not without noise: the rescale goes with the noise.
  EXPECT_EQ(augment(img, 3, 4, 4, o, s, false, 77), [&] {
    AugmentOptions t = o;
    t.pca_rescale = false;
    return augment(img, 3, 4, 4, t, s, false, 77);
  }());
}

TEST(AugmentExample, PcaNoiseWithOneEigenvalueIsAlongItsVector) {
  std::vector<float> img(3 * 3 * 3);
  for (size_t i = 0; i < img.size(); ++i) img[i] = float(100 + i);
  AugmentOptions o;
  o.random_crop = false;
  o.mirror = false;
  o.pca_std = 0.3f;
  for (int which = 0; which < 3; ++which) {
    std::array<float, 3> lambda{0.f, 0.f, 0.f};
    lambda[size_t(which)] = 40.f;
    const DataStats s = pca_stats(lambda);
    const auto& p = s.eigenvectors[size_t(which)];
    for (uint64_t k = 0; k < 50; ++k) {
      const auto d = offsets(img, augment(img, 3, 3, 3, o, s, true, k), 9);
      const double along = d[0] * p[0] + d[1] * p[1] + d[2] * p[2];
      for (int c = 0; c < 3; ++c) EXPECT_NEAR(d[size_t(c)], along * p[size_t(c)], 1e-4);
      EXPECT_GT(std::fabs(along), 0.0);
    }
  }
}

TEST(AugmentExample, NoPcaNoiseAtTestTimeAndGreyImagesRefuseIt) {
  const DataStats s = pca_stats({60.f, 12.f, 3.f});
  AugmentOptions o;
  o.random_crop = false;
  o.mirror = false;
  o.pca_std = 0.5f;
  std::vector<float> rgb(3 * 4 * 4);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = float(i) * 1.5f;
  EXPECT_EQ(augment(rgb, 3, 4, 4, o, s, false, 9), rgb);
  const auto grey = index_image(1, 4, 4);
  EXPECT_EQ(augment(grey, 1, 4, 4, o, s, false, 9), grey);
  // In training the noise would silently be nothing: refused, as the Pipeline does.
  EXPECT_THROW(augment(grey, 1, 4, 4, o, s, true, 9), ValueError);
  DataStats negative = s;
  negative.eigenvalues[2] = -1.f;
  EXPECT_THROW(augment(rgb, 3, 4, 4, o, negative, true, 9), ValueError);
}

TEST(AugmentExample, MeanImageFollowsTheCropAndReflection) {
  const int c = 2, h = 4, w = 5;
  const auto img = index_image(c, h, w);
  DataStats s;
  s.mean.resize(img.size());
  for (size_t i = 0; i < s.mean.size(); ++i) s.mean[i] = float(i * i % 17) * 0.25f + 0.5f;
  AugmentOptions o;
  o.crop = 3;
  o.subtract_mean_image = true;
  o.mean_value = 1000.f;  // ignored when subtracting the mean image
  o.scale = 0.5f;
  int mirrored = 0, tried = 0;
  for (uint64_t k = 0; k < 300; ++k) {
    const auto out = augment(img, c, h, w, o, s, true, k * 31 + 1);
    int matches = 0;
    for (int y0 = 0; y0 <= 1; ++y0)
      for (int x0 = 0; x0 <= 2; ++x0)
        for (int m = 0; m <= 1; ++m)
          if (out == window(img, c, h, w, y0, x0, 3, m != 0, &s.mean, 0.5f)) {
            ++matches;
            mirrored += m;
          }
    ASSERT_EQ(matches, 1) << "key " << k;
    ++tried;
  }
  EXPECT_GT(mirrored, 0);
  EXPECT_LT(mirrored, tried);
  // Test time: the centre window of both.
  EXPECT_EQ(augment(img, c, h, w, o, s, false, 0), window(img, c, h, w, 0, 1, 3, false, &s.mean, 0.5f));
  // The scalar mean instead.
  o.subtract_mean_image = false;
  o.mean_value = 3.5f;
  o.scale = 2.f;
  const std::vector<float> flat(img.size(), 3.5f);
  EXPECT_EQ(augment(img, c, h, w, o, s, false, 0), window(img, c, h, w, 0, 1, 3, false, &flat, 2.f));
}

TEST(AugmentExample, RejectsBadOptions) {
  const auto img = index_image();
  AugmentOptions o;
  o.crop = 5;  // taller than 4
  std::vector<float> out(100);
  EXPECT_THROW(augment_example(img.data(), 1, 4, 5, o, {}, true, 0, out.data()), ValueError);
  o.crop = 3;
  o.subtract_mean_image = true;  // without a mean image
  EXPECT_THROW(augment_example(img.data(), 1, 4, 5, o, {}, true, 0, out.data()), ValueError);
}

// ---- VGG's scales: jittering in training, a test scale ----

// f(y, x) = 2y + 3x on an h x w grid: bilinear interpolation reproduces it exactly (in the clamped
// coordinates), so every output pixel has a value known in closed form.
std::vector<float> ramp(int h, int w) {
  std::vector<float> img(size_t(h * w));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) img[size_t(y * w + x)] = float(2 * y + 3 * x);
  return img;
}

// Where output index i of an axis rescaled from n to m samples reads (the clamped source position).
double source_position(int i, int n, int m) {
  return std::clamp((i + 0.5) * n / m - 0.5, 0.0, double(n - 1));
}

TEST(AugmentScales, JitteringToTheImagesOwnSizeIsThePlainCrop) {
  const auto img = index_image(2, 6, 6);
  AugmentOptions plain;
  plain.crop = 4;
  AugmentOptions jitter = plain;
  jitter.jitter_min = jitter.jitter_max = 6;
  for (uint64_t key : {1ull, 2ull, 77ull, 12345ull})
    EXPECT_EQ(augment(img, 2, 6, 6, jitter, {}, true, key), augment(img, 2, 6, 6, plain, {}, true, key));
}

TEST(AugmentScales, AnUpscaledCentreCropIsTheBilinearImage) {
  // 8x8 -> 16x16 (S = 16), the centre 12x12 crop at (2, 2): pixel (y, x) reads source position
  // ((2 + y + 0.5) * 8/16 - 0.5) in each axis, clamped; the ramp gives its value exactly.
  const auto img = ramp(8, 8);
  AugmentOptions o;
  o.crop = 12;
  o.random_crop = false;
  o.mirror = false;
  o.jitter_min = o.jitter_max = 16;
  const auto train = augment(img, 1, 8, 8, o, {}, true, 3);
  o.test_scale = 16;  // the same rescale and centre crop, as the single-scale test
  const auto test = augment(img, 1, 8, 8, o, {}, false, 3);
  for (int y = 0; y < 12; ++y)
    for (int x = 0; x < 12; ++x) {
      const double want = 2 * source_position(2 + y, 8, 16) + 3 * source_position(2 + x, 8, 16);
      ASSERT_NEAR(train[size_t(y * 12 + x)], want, 1e-5) << y << "," << x;
      ASSERT_EQ(test[size_t(y * 12 + x)], train[size_t(y * 12 + x)]);
    }
  // A downscale of a 2:1 image: the shorter side becomes S, the longer one keeps the aspect.
  const auto wide = ramp(10, 20);
  o.crop = o.jitter_min = o.jitter_max = o.test_scale = 5;
  const auto small = augment(wide, 1, 10, 20, o, {}, false, 0);  // resized to 5 x 10, crop at (0, 2)
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 5; ++x)
      ASSERT_NEAR(small[size_t(y * 5 + x)], 2 * source_position(y, 10, 5) + 3 * source_position(2 + x, 20, 10), 1e-5);
}

TEST(AugmentScales, EachImageDrawsItsScaleFromTheRange) {
  // The horizontal step of the ramp after rescaling to S is 3 * 8 / S: it tells S back.
  const auto img = ramp(8, 8);
  AugmentOptions o;
  o.crop = 8;
  o.mirror = false;
  o.jitter_min = 10;
  o.jitter_max = 14;
  std::map<int, int> scales;
  for (uint64_t key = 0; key < 400; ++key) {
    const auto out = augment(img, 1, 8, 8, o, {}, true, key);
    const double step = out[size_t(3 * 8 + 4)] - out[size_t(3 * 8 + 3)];  // an interior pair
    const int s = int(std::lround(24.0 / step));
    ASSERT_NEAR(step, 24.0 / s, 1e-4) << "key " << key;
    ++scales[s];
    EXPECT_EQ(augment(img, 1, 8, 8, o, {}, true, key), out) << "a key gives one augmentation";
  }
  ASSERT_EQ(scales.size(), 5u);  // 10, 11, 12, 13, 14, each about a fifth of the time
  EXPECT_EQ(scales.begin()->first, 10);
  EXPECT_EQ(scales.rbegin()->first, 14);
  for (const auto& [s, n] : scales) EXPECT_GT(n, 50) << "scale " << s;
}

TEST(AugmentScales, RejectsWhatCannotWork) {
  const auto img = ramp(8, 8);
  std::vector<float> out(400);
  AugmentOptions o;
  o.jitter_min = 10;
  o.jitter_max = 12;
  EXPECT_THROW(augment_example(img.data(), 1, 8, 8, o, {}, true, 0, out.data()), ValueError);  // no crop
  o.crop = 11;  // larger than the smallest scale
  EXPECT_THROW(augment_example(img.data(), 1, 8, 8, o, {}, true, 0, out.data()), ValueError);
  o.crop = 8;
  o.subtract_mean_image = true;  // the mean image has the source's size
  EXPECT_THROW(augment_example(img.data(), 1, 8, 8, o, {}, true, 0, out.data()), ValueError);
}

}  // namespace
}  // namespace convnet
