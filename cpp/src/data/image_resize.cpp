// The separable fixed-point resampler behind the folder source: a vertical pass over the columns
// the window needs (bytes -> 32-bit values with 8 fractional bits), then a horizontal pass that,
// for RGBX input, handles each pixel's four values as one 4-lane vector.
#include "data/image_resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "convnet/error.h"  // first: data.h uses std::runtime_error without <stdexcept>
#include "convnet/data.h"

namespace convnet {
namespace {

constexpr int kWeightBits = AxisTaps::kWeightBits;
constexpr int32_t kOne = int32_t(1) << kWeightBits;
// The vertical pass rounds to 8 fractional bits (255 << 8 at most) so that the horizontal pass's
// sums, below 255 << 32, fit unsigned 32-bit lanes.
constexpr int kIntermediateBits = 8;
constexpr int kVerticalShift = kWeightBits - kIntermediateBits;
constexpr int kHorizontalShift = kWeightBits + kIntermediateBits;

// Quantises one output's weights (summing to ~1) to integers summing exactly to kOne: the
// rounding error goes to the largest weight, so a flat image stays exactly flat.
void quantise(const double* w, int n, int32_t* q) {
  int32_t total = 0;
  int largest = 0;
  for (int k = 0; k < n; ++k) {
    q[k] = int32_t(std::lround(w[k] * kOne));
    total += q[k];
    if (w[k] > w[largest]) largest = k;
  }
  q[largest] += kOne - total;
}

// Vertical pass of one output row: v[i] = sum_k w[k] * src[k][i] for i < n, rounded to
// kIntermediateBits fractional bits. Specialised for the common tap counts so that each is one
// pass the compiler vectorises. (The same sums in float, exact here, measured no faster.)
void vertical(const uint8_t* const* src, const int32_t* w, int taps, size_t n, uint32_t* v) {
  constexpr int32_t half = int32_t(1) << (kVerticalShift - 1);
  if (taps == 1) {
    const uint8_t* s0 = src[0];
    for (size_t i = 0; i < n; ++i) v[i] = uint32_t(w[0] * s0[i] + half) >> kVerticalShift;
  } else if (taps == 2) {
    const uint8_t *s0 = src[0], *s1 = src[1];
    for (size_t i = 0; i < n; ++i)
      v[i] = uint32_t(w[0] * s0[i] + w[1] * s1[i] + half) >> kVerticalShift;
  } else if (taps == 3) {
    const uint8_t *s0 = src[0], *s1 = src[1], *s2 = src[2];
    for (size_t i = 0; i < n; ++i)
      v[i] = uint32_t(w[0] * s0[i] + w[1] * s1[i] + w[2] * s2[i] + half) >> kVerticalShift;
  } else {
    for (size_t i = 0; i < n; ++i) v[i] = half;
    for (int k = 0; k < taps; ++k) {
      const uint8_t* s = src[k];
      const uint32_t wk = uint32_t(w[k]);
      for (size_t i = 0; i < n; ++i) v[i] += wk * s[i];
    }
    for (size_t i = 0; i < n; ++i) v[i] >>= kVerticalShift;
  }
}

// Horizontal pass of one row of RGBX values: each output pixel's four values as one 4-lane
// vector (GCC/Clang vector extensions: SSE or NEON, no intrinsics), T taps per output, written as
// 4 bytes. (Two pixels per AVX2 register measured only 3% faster.)
typedef uint32_t U32x4 __attribute__((vector_size(16), aligned(4)));
typedef uint8_t U8x4 __attribute__((vector_size(4)));

template <int T, bool Mirror>
void horizontal_rgbx(const uint32_t* v, const int* first, const int32_t* w, int n, int taps,
                     uint8_t* out) {
  constexpr uint32_t half = uint32_t(1) << (kHorizontalShift - 1);
  const int t = T > 0 ? T : taps;
  for (int ox = 0; ox < n; ++ox) {
    const U32x4* p = reinterpret_cast<const U32x4*>(v + size_t(first[ox]) * 4);
    const int32_t* wx = w + size_t(ox) * size_t(t);
    U32x4 acc = half - U32x4{};
    for (int k = 0; k < t; ++k) acc += p[k] * uint32_t(wx[k]);
    const U8x4 bytes = __builtin_convertvector(acc >> kHorizontalShift, U8x4);
    std::memcpy(out + size_t(Mirror ? n - 1 - ox : ox) * 4, &bytes, 4);
  }
}

template <bool Mirror>
void horizontal_rgbx(const uint32_t* v, const int* first, const int32_t* w, int n, int taps,
                     uint8_t* out) {
  switch (taps) {  // the common tap counts unrolled
    case 1: return horizontal_rgbx<1, Mirror>(v, first, w, n, 1, out);
    case 2: return horizontal_rgbx<2, Mirror>(v, first, w, n, 2, out);
    case 3: return horizontal_rgbx<3, Mirror>(v, first, w, n, 3, out);
    case 4: return horizontal_rgbx<4, Mirror>(v, first, w, n, 4, out);
    default: return horizontal_rgbx<0, Mirror>(v, first, w, n, taps, out);
  }
}

// Any channel count (tests, grey images): plain loops.
void horizontal_any(const uint32_t* v, int channels, const int* first, const int32_t* w, int n,
                    int taps, bool mirror, uint8_t* out) {
  constexpr uint32_t half = uint32_t(1) << (kHorizontalShift - 1);
  for (int ox = 0; ox < n; ++ox) {
    const uint32_t* p = v + size_t(first[ox]) * size_t(channels);
    const int32_t* wx = w + size_t(ox) * size_t(taps);
    uint8_t* o = out + size_t(mirror ? n - 1 - ox : ox) * size_t(channels);
    for (int c = 0; c < channels; ++c) {
      uint32_t acc = half;
      for (int k = 0; k < taps; ++k) acc += uint32_t(wx[k]) * p[k * channels + c];
      o[c] = uint8_t(acc >> kHorizontalShift);
    }
  }
}

}  // namespace

ResizeGeometry shorter_side_geometry(int width, int height, int size) {
  // The shorter side is exactly `size`; the longer is rounded half up, and can't fall below
  // `size` since it is at least as long.
  auto scaled = [size](int64_t longer, int64_t shorter) {
    return int((2 * longer * size + shorter) / (2 * shorter));
  };
  ResizeGeometry g;
  g.resized_width = width <= height ? size : scaled(width, height);
  g.resized_height = height < width ? size : scaled(height, width);
  g.crop_x = (g.resized_width - size) / 2;
  g.crop_y = (g.resized_height - size) / 2;
  return g;
}

AxisTaps axis_taps(int file_length, int scale, int resized_length, int begin, int count) {
  const int decoded = (file_length + scale - 1) / scale;
  const double extent = double(file_length) / scale;  // where the picture ends, in decoded pixels
  const bool area = scale > 1 || decoded > resized_length;
  const double step = (area ? extent : double(decoded)) / resized_length;
  // Real-valued weights first, to learn the widest footprint.
  std::vector<int> first(static_cast<size_t>(count)), taps_of(static_cast<size_t>(count));
  std::vector<double> w;
  int widest = 1;
  const int max_taps = int(std::ceil(step)) + 2;
  w.assign(size_t(count) * size_t(max_taps), 0.0);
  for (int j = 0; j < count; ++j) {
    const int o = begin + j;
    double* wj = &w[size_t(j) * size_t(max_taps)];
    if (!area && decoded == resized_length) {
      first[size_t(j)] = o, taps_of[size_t(j)] = 1, wj[0] = 1;
    } else if (area) {
      const double lo = o * step, hi = std::min(extent, (o + 1) * step);
      const int i0 = int(std::floor(lo)), i1 = std::min(decoded, int(std::ceil(hi)));
      int n = 0;
      first[size_t(j)] = i0;
      for (int i = i0; i < i1; ++i) {
        const double overlap = std::min(hi, i + 1.0) - std::max(lo, double(i));
        if (overlap <= 0) continue;
        if (n == 0) first[size_t(j)] = i;
        n = i - first[size_t(j)] + 1;
        wj[n - 1] = overlap;
      }
      double total = 0;  // > 0: output o starts inside the picture (o * step < extent)
      for (int k = 0; k < n; ++k) total += wj[k];
      for (int k = 0; k < n; ++k) wj[k] /= total;
      taps_of[size_t(j)] = n;
    } else {  // bilinear, the pixel centres aligned, clamped at the edges
      const double src = std::clamp((o + 0.5) * step - 0.5, 0.0, double(decoded - 1));
      const int i0 = std::min(int(src), decoded - 1);
      const double frac = src - i0;
      first[size_t(j)] = i0;
      if (frac > 0 && i0 + 1 < decoded) {
        taps_of[size_t(j)] = 2, wj[0] = 1 - frac, wj[1] = frac;
      } else {
        taps_of[size_t(j)] = 1, wj[0] = 1;
      }
    }
    widest = std::max(widest, taps_of[size_t(j)]);
  }
  // Every output gets the same number of taps (zero-padded) so the inner loops have a fixed
  // length; near the end of the axis the window moves left so it stays inside the image.
  AxisTaps t;
  t.taps = widest;
  t.first.resize(static_cast<size_t>(count));
  t.weight.assign(size_t(count) * size_t(widest), 0);
  t.lo = decoded;
  t.hi = 0;
  for (int j = 0; j < count; ++j) {
    const int f = std::max(0, std::min(first[size_t(j)], decoded - widest));
    const int shift = first[size_t(j)] - f;
    quantise(&w[size_t(j) * size_t(max_taps)], taps_of[size_t(j)],
             &t.weight[size_t(j) * size_t(widest) + size_t(shift)]);
    t.first[size_t(j)] = f;
    t.lo = std::min(t.lo, f);
    t.hi = std::max(t.hi, f + widest);
  }
  return t;
}

void resample(const uint8_t* pixels, size_t stride, int channels, int origin_x, int origin_y,
              const AxisTaps& rows, const AxisTaps& cols, bool mirror, uint8_t* out,
              std::vector<uint32_t>& scratch) {
  const int out_h = int(rows.first.size()), out_w = int(cols.first.size());
  // The columns the window reads, relative to the intermediate row.
  const size_t span = size_t(cols.hi - cols.lo) * size_t(channels);
  std::vector<int> first(static_cast<size_t>(out_w));
  for (int ox = 0; ox < out_w; ++ox) first[size_t(ox)] = cols.first[size_t(ox)] - cols.lo;
  scratch.resize(span);
  uint32_t* v = scratch.data();
  const uint8_t* origin = pixels + size_t(cols.lo - origin_x) * size_t(channels);
  std::vector<const uint8_t*> in(static_cast<size_t>(rows.taps));
  const int32_t* wx = cols.weight.data();
  const size_t out_row = size_t(out_w) * size_t(channels);
  for (int oy = 0; oy < out_h; ++oy) {
    const int fy = rows.first[size_t(oy)] - origin_y;
    for (int k = 0; k < rows.taps; ++k) in[size_t(k)] = origin + size_t(fy + k) * stride;
    vertical(in.data(), &rows.weight[size_t(oy) * size_t(rows.taps)], rows.taps, span, v);
    uint8_t* o = out + size_t(oy) * out_row;
    if (channels == 4) {
      if (mirror) horizontal_rgbx<true>(v, first.data(), wx, out_w, cols.taps, o);
      else horizontal_rgbx<false>(v, first.data(), wx, out_w, cols.taps, o);
    } else {
      horizontal_any(v, channels, first.data(), wx, out_w, cols.taps, mirror, o);
    }
  }
}

Image resize_shorter_and_centre_crop(const Image& in, int size) {
  CONVNET_CHECK(size >= 1, "resize_shorter_and_centre_crop: size must be >= 1, got ", size);
  CONVNET_CHECK(in.width > 0 && in.height > 0 && in.channels > 0,
                "resize_shorter_and_centre_crop: empty image (", in.width, " x ", in.height, ")");
  CONVNET_CHECK(in.channels <= 4, "resize_shorter_and_centre_crop: ", in.channels,
                " channels (1 to 4)");
  CONVNET_CHECK(in.pixels.size() == size_t(in.width) * in.height * in.channels,
                "resize_shorter_and_centre_crop: pixel buffer size does not match the dimensions");
  const int file_w = in.file_width > 0 ? in.file_width : in.width;
  const int file_h = in.file_height > 0 ? in.file_height : in.height;
  CONVNET_CHECK((file_w + in.scale - 1) / in.scale == in.width &&
                    (file_h + in.scale - 1) / in.scale == in.height,
                "resize_shorter_and_centre_crop: a ", in.width, " x ", in.height,
                " image is not a 1/", in.scale, " decode of ", file_w, " x ", file_h);
  const ResizeGeometry g = shorter_side_geometry(file_w, file_h, size);
  const AxisTaps cols = axis_taps(file_w, in.scale, g.resized_width, g.crop_x, size);
  const AxisTaps rows = axis_taps(file_h, in.scale, g.resized_height, g.crop_y, size);
  Image out;
  out.channels = in.channels;
  out.width = out.height = size;
  out.pixels.resize(size_t(size) * size_t(size) * size_t(in.channels));
  std::vector<uint32_t> scratch;
  resample(in.pixels.data(), size_t(in.width) * size_t(in.channels), in.channels, 0, 0, rows,
           cols, false, out.pixels.data(), scratch);
  return out;
}

}  // namespace convnet
