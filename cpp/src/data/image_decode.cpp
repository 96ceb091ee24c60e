// JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit RGB or RGBX, of a whole image or of
// the rectangle a caller needs, at the DCT scale it picks.
//
// Both libraries report fatal errors through a callback that must not return. We longjmp out of
// it (throwing a C++ exception through C frames is not allowed) back to a setjmp in a small
// function whose only locals are plain C structs; everything that owns memory (buffers, row
// pointers) lives in the caller's frame, so its state is well defined after the jump. The caller
// then throws DataError with the library's message.
#include "data/image_decode.h"

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include <sys/stat.h>

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

// What is wrong with an image of the file's dimensions ("" when nothing): larger than
// kMaxImageSide or kMaxImagePixels (data.h) is refused before any pixel memory is reserved,
// rather than risking a multi-gigabyte allocation in a data worker. The file's dimensions, not
// the decoded ones: a progressive JPEG keeps the whole file's coefficients at any DCT scale.
std::string too_large(int64_t width, int64_t height) {
  if (width <= kMaxImageSide && height <= kMaxImageSide && width * height <= kMaxImagePixels) return "";
  return detail::concat("image too large (", width, " x ", height, " pixels; the limit is ", kMaxImageSide,
                        " a side and ", kMaxImagePixels, " pixels)");
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

// libjpeg-turbo >= 1.5 (every distribution's libjpeg today): RGBX output, jpeg_crop_scanline,
// jpeg_skip_scanlines. (LIBJPEG_TURBO_VERSION_NUMBER only exists from 2.0 on.)
#if !defined(LIBJPEG_TURBO_VERSION) || !defined(JCS_EXTENSIONS)
#error "convnet's JPEG decoding needs libjpeg-turbo >= 1.5, not IJG libjpeg"
#endif

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

// libjpeg's state for one file: plain C data, so that longjmp may leave the functions below.
struct JpegState {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  bool created = false;
  int components = 3;     // per decoded pixel: 1 grey, 3 RGB, 4 RGBX or CMYK
  bool convert = false;   // grey or CMYK, turned into RGB(X) here
  bool inverted = false;  // Adobe CMYK (stored = 255 - ink)
};

// Converts one decoded row of `components` (1: grey, 4: CMYK) per pixel into RGB or RGBX.
void row_to_rgb(const uint8_t* src, uint8_t* dst, size_t pixels, int components, bool inverted,
                int channels) {
  if (components == 1) {
    for (size_t i = 0; i < pixels; ++i) {
      uint8_t* d = dst + i * size_t(channels);
      d[0] = d[1] = d[2] = src[i];
      if (channels == 4) d[3] = 255;
    }
    return;
  }
  // CMYK: R = (255 - C)(255 - K) / 255. Adobe (Photoshop) files store the inks inverted, so there
  // stored = 255 - ink and R = stored_C * stored_K / 255; libjpeg turns YCCK into that same
  // inverted CMYK.
  for (size_t i = 0; i < pixels; ++i) {
    const uint8_t* p = src + 4 * i;
    uint8_t* d = dst + i * size_t(channels);
    int c = p[0], m = p[1], y = p[2], k = p[3];
    if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
    d[0] = uint8_t((c * k + 127) / 255);
    d[1] = uint8_t((m * k + 127) / 255);
    d[2] = uint8_t((y * k + 127) / 255);
    if (channels == 4) d[3] = 255;
  }
}

// Reads the header and picks the output colour space. Returns false (message in s->err) when
// libjpeg fails. Only C structs are touched here, as setjmp/longjmp require.
bool jpeg_open(JpegState* s, const uint8_t* data, size_t size, int channels) {
  std::memset(&s->cinfo, 0, sizeof s->cinfo);
  s->cinfo.err = jpeg_std_error(&s->err.pub);
  s->err.pub.error_exit = jpeg_fail;
  s->err.pub.emit_message = jpeg_message;
  s->err.message[0] = 0;
  if (setjmp(s->err.jump)) return false;
  jpeg_create_decompress(&s->cinfo);
  s->created = true;
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&s->cinfo, TRUE);
  switch (s->cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
      s->cinfo.out_color_space = JCS_GRAYSCALE;
      s->components = 1;
      s->convert = true;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      s->cinfo.out_color_space = JCS_CMYK;  // libjpeg converts YCCK to (inverted) CMYK
      s->components = 4;
      s->convert = true;
      s->inverted = s->cinfo.saw_Adobe_marker;
      break;
    default:  // YCbCr, RGB; anything else fails in jpeg_start_decompress with libjpeg's message
      s->cinfo.out_color_space = channels == 4 ? JCS_EXT_RGBX : JCS_RGB;
      s->components = channels;
      break;
  }
  return true;
}

// One region decode: what is asked, and where it goes (buffers sized by the caller for the
// full scaled width, since jpeg_crop_scanline may widen the columns to an iMCU boundary).
struct JpegRegionJob {
  int scale, left, top, right, bottom, channels;
  uint8_t* out;      // rows (bottom - top) x stride
  size_t stride;     // full scaled width x channels
  uint8_t* scratch;  // kRows x full width x 4: grey / CMYK rows before conversion, the last row
  bool decode_rest;  // entropy-decode the rows below the region too
  int got_left = 0, got_width = 0;
};
constexpr unsigned kRows = 16;  // rows asked of jpeg_read_scanlines at once

bool jpeg_decode_region(JpegState* s, JpegRegionJob* job) {
  if (setjmp(s->err.jump)) return false;
  jpeg_decompress_struct& cinfo = s->cinfo;
  cinfo.scale_num = 1;
  cinfo.scale_denom = unsigned(job->scale);
  jpeg_start_decompress(&cinfo);
  JDIMENSION left = JDIMENSION(job->left), width = JDIMENSION(job->right - job->left);
  // Only the columns asked for (moved left to an iMCU boundary). With "fancy" upsampling the
  // outermost column of each side may differ from a full decode: the caller asks for a margin.
  if (width < cinfo.output_width) jpeg_crop_scanline(&cinfo, &left, &width);
  job->got_left = int(left);
  job->got_width = int(cinfo.output_width);
  // The rows above are entropy-decoded but not transformed; those below are read the same way
  // at the end.
  if (job->top > 0) jpeg_skip_scanlines(&cinfo, JDIMENSION(job->top));
  const size_t row_bytes = size_t(cinfo.output_width) * size_t(s->components);
  while (cinfo.output_scanline < JDIMENSION(job->bottom)) {
    JSAMPROW rows[kRows];
    const unsigned first = cinfo.output_scanline;
    const unsigned want = std::min(kRows, unsigned(job->bottom) - first);
    uint8_t* dst = job->out + size_t(first - unsigned(job->top)) * job->stride;
    for (unsigned r = 0; r < want; ++r)
      rows[r] = s->convert ? job->scratch + r * row_bytes : dst + r * job->stride;
    const unsigned got = jpeg_read_scanlines(&cinfo, rows, want);
    if (s->convert)
      for (unsigned r = 0; r < got; ++r)
        row_to_rgb(rows[r], dst + r * job->stride, cinfo.output_width, s->components,
                   s->inverted, job->channels);
  }
  // A file cut short below the region: entropy-decode the rest, so that libjpeg's "premature
  // end" rejects it whatever region was asked for. jpeg_skip_scanlines decodes only the
  // entropy-coded data of the rows it skips, but skipping to the very end just stops, so the last
  // row is read (into scratch). (No jpeg_finish_decompress: it would only go on to read past the
  // pixels to the EOI marker.)
  if (job->decode_rest && cinfo.output_scanline < cinfo.output_height) {
    if (cinfo.output_scanline + 1 < cinfo.output_height)
      jpeg_skip_scanlines(&cinfo, cinfo.output_height - cinfo.output_scanline - 1);
    JSAMPROW last = job->scratch;
    jpeg_read_scanlines(&cinfo, &last, 1);
  }
  return true;
}

// Whether the file ends with the end-of-image marker (FF D9), allowing a little trailing padding.
// The marker cannot occur inside entropy-coded data (an FF there is followed by 00 or a restart
// code), so a file cut short anywhere in its image data fails this test.
bool ends_with_eoi(const std::vector<uint8_t>& file) {
  constexpr size_t kTail = 32;
  const size_t begin = file.size() > kTail ? file.size() - kTail : 0;
  for (size_t i = file.size(); i-- > begin + 1;)
    if (file[i - 1] == 0xFF && file[i] == 0xD9) return true;
  return false;
}

// Destroys the libjpeg state on every path out of decode_jpeg.
struct JpegCloser {
  JpegState* s;
  ~JpegCloser() {
    if (s->created) jpeg_destroy_decompress(&s->cinfo);
  }
};

void decode_jpeg(const std::string& path, const std::vector<uint8_t>& file, int channels,
                 const std::function<RegionRequest(int, int, int)>& choose,
                 std::vector<uint8_t>& buffer, DecodedRegion& out) {
  JpegState state;
  JpegCloser closer{&state};
  auto fail = [&] { throw DataError(path + ": bad JPEG: " + state.err.message); };
  if (!jpeg_open(&state, file.data(), file.size(), channels)) fail();
  const int file_w = int(state.cinfo.image_width), file_h = int(state.cinfo.image_height);
  if (const std::string what = too_large(file_w, file_h); !what.empty())
    throw DataError(path + ": bad JPEG: " + what);
  const RegionRequest want = choose(file_w, file_h, 8);
  CONVNET_CHECK(want.scale == 1 || want.scale == 2 || want.scale == 4 || want.scale == 8,
                "decode_region: JPEG scale ", want.scale, " is not 1, 2, 4 or 8");
  const int full_w = (file_w + want.scale - 1) / want.scale;
  const int full_h = (file_h + want.scale - 1) / want.scale;
  CONVNET_CHECK(0 <= want.left && want.left < want.right && want.right <= full_w &&
                    0 <= want.top && want.top < want.bottom && want.bottom <= full_h,
                "decode_region: rectangle [", want.left, ", ", want.right, ") x [", want.top, ", ",
                want.bottom, ") outside the ", full_w, " x ", full_h, " image");
  // The rows below the region are needed only to notice a truncated file: a complete one (its
  // end marker present) stops after the region. (Damage inside the data is noticed where rows
  // are decoded: the region and everything above it.)
  JpegRegionJob job{want.scale, want.left, want.top, want.right, want.bottom, channels,
                    nullptr, size_t(full_w) * size_t(channels), nullptr, !ends_with_eoi(file)};
  const size_t rows = size_t(want.bottom - want.top);
  const size_t scratch = kRows * size_t(full_w) * 4;  // rows to convert, or the last row
  buffer.resize(rows * job.stride + scratch);
  job.out = buffer.data();
  job.scratch = buffer.data() + rows * job.stride;
  if (!jpeg_decode_region(&state, &job)) fail();
  out.file_width = file_w;
  out.file_height = file_h;
  out.scale = want.scale;
  out.full_width = full_w;
  out.full_height = full_h;
  out.left = job.got_left;
  out.top = want.top;
  out.width = job.got_width;
  out.height = want.bottom - want.top;
  out.channels = channels;
  out.stride = job.stride;
  out.pixels = buffer.data();
}

#else

void decode_jpeg(const std::string& path, const std::vector<uint8_t>&, int,
                 const std::function<RegionRequest(int, int, int)>&, std::vector<uint8_t>&,
                 DecodedRegion&) {
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

// Where the pixels go; owned by decode_png's frame, not by the setjmp function.
struct PngOutput {
  std::vector<uint8_t>* buffer;
  std::vector<png_bytep>* rows;
  int channels;  // 3: RGB, 4: RGBX
  int width = 0, height = 0;
};

// Same setjmp discipline as the JPEG functions.
bool png_decode_into(PngContext* ctx, PngOutput* out) {
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
  if (!too_large(width, height).empty()) {
    std::snprintf(ctx->message, kPngMessage, "%s", too_large(width, height).c_str());
    // Not png_error(png, too_large(...).c_str()): its longjmp would skip the string's destructor.
    png_longjmp(png, 1);
  }

  // Ask libpng for 8-bit RGB (or RGBX) whatever the file holds.
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
  if (out->channels == 4) png_set_filler(png, 0xFF, PNG_FILLER_AFTER);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t stride = size_t(width) * size_t(out->channels);
  if (png_get_rowbytes(png, info) != stride)
    png_error(png, "unexpected row layout after conversion to RGB");

  bool allocated = true;
  try {
    out->buffer->resize(stride * size_t(height));
    out->rows->resize(size_t(height));
  } catch (const std::bad_alloc&) {
    allocated = false;  // png_error (a longjmp) must not leave a catch block
  }
  if (!allocated) png_error(png, "out of memory");
  out->width = int(width);
  out->height = int(height);
  for (int64_t y = 0; y < height; ++y)
    (*out->rows)[size_t(y)] = out->buffer->data() + size_t(y) * stride;
  png_read_image(png, out->rows->data());
  // No png_read_end: the pixels are complete, and chunks after the image data don't matter.
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// PNG has no cheap partial or scaled decode: always the whole image, at scale 1.
void decode_png(const std::string& path, const std::vector<uint8_t>& file, int channels,
                const std::function<RegionRequest(int, int, int)>& choose,
                std::vector<uint8_t>& buffer, DecodedRegion& out) {
  std::vector<png_bytep> rows;
  PngContext ctx{file.data(), file.size(), 0, {0}};
  PngOutput png{&buffer, &rows, channels};
  if (!png_decode_into(&ctx, &png)) throw DataError(path + ": bad PNG: " + ctx.message);
  const RegionRequest want = choose(png.width, png.height, 1);
  CONVNET_CHECK(want.scale == 1, "decode_region: a PNG has no scale ", want.scale);
  out.file_width = out.full_width = out.width = png.width;
  out.file_height = out.full_height = out.height = png.height;
  out.scale = 1;
  out.left = out.top = 0;
  out.channels = channels;
  out.stride = size_t(png.width) * size_t(channels);
  out.pixels = buffer.data();
}

#else

void decode_png(const std::string& path, const std::vector<uint8_t>&, int,
                const std::function<RegionRequest(int, int, int)>&, std::vector<uint8_t>&,
                DecodedRegion&) {
  throw RuntimeError(path + ": this build of convnet has no PNG support (libpng was not found "
                     "when it was built)");
}

#endif  // CONVNET_WITH_PNG

}  // namespace

void read_file(const std::string& path, std::vector<uint8_t>& data) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw DataError(path + ": cannot open: " + std::strerror(errno));
  // One read of the size fstat gives, into a buffer that keeps its capacity between files; the
  // loop still copes with a file that grows or shrinks meanwhile.
  struct stat st;
  size_t size = 0;
  if (fstat(fileno(f), &st) == 0 && st.st_size > 0) size = size_t(st.st_size);
  data.resize(size + 1);  // one spare byte: a short read shows the end without another call
  size_t got = 0;
  for (;;) {
    got += std::fread(data.data() + got, 1, data.size() - got, f);
    if (got < data.size() || std::ferror(f)) break;
    data.resize(data.size() * 2 + 4096);
  }
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) throw DataError(path + ": read error: " + std::strerror(err));
  data.resize(got);
}

void decode_region(const std::string& path, const std::vector<uint8_t>& file, int channels,
                   const std::function<RegionRequest(int, int, int)>& choose,
                   std::vector<uint8_t>& buffer, DecodedRegion& out) {
  CONVNET_CHECK(channels == 3 || channels == 4, "decode_region: channels ", channels,
                " must be 3 (RGB) or 4 (RGBX)");
  if (is_jpeg(file)) return decode_jpeg(path, file, channels, choose, buffer, out);
  if (is_png(file)) return decode_png(path, file, channels, choose, buffer, out);
  throw DataError(path + ": not a JPEG or PNG image" + (file.empty() ? " (empty file)" : ""));
}

int dct_scale_for(int file_width, int file_height, int min_side) {
  const int64_t shorter = std::min(file_width, file_height);
  for (int scale : {8, 4, 2})
    if (min_side > 0 && shorter >= int64_t(scale) * min_side) return scale;
  return 1;
}

Image decode_image(const std::string& path, int min_side_hint) {
  std::vector<uint8_t> file, buffer;
  read_file(path, file);
  DecodedRegion region;
  decode_region(path, file, 3,
                [&](int w, int h, int max_scale) {
                  RegionRequest r;
                  r.scale = min_side_hint > 0 ? std::min(max_scale, dct_scale_for(w, h, min_side_hint)) : 1;
                  r.right = (w + r.scale - 1) / r.scale;
                  r.bottom = (h + r.scale - 1) / r.scale;
                  return r;
                },
                buffer, region);
  Image image;
  image.channels = 3;
  image.width = region.width;
  image.height = region.height;
  image.scale = region.scale;
  image.file_width = region.file_width;
  image.file_height = region.file_height;
  buffer.resize(size_t(region.width) * size_t(region.height) * 3);  // the whole image, no gaps
  image.pixels = std::move(buffer);
  return image;
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
