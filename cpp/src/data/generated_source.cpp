// A generated data set with learnable labels, the C++ twin of the Python tests' Prototypes:
// each class is a fixed random smooth pattern (a coarse random grid, bilinearly interpolated,
// so memory stays small even at 1000 classes x 3 x 256 x 256); an example is its class's
// pattern shifted by up to `shift` pixels, plus noise. Everything comes from integer hashes of
// (seed, index), never std:: distributions, so the data are the same on every platform; pixel
// values are rounded to integers in [0, 255] like 8-bit images, which also hides any last-bit
// difference in the float arithmetic.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <stdexcept>  // before data.h, which uses std::runtime_error without it

#include "convnet/data.h"
#include "convnet/error.h"
#include "data/hash.h"

namespace convnet {
namespace {

// A roughly standard normal value from one 64-bit hash: the sum of four 16-bit uniforms
// (Irwin-Hall), centred and scaled to unit variance. Integer arithmetic up to one multiply.
float approx_normal(uint64_t h) {
  const int64_t sum = int64_t(h & 0xffff) + int64_t((h >> 16) & 0xffff) +
                      int64_t((h >> 32) & 0xffff) + int64_t(h >> 48);
  // Each 16-bit uniform has mean 32767.5 and variance (65536^2 - 1) / 12.
  constexpr double kScale = 1.0 / 37837.22602;  // 1 / sqrt(4 * (65536^2 - 1) / 12)
  return float(double(2 * sum - 4 * 65535) * 0.5 * kScale);
}

// Two roughly standard normal values from one hash, for the per-pixel noise (half the hashing
// of approx_normal): each the sum of two 16-bit uniforms (triangular), scaled to unit variance.
void noise_pair(uint64_t h, float& a, float& b) {
  constexpr float kScale = float(1.0 / 26754.59);  // 1 / sqrt(2 * (65536^2 - 1) / 12)
  a = float(int32_t(h & 0xffff) + int32_t((h >> 16) & 0xffff) - 65535) * kScale;
  b = float(int32_t((h >> 32) & 0xffff) + int32_t(h >> 48) - 65535) * kScale;
}

// Integer in [0, n) from a hash (multiply-high: no modulo bias worth mentioning).
int64_t bounded(uint64_t h, int64_t n) { return int64_t(((h >> 32) * uint64_t(n)) >> 32); }

class GeneratedSource final : public DataSource {
 public:
  GeneratedSource(int64_t count, int classes, int channels, int size, uint64_t seed)
      : count_(count), classes_(classes), channels_(channels), size_(size), seed_(seed) {
    CONVNET_CHECK(count >= 0 && count <= kMaxGeneratedCount, "generated_source: count ", count,
                  " must be in [0, ", kMaxGeneratedCount, "]");
    CONVNET_CHECK(classes >= 1 && classes <= kMaxGeneratedClasses, "generated_source: classes ",
                  classes, " must be in [1, ", kMaxGeneratedClasses, "]");
    CONVNET_CHECK(channels >= 1 && channels <= kMaxGeneratedChannels, "generated_source: channels ",
                  channels, " must be in [1, ", kMaxGeneratedChannels, "]");
    CONVNET_CHECK(size >= 1 && size <= kMaxSourceSide, "generated_source: size ", size,
                  " must be in [1, ", kMaxSourceSide, "]");
    shift_ = std::max(1, size / 8);
    cell_ = std::max(1, size / 8);
    // Lattice points covering the shifted window [0, size + 2 * shift), one extra for the
    // right-hand interpolation neighbour.
    grid_ = (size + 2 * shift_ - 1) / cell_ + 2;
    lattice_.resize(size_t(classes) * size_t(channels) * size_t(grid_) * size_t(grid_));
    const uint64_t base = splitmix64(seed_ ^ 0x5eed0f0a11c1a55eull);
    for (size_t i = 0; i < lattice_.size(); ++i) lattice_[i] = approx_normal(splitmix64(base + i));
  }

  int64_t size() const override { return count_; }
  int channels() const override { return channels_; }
  int height() const override { return size_; }
  int width() const override { return size_; }
  int classes() const override { return classes_; }

  int load(int64_t index, float* chw) const override {
    CONVNET_CHECK(index >= 0 && index < count_, "generated_source: index ", index,
                  " out of range [0, ", count_, ")");
    // Stream for this example: key + 0 label, + 1 and + 2 the shift, + 3 + pixel the noise
    // (one hash per two pixels).
    const uint64_t key = splitmix64(splitmix64(seed_) ^ uint64_t(index));
    const int label = int(bounded(splitmix64(key), classes_));
    const int oy = int(bounded(splitmix64(key + 1), 2 * shift_ + 1));
    const int ox = int(bounded(splitmix64(key + 2), 2 * shift_ + 1));
    // Per output column, the lattice column to its left and the interpolation weight.
    std::vector<int> x0(static_cast<size_t>(size_), 0);
    std::vector<float> fx(static_cast<size_t>(size_), 0.f);
    for (int x = 0; x < size_; ++x) {
      const int px = x + ox;
      x0[size_t(x)] = px / cell_;
      fx[size_t(x)] = float(px % cell_) / float(cell_);
    }
    const size_t plane = size_t(size_) * size_t(size_);
    for (int c = 0; c < channels_; ++c) {
      const float* g = lattice_.data() + (size_t(label) * size_t(channels_) + size_t(c)) *
                                             size_t(grid_) * size_t(grid_);
      for (int y = 0; y < size_; ++y) {
        const int py = y + oy;
        const int y0 = py / cell_;
        const float fy = float(py % cell_) / float(cell_);
        const float* r0 = g + size_t(y0) * size_t(grid_);
        const float* r1 = r0 + grid_;
        float* row = chw + size_t(c) * plane + size_t(y) * size_t(size_);
        const uint64_t noise_base = key + 3 + (size_t(c) * size_t(size_) + size_t(y)) * size_t(size_);
        for (int x = 0; x < size_; ++x) {
          const int a = x0[size_t(x)];
          const float wx = fx[size_t(x)];
          const float top = r0[a] + wx * (r0[a + 1] - r0[a]);
          const float bottom = r1[a] + wx * (r1[a + 1] - r1[a]);
          row[x] = top + fy * (bottom - top);
        }
        for (int x = 0; x < size_; x += 2) {
          float n0, n1;
          noise_pair(splitmix64(noise_base + uint64_t(x)), n0, n1);
          row[x] = pixel(row[x], n0);
          if (x + 1 < size_) row[x + 1] = pixel(row[x + 1], n1);
        }
      }
    }
    return label;
  }

  // Pattern plus noise, mapped to an integer in [0, 255].
  static float pixel(float pattern, float noise) {
    const float v = 128.f + 48.f * (pattern + kNoise * noise);
    return std::nearbyint(std::min(255.f, std::max(0.f, v)));
  }

  std::string describe(int64_t index) const override {
    return detail::concat("generated example ", index, " (seed ", seed_, ")");
  }

 private:
  static constexpr float kNoise = 0.5f;  // noise std relative to the pattern's (about 1)
  int64_t count_;
  int classes_, channels_, size_;
  uint64_t seed_;
  int shift_ = 1, cell_ = 1, grid_ = 2;
  std::vector<float> lattice_;  // classes x channels x grid x grid, roughly N(0, 1)
};

}  // namespace

std::shared_ptr<DataSource> generated_source(int64_t count, int classes, int channels, int size,
                                             uint64_t seed) {
  return std::make_shared<GeneratedSource>(count, classes, channels, size, seed);
}

}  // namespace convnet
