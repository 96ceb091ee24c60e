// JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit RGB, and the separable resize + centre
// crop that turns every ImageNet image into size x size.
//
// Both libraries report fatal errors through a callback that must not return. We longjmp out of
// it (throwing a C++ exception through C frames is not allowed) back to a setjmp in a small
// function whose only locals are plain C structs; everything that owns memory (the Image, scratch
// rows) lives in the caller's frame, so its state is well defined after the jump. The caller
// then throws DataError with the library's message.
#include "data/image_decode.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "convnet/error.h"  // first: data.h uses std::runtime_error without <stdexcept>
#include "convnet/data.h"

#ifdef CONVNET_WITH_JPEG
// jpeglib.h needs <cstdio> first, and jerror.h must follow jpeglib.h: its message codes depend on
// JPEG_LIB_VERSION and the arithmetic-coding macros that jpeglib.h defines.
#include <jpeglib.h>
#include <jerror.h>
#endif
#ifdef CONVNET_WITH_PNG
#include <png.h>
#endif

namespace convnet {
namespace {

// Larger images are refused (DataError) rather than risking a multi-gigabyte allocation in a
// data worker: the same order as PIL's decompression-bomb limit.
constexpr int64_t kMaxPixels = int64_t(1) << 28;

std::vector<uint8_t> read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw DataError(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> data;
  if (std::fseek(f, 0, SEEK_END) == 0) {  // reserve the size up front; the loop reads regardless
    const long size = std::ftell(f);
    if (size > 0) data.reserve(size_t(size));
    std::rewind(f);
  }
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) data.insert(data.end(), chunk, chunk + n);
  const bool failed = std::ferror(f) != 0;
  int err = errno;
  std::fclose(f);
  if (failed) throw DataError(path + ": read error: " + std::strerror(err));
  return data;
}

bool is_jpeg(const std::vector<uint8_t>& d) {
  return d.size() >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
}
bool is_png(const std::vector<uint8_t>& d) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return d.size() >= 8 && std::memcmp(d.data(), sig, 8) == 0;
}

// ---------------------------------------------------------------------------------------------
// JPEG
#ifdef CONVNET_WITH_JPEG

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first, so a j_common_ptr's err can be cast to this
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1) that mean the entropy-coded data is missing or damaged: libjpeg goes on and
// fills the rest of the image with grey or garbage, which we must not train on. Other warnings
// (extraneous bytes between markers, an unknown JFIF revision, a bad ICC marker) leave the pixels
// intact and are ignored, as PIL does. Trace messages (level > 0) are ignored.
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level != -1) return;
  switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:       // "Premature end of JPEG file": a truncated file
    case JWRN_HIT_MARKER:     // "premature end of data segment"
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
      jpeg_fail(cinfo);
    default:
      break;
  }
}

// Owned by decode_jpeg's frame (not by the setjmp function), see the comment at the top.
struct JpegOutput {
  Image* image;
  std::vector<uint8_t>* scratch;  // grey / CMYK rows before conversion to RGB
};

// Converts one decoded row of `components` (1: grey, 4: CMYK) per pixel into RGB.
void rows_to_rgb(const uint8_t* src, uint8_t* dst, size_t pixels, int components, bool inverted) {
  if (components == 1) {
    for (size_t i = 0; i < pixels; ++i) dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = src[i];
    return;
  }
  // CMYK: R = (255 - C)(255 - K) / 255. Adobe (Photoshop) files store the inks inverted, so there
  // stored = 255 - ink and R = stored_C * stored_K / 255; libjpeg turns YCCK into that same
  // inverted CMYK.
  for (size_t i = 0; i < pixels; ++i) {
    const uint8_t* p = src + 4 * i;
    int c = p[0], m = p[1], y = p[2], k = p[3];
    if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
    dst[3 * i] = uint8_t((c * k + 127) / 255);
    dst[3 * i + 1] = uint8_t((m * k + 127) / 255);
    dst[3 * i + 2] = uint8_t((y * k + 127) / 255);
  }
}

// Returns false with `message` filled when libjpeg fails. Only C structs and trivially
// destructible values are local here, as setjmp/longjmp require.
bool jpeg_decode_into(const uint8_t* data, size_t size, int min_side_hint, JpegOutput out,
                      char* message) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  std::memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_fail;
  err.pub.emit_message = jpeg_message;
  err.message[0] = 0;
  if (setjmp(err.jump)) {
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);

  int components;
  bool inverted = false;
  switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
      cinfo.out_color_space = JCS_GRAYSCALE;
      components = 1;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      cinfo.out_color_space = JCS_CMYK;  // libjpeg converts YCCK to (inverted) CMYK
      components = 4;
      inverted = cinfo.saw_Adobe_marker;
      break;
    default:  // YCbCr, RGB; anything else fails in jpeg_start_decompress with libjpeg's message
      cinfo.out_color_space = JCS_RGB;
      components = 3;
      break;
  }

  // DCT scaling: the IDCT produces a 1/2, 1/4 or 1/8 size image directly, skipping most of the
  // work. Take the strongest reduction whose shorter side still reaches the hint, so the resize
  // that follows only ever shrinks.
  if (min_side_hint > 0) {
    for (unsigned denom : {8u, 4u, 2u}) {
      cinfo.scale_num = 1;
      cinfo.scale_denom = denom;
      jpeg_calc_output_dimensions(&cinfo);
      if (int(std::min(cinfo.output_width, cinfo.output_height)) >= min_side_hint) break;
      cinfo.scale_denom = 1;
    }
  }
  jpeg_calc_output_dimensions(&cinfo);
  const int64_t width = cinfo.output_width, height = cinfo.output_height;
  if (width * height > kMaxPixels) {
    std::snprintf(message, JMSG_LENGTH_MAX, "image too large (%lld x %lld pixels)",
                  static_cast<long long>(width), static_cast<long long>(height));
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  try {
    out.image->channels = 3;
    out.image->width = int(width);
    out.image->height = int(height);
    out.image->pixels.resize(size_t(width * height * 3));
    if (components != 3) out.scratch->resize(size_t(width * components * 16));
  } catch (const std::bad_alloc&) {
    std::snprintf(message, JMSG_LENGTH_MAX, "out of memory for %lld x %lld pixels",
                  static_cast<long long>(width), static_cast<long long>(height));
    jpeg_destroy_decompress(&cinfo);
    return false;
  }

  jpeg_start_decompress(&cinfo);
  uint8_t* pixels = out.image->pixels.data();
  const size_t stride = size_t(width) * 3;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[16];
    const unsigned first = cinfo.output_scanline;
    const unsigned want = std::min(16u, cinfo.output_height - first);
    for (unsigned r = 0; r < want; ++r)
      rows[r] = components == 3 ? pixels + (first + r) * stride
                                : out.scratch->data() + size_t(r) * width * components;
    const unsigned got = jpeg_read_scanlines(&cinfo, rows, want);
    if (components != 3)
      for (unsigned r = 0; r < got; ++r)
        rows_to_rgb(rows[r], pixels + (first + r) * stride, size_t(width), components, inverted);
  }
  // No jpeg_finish_decompress: all pixels are in, and it would only go on to read past them to
  // the EOI marker. (A file cut short inside its last scan is still rejected above, through
  // libjpeg's "premature end" warning.)
  jpeg_destroy_decompress(&cinfo);
  return true;
}

Image decode_jpeg(const std::string& path, const std::vector<uint8_t>& data, int min_side_hint) {
  Image image;
  std::vector<uint8_t> scratch;
  char message[JMSG_LENGTH_MAX];
  if (!jpeg_decode_into(data.data(), data.size(), min_side_hint, JpegOutput{&image, &scratch},
                        message))
    throw DataError(path + ": bad JPEG: " + message);
  return image;
}

#else

Image decode_jpeg(const std::string& path, const std::vector<uint8_t>&, int) {
  throw RuntimeError(path + ": this build of convnet has no JPEG support (libjpeg was not found "
                     "when it was built)");
}

#endif  // CONVNET_WITH_JPEG

// ---------------------------------------------------------------------------------------------
// PNG
#ifdef CONVNET_WITH_PNG

constexpr size_t kPngMessage = 256;

struct PngContext {
  const uint8_t* data;
  size_t size, pos;
  char message[kPngMessage];
};

[[noreturn]] void png_fail(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->message, kPngMessage, "%s", msg);
  png_longjmp(png, 1);
}

// Warnings (an incorrect sRGB profile, a bad ancillary-chunk CRC) leave the pixels intact.
void png_warn(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep dst, png_size_t n) {
  auto* ctx = static_cast<PngContext*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->pos) png_error(png, "unexpected end of file (truncated PNG)");
  std::memcpy(dst, ctx->data + ctx->pos, n);
  ctx->pos += n;
}

struct PngOutput {
  Image* image;
  std::vector<png_bytep>* rows;
};

// Same setjmp discipline as jpeg_decode_into.
bool png_decode_into(PngContext* ctx, PngOutput out) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, png_fail, png_warn);
  if (!png) {
    std::snprintf(ctx->message, kPngMessage, "cannot create the libpng reader");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(ctx->message, kPngMessage, "cannot create the libpng reader");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, ctx, png_read_memory);
  png_read_info(png, info);
  const int64_t width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (width * height > kMaxPixels)
    png_error(png, "image too large");

  // Ask libpng for 8-bit RGB whatever the file holds.
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) {
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
    png_set_scale_16(png);  // rounds v * 255 / 65535
#else
    png_set_strip_16(png);
#endif
  }
  // Alpha is dropped; png_set_palette_to_rgb also turns a tRNS chunk into alpha, dropped too.
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
    png_set_strip_alpha(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != size_t(width) * 3)
    png_error(png, "unexpected row layout after conversion to RGB");

  bool allocated = true;
  try {
    out.image->channels = 3;
    out.image->width = int(width);
    out.image->height = int(height);
    out.image->pixels.resize(size_t(width * height * 3));
    out.rows->resize(size_t(height));
  } catch (const std::bad_alloc&) {
    allocated = false;  // png_error (a longjmp) must not leave a catch block
  }
  if (!allocated) png_error(png, "out of memory");
  for (int64_t y = 0; y < height; ++y)
    (*out.rows)[size_t(y)] = out.image->pixels.data() + size_t(y * width * 3);
  png_read_image(png, out.rows->data());
  // No png_read_end: the pixels are complete, and chunks after the image data don't matter.
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

Image decode_png(const std::string& path, const std::vector<uint8_t>& data) {
  Image image;
  std::vector<png_bytep> rows;
  PngContext ctx{data.data(), data.size(), 0, {0}};
  if (!png_decode_into(&ctx, PngOutput{&image, &rows}))
    throw DataError(path + ": bad PNG: " + ctx.message);
  return image;
}

#else

Image decode_png(const std::string& path, const std::vector<uint8_t>&) {
  throw RuntimeError(path + ": this build of convnet has no PNG support (libpng was not found "
                     "when it was built)");
}

#endif  // CONVNET_WITH_PNG

// ---------------------------------------------------------------------------------------------
// Resize

// The taps of one axis: output sample j (of the window actually computed) is
// sum_k weight[j * stride + k] * input[first[j] + k], k < count[j].
struct AxisTaps {
  int stride = 1;
  std::vector<int> first, count;
  std::vector<float> weight;
};

// Taps for resizing an axis of in_n samples to out_n, for outputs [begin, begin + n).
// Shrinking: each output averages the input interval it covers ([j, j+1) * in/out), each input
// weighted by its overlap (area averaging, no aliasing). Enlarging: bilinear between the two
// nearest inputs, pixel centres aligned ((j + 0.5) * in/out - 0.5), clamped at the edges.
AxisTaps make_taps(int in_n, int out_n, int begin, int n) {
  AxisTaps t;
  const double scale = double(in_n) / out_n;
  t.stride = in_n > out_n ? int(std::ceil(scale)) + 1 : 2;
  t.first.resize(size_t(n));
  t.count.resize(size_t(n));
  t.weight.assign(size_t(n) * t.stride, 0.f);
  for (int j = 0; j < n; ++j) {
    const int o = begin + j;
    float* w = &t.weight[size_t(j) * t.stride];
    if (in_n == out_n) {
      t.first[j] = o, t.count[j] = 1, w[0] = 1.f;
    } else if (in_n > out_n) {
      const double lo = o * scale, hi = std::min(double(in_n), (o + 1) * scale);
      const int i0 = int(std::floor(lo));
      const int i1 = std::min(in_n, int(std::ceil(hi)));
      t.first[j] = i0;
      t.count[j] = 0;
      double total = 0;
      for (int i = i0; i < i1; ++i) {
        const double overlap = std::min(hi, i + 1.0) - std::max(lo, double(i));
        if (overlap <= 0) continue;
        if (t.count[j] == 0) t.first[j] = i;
        w[i - t.first[j]] = float(overlap);
        t.count[j] = i - t.first[j] + 1;
        total += overlap;
      }
      for (int k = 0; k < t.count[j]; ++k) w[k] = float(w[k] / total);  // sum exactly ~1
    } else {
      double src = (o + 0.5) * scale - 0.5;
      src = std::clamp(src, 0.0, double(in_n - 1));
      const int i0 = std::min(int(src), in_n - 1);
      const double frac = src - i0;
      t.first[j] = i0;
      if (frac > 0 && i0 + 1 < in_n) {
        t.count[j] = 2, w[0] = float(1 - frac), w[1] = float(frac);
      } else {
        t.count[j] = 1, w[0] = 1.f;
      }
    }
  }
  return t;
}

// Rounds and clamps a row of floats to bytes (a plain loop the compiler vectorises).
void to_bytes(const float* v, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = uint8_t(int(std::min(std::max(v[i] + 0.5f, 0.f), 255.f)));
}

// The horizontal pass of one row: out[ox * C + ch] = sum_k w[ox * T + k] * row[first[ox] + k * C + ch]
// with `first` already in floats from the row's start. Every output uses all T taps (zero-padded),
// so for the common tap counts the loop unrolls completely.
template <int T, int C>
void horizontal_fixed(const float* row, const int* first, const float* w, int n, float* out) {
  for (int ox = 0; ox < n; ++ox) {
    const float* p = row + first[ox];
    const float* wx = w + size_t(ox) * T;
    float acc[C] = {};
    for (int k = 0; k < T; ++k)
      for (int ch = 0; ch < C; ++ch) acc[ch] += wx[k] * p[k * C + ch];
    for (int ch = 0; ch < C; ++ch) out[size_t(ox) * C + ch] = acc[ch];
  }
}

void horizontal_any(const float* row, const int* first, const float* w, int taps, int n, int C,
                    float* out) {
  for (int ox = 0; ox < n; ++ox) {
    const float* p = row + first[ox];
    const float* wx = w + size_t(ox) * taps;
    for (int ch = 0; ch < C; ++ch) {
      float a = 0;
      for (int k = 0; k < taps; ++k) a += wx[k] * p[k * C + ch];
      out[size_t(ox) * C + ch] = a;
    }
  }
}

}  // namespace

Image decode_image(const std::string& path, int min_side_hint) {
  std::vector<uint8_t> data = read_file(path);
  if (is_jpeg(data)) return decode_jpeg(path, data, min_side_hint);
  if (is_png(data)) return decode_png(path, data);
  throw DataError(path + ": not a JPEG or PNG image" + (data.empty() ? " (empty file)" : ""));
}

Image resize_shorter_and_centre_crop(const Image& in, int size) {
  CONVNET_CHECK(size >= 1, "resize_shorter_and_centre_crop: size must be >= 1, got ", size);
  CONVNET_CHECK(in.width > 0 && in.height > 0 && in.channels > 0,
                "resize_shorter_and_centre_crop: empty image (", in.width, " x ", in.height, ")");
  CONVNET_CHECK(in.pixels.size() == size_t(in.width) * in.height * in.channels,
                "resize_shorter_and_centre_crop: pixel buffer size does not match the dimensions");
  const int W = in.width, H = in.height, C = in.channels;
  // Full resized dimensions: the shorter side is exactly `size`, the longer side is rounded
  // (half up), and can't fall below `size` since it is at least as long.
  auto scaled = [size](int64_t longer, int64_t shorter) {
    return int((2 * longer * size + shorter) / (2 * shorter));
  };
  const int out_w = W <= H ? size : scaled(W, H);
  const int out_h = H < W ? size : scaled(H, W);
  const int x0 = (out_w - size) / 2, y0 = (out_h - size) / 2;

  const AxisTaps tx = make_taps(W, out_w, x0, size), ty = make_taps(H, out_h, y0, size);
  // The input columns the crop needs (the horizontal taps are increasing).
  const int col_lo = tx.first.front();
  const int col_hi = tx.first.back() + tx.count.back();
  const size_t span = size_t(col_hi - col_lo) * C;
  std::vector<int> first_x(static_cast<size_t>(size));  // in floats from the start of `row`
  for (int ox = 0; ox < size; ++ox) first_x[size_t(ox)] = (tx.first[size_t(ox)] - col_lo) * C;

  Image out;
  out.channels = C;
  out.width = out.height = size;
  out.pixels.resize(size_t(size) * size * C);
  // Zero padding after the span: the zero-weighted padding taps of the last columns read it.
  std::vector<float> row(span + size_t(tx.stride) * C, 0.f), blended(size_t(size) * C);
  for (int oy = 0; oy < size; ++oy) {
    // Vertical pass: blend the contributing input rows (only the needed columns) into `row`.
    const float* wy = &ty.weight[size_t(oy) * ty.stride];
    const uint8_t* src = in.pixels.data() + (size_t(ty.first[size_t(oy)]) * W + col_lo) * C;
    float* r = row.data();
    {
      const float w = wy[0];
      for (size_t i = 0; i < span; ++i) r[i] = w * float(src[i]);
    }
    for (int k = 1; k < ty.count[size_t(oy)]; ++k) {
      const float w = wy[k];
      const uint8_t* s = src + size_t(k) * W * C;
      for (size_t i = 0; i < span; ++i) r[i] += w * float(s[i]);
    }
    // Horizontal pass into `blended`, then round to bytes.
    const float* wx = tx.weight.data();
    float* b = blended.data();
    if (C == 3 && tx.stride == 2) horizontal_fixed<2, 3>(r, first_x.data(), wx, size, b);
    else if (C == 3 && tx.stride == 3) horizontal_fixed<3, 3>(r, first_x.data(), wx, size, b);
    else if (C == 3 && tx.stride == 4) horizontal_fixed<4, 3>(r, first_x.data(), wx, size, b);
    else horizontal_any(r, first_x.data(), wx, tx.stride, size, C, b);
    to_bytes(b, blended.size(), out.pixels.data() + size_t(oy) * size * C);
  }
  return out;
}

void image_to_chw(const Image& image, float* chw) {
  const size_t plane = size_t(image.height) * image.width;
  const int C = image.channels;
  const uint8_t* p = image.pixels.data();
  if (C == 3) {  // one pass over the pixels, three output streams
    float *r = chw, *g = chw + plane, *b = chw + 2 * plane;
    for (size_t i = 0; i < plane; ++i) {
      r[i] = float(p[3 * i]);
      g[i] = float(p[3 * i + 1]);
      b[i] = float(p[3 * i + 2]);
    }
    return;
  }
  for (int c = 0; c < C; ++c) {
    float* dst = chw + c * plane;
    for (size_t i = 0; i < plane; ++i) dst[i] = float(p[i * C + c]);
  }
}

}  // namespace convnet
