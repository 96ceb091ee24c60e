// The AlexNet augmentation of one example (random crop, horizontal reflection, PCA colour
// noise, mean subtraction, scaling) and the ten test-time views. All randomness comes from a
// counter-based hash of the example's key, so an example's augmentation depends on its key
// alone: not on the thread, nor on what was drawn before.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <stdexcept>  // before data.h, which uses std::runtime_error without it

#include "convnet/data.h"
#include "convnet/error.h"
#include "data/augment_plan.h"
#include "data/hash.h"

namespace convnet {
namespace {

// The k-th random word of the stream of `key`. Fixed slots, so (say) turning PCA noise on does
// not change which crop an example gets.
enum Slot : uint64_t {
  kCropY = 0, kCropX = 1, kMirror = 2, kPca = 3 /* 3..6: two Box-Muller pairs */, kScale = 7
};
uint64_t draw(uint64_t key, uint64_t slot) { return splitmix64(key + slot); }

// Integer in [0, n) (multiply-high of the top 32 bits; n is an image side, far below 2^32).
int bounded(uint64_t h, int n) { return int(((h >> 32) * uint64_t(n)) >> 32); }

// Uniform in (0, 1] and in [0, 1) from the top 53 bits.
double uniform_open0(uint64_t h) { return double((h >> 11) + 1) * 0x1.0p-53; }
double uniform(uint64_t h) { return double(h >> 11) * 0x1.0p-53; }

// Two independent standard normals by Box-Muller.
void box_muller(uint64_t h1, uint64_t h2, double& z0, double& z1) {
  const double r = std::sqrt(-2.0 * std::log(uniform_open0(h1)));
  const double t = 6.283185307179586 * uniform(h2);
  z0 = r * std::cos(t);
  z1 = r * std::sin(t);
}

constexpr float kNoOffset[3] = {0.f, 0.f, 0.f};

// Writes the ch x cw window at (y0, x0) of a C x H x W image, reflected left-right when
// `mirror`, as augmented_value(in, offset[c], mean, scale), where mean is the same window of
// `mean_image` (same reflection) or else `mean_value`.
void write_window(const float* chw, int channels, int height, int width, int y0, int x0, int ch,
                  int cw, bool mirror, const float* offset, const float* mean_image,
                  float mean_value, float scale, float* out) {
  const size_t plane = size_t(height) * size_t(width);
  for (int c = 0; c < channels; ++c) {
    const float add = c < 3 ? offset[c] : 0.f;
    for (int y = 0; y < ch; ++y) {
      const size_t row = size_t(c) * plane + size_t(y0 + y) * size_t(width) + size_t(x0);
      const float* src = chw + row;
      const float* mean = mean_image ? mean_image + row : nullptr;
      float* dst = out + (size_t(c) * size_t(ch) + size_t(y)) * size_t(cw);
      for (int x = 0; x < cw; ++x) {
        const int sx = mirror ? cw - 1 - x : x;
        dst[x] = augmented_value(src[sx], add, mean ? mean[sx] : mean_value, scale);
      }
    }
  }
}

}  // namespace

bool rescales(const AugmentOptions& o, bool train) {
  return train ? o.jitter_max > 0 : o.test_scale > 0;
}

// Bilinear taps of output index i of an axis rescaled from `in` to `out` samples (pixel centres
// aligned, clamped at the edges): the two source indices and the second one's weight.
struct Tap {
  int lo, hi;
  double w;
};
static Tap tap(int i, int in, int out) {
  double pos = (double(i) + 0.5) * double(in) / double(out) - 0.5;
  pos = std::clamp(pos, 0.0, double(in - 1));
  const int lo = int(pos);
  return {lo, std::min(lo + 1, in - 1), pos - double(lo)};
}

void write_rescaled_window(const float* chw, int channels, int height, int width,
                           const AugmentPlan& p, float mean_value, float scale, float* out) {
  const size_t plane = size_t(height) * size_t(width);
  std::vector<Tap> xs(size_t(p.width));
  for (int x = 0; x < p.width; ++x) {
    const int rx = p.left + (p.mirror ? p.width - 1 - x : x);  // the column of the rescaled image
    xs[size_t(x)] = tap(rx, width, p.resized_width);
  }
  for (int c = 0; c < channels; ++c) {
    const float add = c < 3 ? p.offset[c] : 0.f;
    for (int y = 0; y < p.height; ++y) {
      const Tap ty = tap(p.top + y, height, p.resized_height);
      const float* r0 = chw + size_t(c) * plane + size_t(ty.lo) * size_t(width);
      const float* r1 = chw + size_t(c) * plane + size_t(ty.hi) * size_t(width);
      float* dst = out + (size_t(c) * size_t(p.height) + size_t(y)) * size_t(p.width);
      for (int x = 0; x < p.width; ++x) {
        const Tap& tx = xs[size_t(x)];
        const double top = double(r0[tx.lo]) * (1 - tx.w) + double(r0[tx.hi]) * tx.w;
        const double bottom = double(r1[tx.lo]) * (1 - tx.w) + double(r1[tx.hi]) * tx.w;
        dst[x] = augmented_value(float(top * (1 - ty.w) + bottom * ty.w), add, mean_value, scale);
      }
    }
  }
}

bool colour_noise_applies(const AugmentOptions& o, int channels, bool train) {
  return train && o.pca_std > 0.f && channels == 3;
}

float output_scale(const AugmentOptions& o, int channels, bool train) {
  if (o.pca_rescale && colour_noise_applies(o, channels, train)) return o.scale / (1.f + o.pca_std);
  return o.scale;
}

AugmentPlan plan_augmentation(int channels, int height, int width, const AugmentOptions& o,
                              const DataStats& stats, bool train, uint64_t rng_key) {
  CONVNET_CHECK(channels >= 1 && height >= 1 && width >= 1, "augment_example: image shape ",
                channels, " x ", height, " x ", width, " has a dimension below 1");
  CONVNET_CHECK(o.crop >= 0 && (rescales(o, train) || o.crop <= std::min(height, width)), "augment: crop ", o.crop,
                " does not fit a ", height, " x ", width, " image");
  CONVNET_CHECK(!o.subtract_mean_image || stats.mean.size() == size_t(channels) * size_t(height) * size_t(width),
                "augment: subtract_mean_image needs a mean image of ", channels, " x ", height, " x ",
                width, " (stats hold ", stats.mean.size(), " values; compute_stats on this source)");
  AugmentPlan p;
  int h = height, w = width;  // of the image the window is cut from
  if (rescales(o, train)) {
    // VGG: the shorter side becomes S (jittered in training, the test scale in test).
    CONVNET_CHECK(o.crop > 0, "augment: rescaling images (scale jittering, a test scale) needs a crop");
    CONVNET_CHECK(!o.subtract_mean_image, "augment: rescaled images cannot take the mean image (it has "
                  "the source's size); subtract the mean value (--mean scalar), as VGG does");
    int side = o.test_scale;
    if (train) {
      CONVNET_CHECK(o.jitter_min >= o.crop && o.jitter_max >= o.jitter_min, "augment: scale jittering "
                    "needs crop <= min <= max, got crop ", o.crop, ", [", o.jitter_min, ", ", o.jitter_max, "]");
      side = o.jitter_min + bounded(draw(rng_key, kScale), o.jitter_max - o.jitter_min + 1);
    } else {
      CONVNET_CHECK(o.test_scale >= o.crop, "augment: the test scale ", o.test_scale,
                    " is below the crop ", o.crop);
    }
    const int shorter = std::min(height, width);
    h = height == shorter ? side : int(std::lround(double(height) * side / shorter));
    w = width == shorter ? side : int(std::lround(double(width) * side / shorter));
    p.resized_height = h;
    p.resized_width = w;
  }
  // crop 0 keeps the whole image (which need not be square).
  p.height = o.crop ? o.crop : h;
  p.width = o.crop ? o.crop : w;
  p.top = (h - p.height) / 2;
  p.left = (w - p.width) / 2;
  if (train && o.random_crop) {
    p.top = bounded(draw(rng_key, kCropY), h - p.height + 1);
    p.left = bounded(draw(rng_key, kCropX), w - p.width + 1);
  }
  p.mirror = train && o.mirror && (draw(rng_key, kMirror) >> 63) != 0;

  // AlexNet's colour noise: add sum_i alpha_i * sqrt(lambda_i) * p_i to every RGB pixel, with
  // alpha_i ~ N(0, pca_std) drawn once per image (per epoch, as the key includes the epoch). The
  // square root, as cuda-convnet2 does: lambda_i is a variance, and the offset must be in pixel
  // units (data.h says why not the paper's literal "eigenvalue").
  if (colour_noise_applies(o, channels, train)) {
    double alpha[4];
    box_muller(draw(rng_key, kPca), draw(rng_key, kPca + 1), alpha[0], alpha[1]);
    box_muller(draw(rng_key, kPca + 2), draw(rng_key, kPca + 3), alpha[2], alpha[3]);
    for (int c = 0; c < 3; ++c) {
      double sum = 0;
      for (int i = 0; i < 3; ++i)
        sum += double(o.pca_std) * alpha[i] * std::sqrt(double(stats.eigenvalues[size_t(i)])) *
               double(stats.eigenvectors[size_t(i)][size_t(c)]);
      p.offset[c] = float(sum);
    }
  }
  return p;
}

void augment_example(const float* chw, int channels, int height, int width, const AugmentOptions& o,
                     const DataStats& stats, bool train, uint64_t rng_key, float* out) {
  if (train) check_colour_noise(o, channels, stats, "augment_example");
  const AugmentPlan p = plan_augmentation(channels, height, width, o, stats, train, rng_key);
  if (p.resized_height > 0)
    return write_rescaled_window(chw, channels, height, width, p, o.mean_value,
                                 output_scale(o, channels, train), out);
  write_window(chw, channels, height, width, p.top, p.left, p.height, p.width, p.mirror, p.offset,
               o.subtract_mean_image ? stats.mean.data() : nullptr, o.mean_value,
               output_scale(o, channels, train), out);
}

Tensor ten_views(const float* chw, int channels, int height, int width, int crop) {
  CONVNET_CHECK(channels >= 1 && height >= 1 && width >= 1, "ten_views: image shape ", channels,
                " x ", height, " x ", width, " has a dimension below 1");
  if (crop == 0 && height == width) crop = height;  // 0 = the whole (square) image, as AugmentOptions
  CONVNET_CHECK(crop >= 1 && crop <= std::min(height, width), "ten_views: crop ", crop,
                " does not fit a ", height, " x ", width, " image");
  // Views 0-4: top-left, top-right, bottom-left, bottom-right, centre; 5-9: the same reflected.
  const int ys[5] = {0, 0, height - crop, height - crop, (height - crop) / 2};
  const int xs[5] = {0, width - crop, 0, width - crop, (width - crop) / 2};
  const size_t view = size_t(channels) * size_t(crop) * size_t(crop);
  std::vector<float> chw_views(10 * view);
  for (int v = 0; v < 10; ++v)
    write_window(chw, channels, height, width, ys[v % 5], xs[v % 5], crop, crop, v >= 5, kNoOffset,
                 nullptr, 0.f, 1.f, chw_views.data() + size_t(v) * view);
  // CHW per view -> CHWN with N = 10 views innermost.
  Tensor out({channels, crop, crop, 10}, Device::cpu());
  float* dst = out.data();
  for (size_t p = 0; p < view; ++p)
    for (size_t v = 0; v < 10; ++v) dst[p * 10 + v] = chw_views[v * view + p];
  return out;
}

}  // namespace convnet
