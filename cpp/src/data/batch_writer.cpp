// The two group writers. Both produce augmented_value(pixel, offset, mean, scale) for every
// output, so a batch is the same bits whichever path (or augment_example) made it.
#include "data/batch_writer.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace convnet {
namespace {

constexpr bool kLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

typedef float F32x16 __attribute__((vector_size(64)));

// Writes 16 floats. A batch is written once and read much later (after `prefetch` batches of tens
// of MB), so whole aligned lines go around the caches (non-temporal stores): the line is not read
// from memory first, halving the traffic.
inline void store_line(float* dst, const F32x16& v, bool streaming) {
#if defined(__AVX512F__)
  if (streaming) return _mm512_stream_ps(dst, reinterpret_cast<const __m512&>(v));
#elif defined(__AVX__)
  if (streaming) {
    _mm256_stream_ps(dst, reinterpret_cast<const __m256*>(&v)[0]);
    return _mm256_stream_ps(dst + 8, reinterpret_cast<const __m256*>(&v)[1]);
  }
#elif defined(__SSE2__)
  if (streaming) {
    for (int i = 0; i < 4; ++i) _mm_stream_ps(dst + 4 * i, reinterpret_cast<const __m128*>(&v)[i]);
    return;
  }
#endif
  (void)streaming;
  std::memcpy(dst, &v, sizeof v);
}

// Non-temporal stores are weakly ordered: fence them before the batch is handed to another thread.
inline void finish_streaming() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// The mean subtracted from output (c, y, x) of example `p`: the same window of the mean image,
// reflected as the example is, or the scalar.
inline float mean_at(const GroupTarget& t, const AugmentPlan& p, int c, int y, int x) {
  if (!t.mean_image) return t.mean_value;
  const int sx = p.mirror ? t.width - 1 - x : x;
  return t.mean_image[(size_t(c) * size_t(t.source_height) + size_t(p.top + y)) *
                          size_t(t.source_width) + size_t(p.left + sx)];
}

}  // namespace

void write_group(const float* const* images, const AugmentPlan* plans, int count,
                 const GroupTarget& t) {
  if (count > 0 && plans[0].resized_height > 0) {  // rescaled (VGG's scale jittering): example by example
    std::vector<float> chw(size_t(t.channels) * size_t(t.height) * size_t(t.width));
    for (int j = 0; j < count; ++j) {
      write_rescaled_window(images[j], t.channels, t.source_height, t.source_width, plans[j],
                            t.mean_value, t.scale, chw.data());
      for (size_t i = 0; i < chw.size(); ++i) t.images[i * size_t(t.n) + size_t(t.first + j)] = chw[i];
    }
    return;
  }
  const size_t plane = size_t(t.source_height) * size_t(t.source_width);
  for (int c = 0; c < t.channels; ++c)
    for (int y = 0; y < t.height; ++y) {
      float* dst = t.images + (size_t(c) * size_t(t.height) + size_t(y)) * size_t(t.width) *
                                  size_t(t.n) + size_t(t.first);
      for (int x = 0; x < t.width; ++x, dst += t.n)
        for (int j = 0; j < count; ++j) {
          const AugmentPlan& p = plans[j];
          const int sx = p.mirror ? t.width - 1 - x : x;
          const float v = images[j][size_t(c) * plane + size_t(p.top + y) * size_t(t.source_width) +
                                    size_t(p.left + sx)];
          dst[j] = augmented_value(v, c < 3 ? p.offset[c] : 0.f, mean_at(t, p, c, y, x), t.scale);
        }
    }
}

void write_group(const uint8_t* windows, size_t window_bytes, const AugmentPlan* plans, int count,
                 const GroupTarget& t) {
  const size_t row_bytes = size_t(t.width) * 4;
  const size_t plane = size_t(t.height) * size_t(t.width) * size_t(t.n);  // of the batch
  if (!t.mean_image && count == kGroup) {
    // The common case. Per output pixel: the group's 16 pixels (4 bytes each) are gathered into
    // one vector, then each channel is one full line of the batch, in vector arithmetic over the
    // 16 (GCC/Clang vector extensions: AVX-512, AVX, SSE or NEON as available).
    typedef uint32_t U32x16 __attribute__((vector_size(64)));
    F32x16 offset[4];
    for (int c = 0; c < 4; ++c)
      for (int j = 0; j < kGroup; ++j) offset[c][j] = c < 3 ? plans[j].offset[c] : 0.f;
    const float mean = t.mean_value, scale = t.scale;
    // Each store is a whole 64-byte line when the batch is aligned and n a multiple of 16.
    const bool streaming = reinterpret_cast<uintptr_t>(t.images + t.first) % 64 == 0 &&
                           t.n % kGroup == 0;
    for (int y = 0; y < t.height; ++y) {
      const uint8_t* row = windows + size_t(y) * row_bytes;
      float* dst = t.images + size_t(y) * size_t(t.width) * size_t(t.n) + size_t(t.first);
      for (int x = 0; x < t.width; ++x, dst += t.n) {
        U32x16 pixel;
        for (int j = 0; j < kGroup; ++j) {
          uint32_t p;
          std::memcpy(&p, row + size_t(j) * window_bytes + size_t(x) * 4, 4);
          pixel[j] = p;
        }
        for (int c = 0; c < t.channels; ++c) {
          // Byte c in memory order: R, G, B, X.
          const int shift = kLittleEndian ? 8 * c : 24 - 8 * c;
          const F32x16 v = __builtin_convertvector((pixel >> shift) & 255u, F32x16);
          store_line(dst + size_t(c) * plane, augmented_value(v, offset[c], mean, scale),
                     streaming);
        }
      }
    }
    finish_streaming();
    return;
  }
  for (int c = 0; c < t.channels; ++c)
    for (int y = 0; y < t.height; ++y) {
      const uint8_t* row = windows + size_t(y) * row_bytes + size_t(c);
      float* dst = t.images + size_t(c) * plane + size_t(y) * size_t(t.width) * size_t(t.n) +
                   size_t(t.first);
      for (int x = 0; x < t.width; ++x, dst += t.n)
        for (int j = 0; j < count; ++j)
          dst[j] = augmented_value(float(row[size_t(j) * window_bytes + size_t(x) * 4]),
                                   c < 3 ? plans[j].offset[c] : 0.f, mean_at(t, plans[j], c, y, x),
                                   t.scale);
    }
}

}  // namespace convnet
