// Image decoding (whole, and the partial JPEG decodes the folder source relies on), resize +
// centre crop, windows of it, and folder_source, also through a Pipeline. The test images are
// written here with libjpeg's compressor and libpng's writer into a fresh temporary folder, so the
// expected pixels are known exactly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "convnet/error.h"  // first: data.h uses std::runtime_error without <stdexcept>
#include "convnet/data.h"
#include "convnet/dataset.h"
#include "data/image_decode.h"
#include "data/image_resize.h"
#include "data/image_window.h"

#ifdef CONVNET_WITH_JPEG
#include <jpeglib.h>
#endif
#ifdef CONVNET_WITH_PNG
#include <png.h>
#include <zlib.h>  // crc32, to re-sign a PNG header the tests rewrite (libpng needs zlib)
#endif

namespace convnet {
namespace {

namespace fs = std::filesystem;

#ifdef CONVNET_WITH_JPEG
#define REQUIRE_JPEG() (void)0
#else
#define REQUIRE_JPEG() \
  GTEST_SKIP() << "CONVNET_WITH_JPEG is not defined here: built without libjpeg"
#endif
#ifdef CONVNET_WITH_PNG
#define REQUIRE_PNG() (void)0
#else
#define REQUIRE_PNG() GTEST_SKIP() << "CONVNET_WITH_PNG is not defined here: built without libpng"
#endif

// A fresh folder under the system temp folder, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("convnet_image_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

[[maybe_unused]] void write_bytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}
[[maybe_unused]] std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// A smooth RGB test pattern: red along x, green along y, blue along the diagonal.
[[maybe_unused]] std::vector<uint8_t> gradient_rgb(int w, int h) {
  std::vector<uint8_t> px(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &px[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(20 + 200 * x / std::max(1, w - 1));
      p[1] = uint8_t(30 + 190 * y / std::max(1, h - 1));
      p[2] = uint8_t(240 - 200 * (x + y) / std::max(1, w + h - 2));
    }
  return px;
}

[[maybe_unused]] Image make_image(int w, int h, int c, std::vector<uint8_t> px) {
  Image im;
  im.width = w, im.height = h, im.channels = c, im.pixels = std::move(px);
  return im;
}

struct Diff {
  int max = 0;
  double mean = 0;
};
[[maybe_unused]] Diff compare(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  Diff d;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const int e = std::abs(int(a[i]) - int(b[i]));
    d.max = std::max(d.max, e);
    d.mean += e;
  }
  d.mean /= double(std::max<size_t>(1, a.size()));
  return d;
}

// Expects `f` to throw E with `part` in its message.
template <typename E, typename F>
void expect_throw_naming(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "expected an exception naming " << part;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
        << "message '" << e.what() << "' does not name " << part;
  }
}

#ifdef CONVNET_WITH_JPEG
struct JpegOptions {
  int quality = 95;
  J_COLOR_SPACE stored = JCS_UNKNOWN;  // the file's colour space; JCS_UNKNOWN: libjpeg's default
  bool adobe_marker = true;            // only changed for CMYK (libjpeg writes one for CMYK/YCCK)
  int h_samp = 0, v_samp = 0;          // the first component's sampling; 0: libjpeg's default
  bool progressive = false;
  int restart_rows = 0;                // restart markers every this many MCU rows
};

// Writes `components` x w x h interleaved pixels given in colour space `input`.
void write_jpeg(const fs::path& p, int w, int h, int components, J_COLOR_SPACE input,
                const std::vector<uint8_t>& px, JpegOptions o = {}) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  std::FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr) << p;
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = JDIMENSION(w);
  cinfo.image_height = JDIMENSION(h);
  cinfo.input_components = components;
  cinfo.in_color_space = input;
  jpeg_set_defaults(&cinfo);
  if (o.stored != JCS_UNKNOWN) jpeg_set_colorspace(&cinfo, o.stored);
  if (input == JCS_CMYK) cinfo.write_Adobe_marker = o.adobe_marker ? TRUE : FALSE;
  jpeg_set_quality(&cinfo, o.quality, TRUE);
  if (o.h_samp > 0) {
    cinfo.comp_info[0].h_samp_factor = o.h_samp;
    cinfo.comp_info[0].v_samp_factor = o.v_samp;
  }
  if (o.progressive) jpeg_simple_progression(&cinfo);
  cinfo.restart_in_rows = o.restart_rows;
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&px[size_t(cinfo.next_scanline) * w * components]);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}
#endif

#ifdef CONVNET_WITH_PNG
struct PngSpec {
  int width = 0, height = 0, color_type = PNG_COLOR_TYPE_RGB, bit_depth = 8;
  bool interlaced = false;
  std::vector<png_color> palette;
  std::vector<png_byte> trans;  // tRNS alphas for palette entries
};

// `rows` holds the raw rows exactly as PNG stores them (packed for depth < 8, big-endian 16-bit).
void write_png(const fs::path& p, const PngSpec& s, std::vector<uint8_t> rows) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  std::FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr) << p;
  png_init_io(png, f);
  png_set_IHDR(png, info, png_uint_32(s.width), png_uint_32(s.height), s.bit_depth, s.color_type,
               s.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!s.palette.empty()) png_set_PLTE(png, info, s.palette.data(), int(s.palette.size()));
  if (!s.trans.empty()) png_set_tRNS(png, info, s.trans.data(), int(s.trans.size()), nullptr);
  png_write_info(png, info);
  const size_t stride = rows.size() / size_t(s.height);
  std::vector<png_bytep> ptrs(size_t(s.height));
  for (int y = 0; y < s.height; ++y) ptrs[size_t(y)] = rows.data() + size_t(y) * stride;
  png_write_image(png, ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

void write_png_rgb(const fs::path& p, int w, int h, const std::vector<uint8_t>& rgb) {
  PngSpec s;
  s.width = w, s.height = h;
  write_png(p, s, rgb);
}
#endif

// ---------------------------------------------------------------------------------------------
// Decoding

TEST(ImageDecode, JpegGradientIsCloseToTheSource) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  TempDir dir;
  const int w = 96, h = 64;
  const auto src = gradient_rgb(w, h);
  write_jpeg(dir / "g.jpg", w, h, 3, JCS_RGB, src);
  const Image im = decode_image((dir / "g.jpg").string());
  ASSERT_EQ(im.channels, 3);
  ASSERT_EQ(im.width, w);
  ASSERT_EQ(im.height, h);
  const Diff d = compare(im.pixels, src);
  EXPECT_LE(d.max, 6);
  EXPECT_LE(d.mean, 1.5);
#endif
}

TEST(ImageDecode, PngRgbDecodesExactly) {
  REQUIRE_PNG();
#ifdef CONVNET_WITH_PNG
  TempDir dir;
  const int w = 37, h = 23;
  std::mt19937 rng(3);
  std::vector<uint8_t> src(size_t(w) * h * 3);
  for (auto& v : src) v = uint8_t(rng());
  write_png_rgb(dir / "r.png", w, h, src);
  const Image im = decode_image((dir / "r.png").string());
  EXPECT_EQ(im.width, w);
  EXPECT_EQ(im.height, h);
  EXPECT_EQ(im.pixels, src);
#endif
}

#ifdef CONVNET_WITH_PNG
// One PNG layout and the RGB it must decode to.
void expect_png_decodes_to(const PngSpec& s, const std::vector<uint8_t>& rows,
                           const std::vector<uint8_t>& want_rgb, const char* what) {
  TempDir dir;
  write_png(dir / "x.png", s, rows);
  const Image im = decode_image((dir / "x.png").string());
  ASSERT_EQ(im.width, s.width) << what;
  ASSERT_EQ(im.height, s.height) << what;
  ASSERT_EQ(im.channels, 3) << what;
  EXPECT_EQ(im.pixels, want_rgb) << what;
}
#endif

TEST(ImageDecode, PngLayoutsAllBecome8BitRgb) {
  REQUIRE_PNG();
#ifdef CONVNET_WITH_PNG
  const int w = 5, h = 3, n = w * h;
  std::vector<uint8_t> grey(n), want(size_t(n) * 3);
  for (int i = 0; i < n; ++i) grey[size_t(i)] = uint8_t(17 * i);
  for (int i = 0; i < n; ++i) std::fill_n(&want[size_t(i) * 3], 3, grey[size_t(i)]);
  PngSpec s;
  s.width = w, s.height = h;

  s.color_type = PNG_COLOR_TYPE_GRAY;
  expect_png_decodes_to(s, grey, want, "grey 8-bit");
  s.interlaced = true;
  expect_png_decodes_to(s, grey, want, "grey 8-bit interlaced");
  s.interlaced = false;

  std::vector<uint8_t> ga;  // grey + alpha: alpha dropped
  for (int i = 0; i < n; ++i) ga.push_back(grey[size_t(i)]), ga.push_back(uint8_t(255 - i));
  s.color_type = PNG_COLOR_TYPE_GRAY_ALPHA;
  expect_png_decodes_to(s, ga, want, "grey+alpha");

  std::vector<uint8_t> rgba;  // RGBA: alpha dropped
  std::vector<uint8_t> rgb(size_t(n) * 3);
  for (int i = 0; i < n; ++i) {
    const uint8_t px[3] = {uint8_t(i * 9), uint8_t(200 - i * 5), uint8_t(i * 13 % 256)};
    rgba.insert(rgba.end(), px, px + 3);
    rgba.push_back(uint8_t(i * 3));
    std::copy(px, px + 3, &rgb[size_t(i) * 3]);
  }
  s.color_type = PNG_COLOR_TYPE_RGB_ALPHA;
  expect_png_decodes_to(s, rgba, rgb, "RGBA");

  // 16-bit RGB: v16 = v8 * 257 reduces back to v8 exactly.
  std::vector<uint8_t> rgb16;
  for (uint8_t v : rgb) rgb16.push_back(v), rgb16.push_back(v);  // big-endian v * 257
  s.color_type = PNG_COLOR_TYPE_RGB;
  s.bit_depth = 16;
  expect_png_decodes_to(s, rgb16, rgb, "RGB 16-bit");
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
  {  // Reduced with rounding (v * 255 / 65535), not by keeping the high byte: 0x01C0 -> 2, not 1.
    PngSpec g16;
    g16.width = 4, g16.height = 1, g16.color_type = PNG_COLOR_TYPE_GRAY, g16.bit_depth = 16;
    expect_png_decodes_to(g16, {0x00, 0x00, 0x01, 0xC0, 0x80, 0x00, 0xFF, 0xFF},
                          {0, 0, 0, 2, 2, 2, 128, 128, 128, 255, 255, 255}, "grey 16-bit");
  }
#endif
  s.bit_depth = 8;

  // Palette with transparency (tRNS): the colours, alpha dropped.
  s.color_type = PNG_COLOR_TYPE_PALETTE;
  s.palette = {{10, 20, 30}, {200, 100, 50}, {0, 255, 7}};
  s.trans = {0, 128};
  std::vector<uint8_t> idx(n), want_pal(size_t(n) * 3);
  for (int i = 0; i < n; ++i) {
    idx[size_t(i)] = uint8_t(i % 3);
    const png_color c = s.palette[size_t(i % 3)];
    want_pal[size_t(i) * 3] = c.red, want_pal[size_t(i) * 3 + 1] = c.green;
    want_pal[size_t(i) * 3 + 2] = c.blue;
  }
  expect_png_decodes_to(s, idx, want_pal, "palette + tRNS");
  s.palette.clear(), s.trans.clear();

  // 1-bit grey: 0 -> 0, 1 -> 255. Rows are packed, most significant bit first.
  s.color_type = PNG_COLOR_TYPE_GRAY;
  s.bit_depth = 1;
  std::vector<uint8_t> bits(static_cast<size_t>(h)), want_bits(size_t(n) * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const bool on = (x + y) % 2 == 0;
      if (on) bits[size_t(y)] |= uint8_t(0x80 >> x);
      std::fill_n(&want_bits[size_t(y * w + x) * 3], 3, on ? 255 : 0);
    }
  expect_png_decodes_to(s, bits, want_bits, "grey 1-bit");
#endif
}

TEST(ImageDecode, GreyJpegGivesThreeEqualChannels) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  TempDir dir;
  const int w = 40, h = 30;
  std::vector<uint8_t> grey(size_t(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) grey[size_t(y) * w + x] = uint8_t(40 + 4 * x + 2 * y);
  write_jpeg(dir / "grey.jpg", w, h, 1, JCS_GRAYSCALE, grey);
  const Image im = decode_image((dir / "grey.jpg").string());
  ASSERT_EQ(im.channels, 3);
  ASSERT_EQ(im.width, w);
  ASSERT_EQ(im.height, h);
  std::vector<uint8_t> red;
  for (size_t i = 0; i < grey.size(); ++i) {
    ASSERT_EQ(im.pixels[3 * i], im.pixels[3 * i + 1]) << "pixel " << i;
    ASSERT_EQ(im.pixels[3 * i], im.pixels[3 * i + 2]) << "pixel " << i;
    red.push_back(im.pixels[3 * i]);
  }
  EXPECT_LE(compare(red, grey).max, 4);
#endif
}

#ifdef CONVNET_WITH_JPEG
// A CMYK test image: inks (c, m, y, k) varying smoothly, and the RGB they mean,
// R = (255 - C)(255 - K) / 255.
void cmyk_pattern(int w, int h, std::vector<uint8_t>& inks, std::vector<uint8_t>& rgb) {
  inks.clear(), rgb.clear();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int c = 200 * x / (w - 1), m = 180 * y / (h - 1), ye = 60, k = 30 + x + y;
      inks.insert(inks.end(), {uint8_t(c), uint8_t(m), uint8_t(ye), uint8_t(k)});
      for (int ink : {c, m, ye}) rgb.push_back(uint8_t(std::lround((255 - ink) * (255 - k) / 255.0)));
    }
}

void check_cmyk(const fs::path& p, int w, int h, const std::vector<uint8_t>& want) {
  const Image im = decode_image(p.string());
  ASSERT_EQ(im.channels, 3);
  ASSERT_EQ(im.width, w);
  ASSERT_EQ(im.height, h);
  const Diff d = compare(im.pixels, want);
  EXPECT_LE(d.max, 8) << p;
  EXPECT_LE(d.mean, 2.0) << p;
}
#endif

TEST(ImageDecode, AdobeCmykJpegIsInvertedCmyk) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  // Photoshop writes CMYK inverted (stored = 255 - ink) with an Adobe marker; so does this.
  TempDir dir;
  const int w = 48, h = 32;
  std::vector<uint8_t> inks, rgb;
  cmyk_pattern(w, h, inks, rgb);
  std::vector<uint8_t> stored(inks.size());
  for (size_t i = 0; i < inks.size(); ++i) stored[i] = uint8_t(255 - inks[i]);
  write_jpeg(dir / "adobe.jpg", w, h, 4, JCS_CMYK, stored);
  check_cmyk(dir / "adobe.jpg", w, h, rgb);
  // YCCK (Adobe transform 2) is the same inverted CMYK, colour-transformed by libjpeg.
  JpegOptions ycck;
  ycck.stored = JCS_YCCK;
  write_jpeg(dir / "ycck.jpg", w, h, 4, JCS_CMYK, stored, ycck);
  check_cmyk(dir / "ycck.jpg", w, h, rgb);
#endif
}

TEST(ImageDecode, PlainCmykJpegWithoutAdobeMarker) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  TempDir dir;
  const int w = 48, h = 32;
  std::vector<uint8_t> inks, rgb;
  cmyk_pattern(w, h, inks, rgb);
  JpegOptions plain;
  plain.adobe_marker = false;
  write_jpeg(dir / "plain.jpg", w, h, 4, JCS_CMYK, inks, plain);
  check_cmyk(dir / "plain.jpg", w, h, rgb);
#endif
}

TEST(ImageDecode, TruncatedJpegIsDataErrorNamingTheFile) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  TempDir dir;
  const int w = 64, h = 64;
  write_jpeg(dir / "full.jpg", w, h, 3, JCS_RGB, gradient_rgb(w, h));
  auto bytes = read_bytes(dir / "full.jpg");
  bytes.resize(bytes.size() / 2);
  const fs::path cut = dir / "cut.jpg";
  write_bytes(cut, bytes);
  expect_throw_naming<DataError>([&] { decode_image(cut.string()); }, cut.string());
  expect_throw_naming<DataError>([&] { decode_image(cut.string()); }, "Premature end");
  // Cut inside the headers: a libjpeg error proper rather than a warning.
  bytes.resize(40);
  write_bytes(cut, bytes);
  expect_throw_naming<DataError>([&] { decode_image(cut.string()); }, cut.string());
#endif
}

TEST(ImageDecode, NotAnImageIsDataErrorNamingTheFile) {
  TempDir dir;
  const fs::path text = dir / "x.jpg", empty = dir / "empty.png";
  { std::ofstream(text) << "hello, I am not a JPEG\n"; }
  { std::ofstream f(empty); }
  expect_throw_naming<DataError>([&] { decode_image(text.string()); }, text.string());
  expect_throw_naming<DataError>([&] { decode_image(text.string()); }, "not a JPEG or PNG image");
  expect_throw_naming<DataError>([&] { decode_image(empty.string()); }, empty.string());
  expect_throw_naming<DataError>([&] { decode_image(empty.string()); }, "not a JPEG or PNG image");
  const fs::path missing = dir / "missing.jpg";
  expect_throw_naming<DataError>([&] { decode_image(missing.string()); }, missing.string());
}

// A header promising a huge image (a decompression bomb, or a corrupt size field) is refused
// from the header, naming the file, before any pixel memory is reserved: also through the
// window path, whose DCT scaling (1/8) once let a 65000 x 65000 JPEG past a limit on the scaled
// size, and for an image with few pixels but a side over the limit.
TEST(ImageDecode, HugeHeaderIsRefusedNamingTheFile) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  TempDir dir;
  // (65000: libjpeg itself refuses more than 65500 a side.)
  const std::pair<uint32_t, uint32_t> sizes[] = {{65000, 65000}, {uint32_t(kMaxImageSide) + 1, 8}};
  for (const auto& [w, h] : sizes) {
    const std::string tag = std::to_string(w) + "x" + std::to_string(h);
    // JPEG: a real 16 x 16 file with its frame header (SOF0: FF C0, length, precision, height,
    // width) rewritten.
    const fs::path jpg = dir / (tag + ".jpg");
    write_jpeg(jpg, 16, 16, 3, JCS_RGB, gradient_rgb(16, 16));
    auto bytes = read_bytes(jpg);
    size_t sof = 0;
    while (sof + 9 < bytes.size() && !(bytes[sof] == 0xFF && bytes[sof + 1] == 0xC0)) ++sof;
    ASSERT_LT(sof + 9, bytes.size()) << "no SOF0 marker";
    bytes[sof + 5] = uint8_t(h >> 8), bytes[sof + 6] = uint8_t(h);
    bytes[sof + 7] = uint8_t(w >> 8), bytes[sof + 8] = uint8_t(w);
    write_bytes(jpg, bytes);
    // PNG: IHDR's width and height (big-endian, bytes 16-23) rewritten and its CRC recomputed.
    const fs::path png = dir / (tag + ".png");
    write_png_rgb(png, 16, 16, gradient_rgb(16, 16));
    bytes = read_bytes(png);
    for (int i = 0; i < 4; ++i) {
      bytes[size_t(16 + i)] = uint8_t(w >> (24 - 8 * i));
      bytes[size_t(20 + i)] = uint8_t(h >> (24 - 8 * i));
    }
    const uint32_t crc = uint32_t(crc32(0, bytes.data() + 12, 17));  // "IHDR" + 13 bytes of data
    for (int i = 0; i < 4; ++i) bytes[size_t(29 + i)] = uint8_t(crc >> (24 - 8 * i));
    write_bytes(png, bytes);
    for (const fs::path& p : {jpg, png}) {
      SCOPED_TRACE(p.string());
      expect_throw_naming<DataError>([&] { decode_image(p.string()); }, p.string());
      expect_throw_naming<DataError>([&] { decode_image(p.string()); }, "image too large (" +
                                     std::to_string(w) + " x " + std::to_string(h) + " pixels");
      ImageWindow all;
      all.height = all.width = 256;
      std::vector<uint8_t> out(4 * 256 * 256);
      expect_throw_naming<DataError>([&] { load_image_window(p.string(), 256, all, out.data()); },
                                     "image too large");
    }
  }
#endif
}

TEST(ImageDecode, CorruptPngChunkIsDataErrorNamingTheFile) {
  REQUIRE_PNG();
#ifdef CONVNET_WITH_PNG
  TempDir dir;
  const int w = 32, h = 32;
  write_png_rgb(dir / "ok.png", w, h, gradient_rgb(w, h));
  auto bytes = read_bytes(dir / "ok.png");
  const std::string idat = "IDAT";
  const size_t at = size_t(std::search(bytes.begin(), bytes.end(), idat.begin(), idat.end()) -
                           bytes.begin());
  ASSERT_LT(at, bytes.size());
  const size_t length = size_t(bytes[at - 4]) << 24 | size_t(bytes[at - 3]) << 16 |
                        size_t(bytes[at - 2]) << 8 | bytes[at - 1];
  const fs::path bad = dir / "bad.png";
  // A flipped byte inside the compressed data (zlib notices before the CRC is checked).
  auto flipped = bytes;
  flipped[at + 8] ^= 0x5A;
  write_bytes(bad, flipped);
  expect_throw_naming<DataError>([&] { decode_image(bad.string()); }, bad.string());
  // The data intact but the chunk's CRC wrong.
  auto bad_crc = bytes;
  bad_crc[at + 4 + length] ^= 0x01;
  write_bytes(bad, bad_crc);
  expect_throw_naming<DataError>([&] { decode_image(bad.string()); }, bad.string());
  expect_throw_naming<DataError>([&] { decode_image(bad.string()); }, "CRC");
  // Truncated inside the image data.
  bytes.resize(bytes.size() / 2);
  write_bytes(bad, bytes);
  expect_throw_naming<DataError>([&] { decode_image(bad.string()); }, bad.string());
#endif
}

TEST(ImageDecode, FormatComesFromTheBytesNotTheName) {
  REQUIRE_PNG();
#ifdef CONVNET_WITH_PNG
  // ImageNet's train set has a PNG named .JPEG.
  TempDir dir;
  const auto src = gradient_rgb(20, 10);
  write_png_rgb(dir / "really_png.JPEG", 20, 10, src);
  EXPECT_EQ(decode_image((dir / "really_png.JPEG").string()).pixels, src);
#endif
}

TEST(ImageDecode, DctScaledDecodeKeepsTheShorterSideAboveTheHint) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  TempDir dir;
  const int w = 2048, h = 1536;
  const auto src = gradient_rgb(w, h);
  const fs::path p = dir / "big.jpg";
  write_jpeg(p, w, h, 3, JCS_RGB, src, JpegOptions{90});
  struct Case { int hint, want_w, want_h; };
  for (Case c : {Case{0, 2048, 1536}, Case{256, 512, 384}, Case{192, 256, 192},
                 Case{100, 256, 192}, Case{500, 1024, 768}, Case{768, 1024, 768},
                 Case{769, 2048, 1536}, Case{5000, 2048, 1536}}) {
    const Image im = decode_image(p.string(), c.hint);
    EXPECT_EQ(im.width, c.want_w) << "hint " << c.hint;
    EXPECT_EQ(im.height, c.want_h) << "hint " << c.hint;
    if (c.hint > 0 && c.hint <= h) {
      EXPECT_GE(std::min(im.width, im.height), c.hint);
    }
  }
  // The 1/4-scale decode is the gradient, shrunk.
  const Image quarter = decode_image(p.string(), 256);
  const Image want = resize_shorter_and_centre_crop(make_image(w, h, 3, src), 384);
  const Image got = resize_shorter_and_centre_crop(quarter, 384);
  const Diff d = compare(got.pixels, want.pixels);
  EXPECT_LE(d.max, 6);
  EXPECT_LE(d.mean, 1.5);
#endif
}

// A busy RGB pattern (gradients plus hashed noise), so that any difference in chroma upsampling
// or in the IDCT shows.
[[maybe_unused]] std::vector<uint8_t> busy_rgb(int w, int h, uint32_t seed) {
  std::vector<uint8_t> px(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        uint32_t k = (uint32_t(y) * 7919u + uint32_t(x)) * 3u + uint32_t(c) + seed * 1000003u;
        k ^= k >> 15, k *= 0x2c1b3c6dU, k ^= k >> 12;
        const int smooth = (x * (60 + 40 * c)) / std::max(1, w) + (y * (90 - 30 * c)) / std::max(1, h);
        px[(size_t(y) * w + x) * 3 + c] = uint8_t(std::clamp(smooth + int(k % 120), 0, 255));
      }
  return px;
}

#ifdef CONVNET_WITH_JPEG
// decode_region of the whole image at `scale`.
DecodedRegion decode_whole(const std::string& path, const std::vector<uint8_t>& file, int channels,
                           int scale, std::vector<uint8_t>& buffer) {
  DecodedRegion r;
  decode_region(path, file, channels,
                [&](int w, int h, int) {
                  RegionRequest q;
                  q.scale = scale;
                  q.right = (w + scale - 1) / scale;
                  q.bottom = (h + scale - 1) / scale;
                  return q;
                },
                buffer, r);
  return r;
}

[[maybe_unused]] const uint8_t* pixel_at(const DecodedRegion& r, int x, int y) {
  return r.pixels + size_t(y - r.top) * r.stride + size_t(x - r.left) * size_t(r.channels);
}
#endif

TEST(ImageDecode, RegionDecodeHasTheFullDecodesPixels) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  // Every layout libjpeg's partial decoding treats differently: chroma subsampling (fancy
  // upsampling reads neighbouring rows and columns), progressive files (whole-image coefficient
  // buffer), restart markers, grey and CMYK; every DCT scale; rectangles anywhere, including at the
  // image's edges. Inside the requested rectangle the pixels must be exactly a full decode's (the
  // request has one column of margin each side, as load_image_window asks).
  struct Layout {
    const char* name;
    int components;
    J_COLOR_SPACE input;
    JpegOptions o;
  };
  auto opts = [](int h, int v, bool progressive = false, int restarts = 0) {
    JpegOptions o;
    o.quality = 90;
    o.h_samp = h, o.v_samp = v, o.progressive = progressive, o.restart_rows = restarts;
    return o;
  };
  const Layout layouts[] = {{"4:2:0", 3, JCS_RGB, opts(2, 2)},
                            {"4:2:2", 3, JCS_RGB, opts(2, 1)},
                            {"4:4:0", 3, JCS_RGB, opts(1, 2)},
                            {"4:4:4", 3, JCS_RGB, opts(1, 1)},
                            {"4:2:0 progressive", 3, JCS_RGB, opts(2, 2, true)},
                            {"4:2:0 restart markers", 3, JCS_RGB, opts(2, 2, false, 1)},
                            {"grey", 1, JCS_GRAYSCALE, JpegOptions{}},
                            {"CMYK", 4, JCS_CMYK, JpegOptions{}}};
  TempDir dir;
  std::mt19937 rng(17);
  std::vector<uint8_t> whole_buffer, region_buffer;
  int compared = 0;
  for (const Layout& layout : layouts)
    for (auto [w, h] : {std::array<int, 2>{500, 375}, {97, 61}, {61, 130}}) {
      const std::vector<uint8_t> rgb = busy_rgb(w, h, uint32_t(w + h));
      std::vector<uint8_t> px;
      for (size_t i = 0; i < size_t(w) * h; ++i)
        for (int c = 0; c < layout.components; ++c) px.push_back(rgb[i * 3 + size_t(c % 3)]);
      const fs::path p = dir / "x.jpg";
      write_jpeg(p, w, h, layout.components, layout.input, px, layout.o);
      std::vector<uint8_t> file;
      read_file(p.string(), file);
      for (int scale : {1, 2, 4, 8}) {
        const int channels = scale % 4 == 0 ? 3 : 4;
        const DecodedRegion whole = decode_whole(p.string(), file, channels, scale, whole_buffer);
        const int fw = whole.full_width, fh = whole.full_height;
        ASSERT_EQ(whole.width, fw);
        ASSERT_EQ(whole.height, fh);
        for (int trial = 0; trial < 12; ++trial) {
          // A random rectangle; the first trials touch the edges.
          int left = int(rng() % uint32_t(fw)), top = int(rng() % uint32_t(fh));
          int right = left + 1 + int(rng() % uint32_t(fw - left));
          int bottom = top + 1 + int(rng() % uint32_t(fh - top));
          if (trial == 0) left = 0;
          if (trial == 1) right = fw;
          if (trial == 2) top = 0;
          if (trial == 3) bottom = fh;
          DecodedRegion region;
          decode_region(p.string(), file, channels,
                        [&](int, int, int max_scale) {
                          EXPECT_EQ(max_scale, 8);
                          RegionRequest q;
                          q.scale = scale;
                          q.left = std::max(0, left - 1);
                          q.right = std::min(fw, right + 1);
                          q.top = top;
                          q.bottom = bottom;
                          return q;
                        },
                        region_buffer, region);
          ASSERT_LE(region.left, std::max(0, left - 1));
          ASSERT_GE(region.left + region.width, std::min(fw, right + 1));
          ASSERT_EQ(region.top, top);
          ASSERT_EQ(region.height, bottom - top);
          for (int y = top; y < bottom; ++y)
            for (int x = left; x < right; ++x)
              for (int c = 0; c < 3; ++c)
                ASSERT_EQ(pixel_at(region, x, y)[c], pixel_at(whole, x, y)[c])
                    << layout.name << " " << w << "x" << h << " at 1/" << scale << ": rectangle ["
                    << left << ", " << right << ") x [" << top << ", " << bottom << "), pixel ("
                    << x << ", " << y << ") channel " << c;
          ++compared;
        }
      }
    }
  EXPECT_EQ(compared, 8 * 3 * 4 * 12);
#endif
}

TEST(ImageDecode, TruncationBelowTheRegionIsStillAnError) {
  REQUIRE_JPEG();
#ifdef CONVNET_WITH_JPEG
  // A file without its end-of-image marker has the rows below a region entropy-decoded too: cut
  // short there, it is rejected like any truncated file, whatever part of it is asked for. A
  // complete one (also with padding after the marker) gives the region's pixels.
  TempDir dir;
  const int w = 200, h = 400;
  write_jpeg(dir / "tall.jpg", w, h, 3, JCS_RGB, busy_rgb(w, h, 3));
  const auto bytes = read_bytes(dir / "tall.jpg");
  auto corner = [&](const std::vector<uint8_t>& file, std::vector<uint8_t>& buffer) {
    DecodedRegion region;
    decode_region("x.jpg", file, 4,
                  [](int, int, int) {
                    RegionRequest q;
                    q.right = 50, q.bottom = 20;  // the top corner only
                    return q;
                  },
                  buffer, region);
    return region;
  };
  std::vector<uint8_t> whole_buffer, buffer;
  const DecodedRegion whole = decode_whole("x.jpg", bytes, 4, 1, whole_buffer);
  auto padded = bytes;
  padded.resize(bytes.size() + 100, 0);
  const std::vector<uint8_t>* complete[] = {&bytes, &padded};
  for (const auto* file : complete) {
    const DecodedRegion r = corner(*file, buffer);
    for (int y = 0; y < 20; ++y)
      for (int x = 0; x < 49; ++x)  // the last column may differ (see decode_region)
        for (int c = 0; c < 3; ++c) ASSERT_EQ(pixel_at(r, x, y)[c], pixel_at(whole, x, y)[c]);
  }
  auto cut = bytes;
  cut.resize(bytes.size() * 3 / 4);
  expect_throw_naming<DataError>([&] { corner(cut, buffer); }, "Premature end");
#endif
}

// ---------------------------------------------------------------------------------------------
// Resize + centre crop

TEST(ImageResize, ConstantImageStaysConstant) {
  for (auto [w, h, size] : {std::array<int, 3>{500, 375, 256}, {37, 91, 256}, {1000, 999, 17},
                           {3, 2, 7}}) {
    const Image in = make_image(w, h, 3, std::vector<uint8_t>(size_t(w) * h * 3, 173));
    const Image out = resize_shorter_and_centre_crop(in, size);
    ASSERT_EQ(out.width, size);
    ASSERT_EQ(out.height, size);
    ASSERT_EQ(out.channels, 3);
    for (uint8_t v : out.pixels) ASSERT_EQ(v, 173) << w << "x" << h << " -> " << size;
  }
}

TEST(ImageResize, HalvingIsTheExactBoxAverage) {
  // 600 x 400 -> shorter side 200: 300 x 200, crop columns 50..249 of the halved image.
  const int w = 600, h = 400, size = 200;
  std::mt19937 rng(7);
  std::vector<uint8_t> px(size_t(w) * h * 3);
  for (auto& v : px) v = uint8_t(rng());
  const Image out = resize_shorter_and_centre_crop(make_image(w, h, 3, px), size);
  ASSERT_EQ(out.width, size);
  ASSERT_EQ(out.height, size);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      for (int c = 0; c < 3; ++c) {
        int sum = 0;
        for (int dy = 0; dy < 2; ++dy)
          for (int dx = 0; dx < 2; ++dx)
            sum += px[(size_t(2 * y + dy) * w + 2 * (x + 50) + dx) * 3 + c];
        const int want = (2 * sum + 4) / 8;  // sum / 4 rounded half up
        ASSERT_EQ(out.pixels[(size_t(y) * size + x) * 3 + c], want)
            << "at y " << y << " x " << x << " c " << c;
      }
}

TEST(ImageResize, CentreCropOffsetLandscapeAndPortrait) {
  // The shorter side already equals `size`: no resampling, only the crop, at
  // floor((long - size) / 2).
  std::mt19937 rng(11);
  for (auto [w, h] : {std::array<int, 2>{300, 200}, {200, 301}, {201, 200}}) {
    const int size = 200;
    std::vector<uint8_t> px(size_t(w) * h * 3);
    for (auto& v : px) v = uint8_t(rng());
    const Image out = resize_shorter_and_centre_crop(make_image(w, h, 3, px), size);
    ASSERT_EQ(out.width, size);
    ASSERT_EQ(out.height, size);
    const int x0 = (w - size) / 2, y0 = (h - size) / 2;
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x)
        for (int c = 0; c < 3; ++c)
          ASSERT_EQ(out.pixels[(size_t(y) * size + x) * 3 + c],
                    px[(size_t(y + y0) * w + x + x0) * 3 + c])
              << w << "x" << h << " at " << y << "," << x;
  }
}

TEST(ImageResize, PortraitIsTheTransposeOfLandscape) {
  // The same picture standing up and lying down gives transposed crops: the same geometry on
  // both axes. (Not bit for bit: the vertical pass rounds to 1/256 of a level before the
  // horizontal one, so a pixel whose exact value lies within that of a half can round the other
  // way when the passes swap axes. Measured on this noise: 63 of 65536 pixels, by 1.)
  const int w = 500, h = 375, size = 256;
  std::mt19937 rng(5);
  std::vector<uint8_t> land(size_t(w) * h), port(size_t(w) * h);
  for (auto& v : land) v = uint8_t(rng());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) port[size_t(x) * h + y] = land[size_t(y) * w + x];
  const Image a = resize_shorter_and_centre_crop(make_image(w, h, 1, land), size);
  const Image b = resize_shorter_and_centre_crop(make_image(h, w, 1, port), size);
  ASSERT_EQ(a.width, size);
  ASSERT_EQ(b.height, size);
  int differ = 0;
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      const int d = std::abs(int(a.pixels[size_t(y) * size + x]) - int(b.pixels[size_t(x) * size + y]));
      ASSERT_LE(d, 1) << y << "," << x;
      differ += d;
    }
  EXPECT_LE(differ, size * size / 500);
}

TEST(ImageResize, LongerSideIsRoundedNotTruncated) {
  // 5 x 2 -> shorter side 1: the longer side is 2.5, rounded to 3 (not truncated to 2), so the
  // 1-pixel crop is the middle third: columns [5/3, 10/3) weighted 1/5, 3/5, 1/5.
  const Image in = make_image(5, 2, 1, {0, 50, 100, 150, 200, 0, 50, 100, 150, 200});
  const Image out = resize_shorter_and_centre_crop(in, 1);
  ASSERT_EQ(out.pixels.size(), 1u);
  EXPECT_EQ(out.pixels[0], 100);
}

TEST(ImageResize, EnlargingIsBilinear) {
  // 2 x 1 grey (0, 200) -> shorter side 4: 8 x 4, crop columns 2..5, sampled at
  // x = (o + 0.5) / 4 - 0.5 = 0.125, 0.375, 0.625, 0.875.
  const Image out = resize_shorter_and_centre_crop(make_image(2, 1, 1, {0, 200}), 4);
  ASSERT_EQ(out.width, 4);
  ASSERT_EQ(out.height, 4);
  for (int y = 0; y < 4; ++y) {
    EXPECT_EQ(out.pixels[size_t(y) * 4 + 0], 25);
    EXPECT_EQ(out.pixels[size_t(y) * 4 + 1], 75);
    EXPECT_EQ(out.pixels[size_t(y) * 4 + 2], 125);
    EXPECT_EQ(out.pixels[size_t(y) * 4 + 3], 175);
  }
}

TEST(ImageResize, BadArgumentsAreValueErrors) {
  const Image in = make_image(4, 4, 3, std::vector<uint8_t>(48, 1));
  EXPECT_THROW(resize_shorter_and_centre_crop(in, 0), ValueError);
  EXPECT_THROW(resize_shorter_and_centre_crop(Image{}, 8), ValueError);
}

TEST(ImageResize, ImageToChwPlanes) {
  const Image im = make_image(2, 1, 3, {1, 2, 3, 4, 5, 6});
  float chw[6];
  image_to_chw(im, chw);
  const float want[6] = {1, 4, 2, 5, 3, 6};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(chw[i], want[i]) << i;
}

TEST(ImageResize, DctScaledAxisKeepsTheFilesGeometry) {
  // 375 pixels decoded at 1/2 are 188 pixels, the last of them half outside the picture (the
  // encoder's padding): the picture ends at 187.5. Resized to 128, output j covers
  // [j, j + 1) * 187.5 / 128, so the last output, [186.03, 187.5), takes pixel 186 almost whole
  // and half of pixel 187; with the rounded-up 188 it would cover [186.5, 188).
  const AxisTaps t = axis_taps(375, 2, 128, 0, 128);
  ASSERT_EQ(t.first.size(), 128u);
  const double step = 187.5 / 128;
  const int last = 127;
  const int32_t* w = &t.weight[size_t(last) * size_t(t.taps)];
  double sum = 0, centre = 0;
  for (int k = 0; k < t.taps; ++k) {
    sum += w[k];
    centre += w[k] * (t.first[last] + k + 0.5);
  }
  EXPECT_EQ(sum, 65536.0);
  // The weights' centre: pixel 186 (centre 186.5) weighted by its overlap 187 - 186.03, pixel 187
  // (centre 187.5) by 0.5.
  const double lo = last * step;
  const double want = ((187 - lo) * 186.5 + 0.5 * 187.5) / (187.5 - lo);
  EXPECT_NEAR(centre / sum, want, 1e-3);
  EXPECT_EQ(t.hi, 188);  // reads up to the half pixel, never past it
  // Undecimated axes keep the identity: 256 -> 256.
  const AxisTaps same = axis_taps(256, 1, 256, 10, 5);
  for (int j = 0; j < 5; ++j) EXPECT_EQ(same.weight[size_t(j) * size_t(same.taps)], 65536);
}

TEST(ImageWindow, AnyWindowIsThatPartOfTheWholeCrop) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  // Landscape and portrait JPEGs (decoded in full, and at 1/2 and 1/4), a PNG, an image that is
  // enlarged, grey and CMYK JPEGs: the whole crop is what decode_image + resize give, and every
  // window, reflected or not, equals that part of it.
  TempDir dir;
  struct Case {
    const char* name;
    int w, h, size;
  };
  const Case cases[] = {{"land.jpg", 500, 375, 224},  {"port.jpg", 333, 500, 256},
                        {"half.jpg", 1000, 750, 256}, {"quarter.jpg", 1400, 1100, 160},
                        {"land.png", 300, 200, 128},  {"small.jpg", 40, 30, 64},
                        {"grey.jpg", 300, 200, 128},  {"cmyk.jpg", 200, 300, 128}};
  std::mt19937 rng(23);
  for (const Case& c : cases) {
    const fs::path p = dir / c.name;
    const std::vector<uint8_t> rgb = busy_rgb(c.w, c.h, 5);
    if (p.extension() == ".png") {
      write_png_rgb(p, c.w, c.h, rgb);
    } else if (c.name == std::string("grey.jpg")) {
      std::vector<uint8_t> grey;
      for (size_t i = 0; i < rgb.size(); i += 3) grey.push_back(rgb[i + 1]);
      write_jpeg(p, c.w, c.h, 1, JCS_GRAYSCALE, grey);
    } else if (c.name == std::string("cmyk.jpg")) {  // every ink, black included, in use
      std::vector<uint8_t> inks;
      for (size_t i = 0; i < rgb.size(); i += 3)
        inks.insert(inks.end(), {rgb[i], rgb[i + 1], rgb[i + 2], uint8_t(rgb[i] / 2 + 40)});
      write_jpeg(p, c.w, c.h, 4, JCS_CMYK, inks);
    } else {
      write_jpeg(p, c.w, c.h, 3, JCS_RGB, rgb);
    }
    const int size = c.size;
    std::vector<uint8_t> whole(size_t(size) * size * 4);
    ImageWindow all;
    all.height = all.width = size;
    load_image_window(p.string(), size, all, whole.data());
    // The same as decode_image + resize_shorter_and_centre_crop.
    const Image ref = resize_shorter_and_centre_crop(decode_image(p.string(), size), size);
    for (size_t i = 0; i < size_t(size) * size; ++i)
      for (int ch = 0; ch < 3; ++ch)
        ASSERT_EQ(whole[i * 4 + size_t(ch)], ref.pixels[i * 3 + size_t(ch)]) << c.name << " pixel " << i;
    for (int trial = 0; trial < 20; ++trial) {
      ImageWindow win;
      win.height = 1 + int(rng() % uint32_t(size));
      win.width = 1 + int(rng() % uint32_t(size));
      win.top = int(rng() % uint32_t(size - win.height + 1));
      win.left = int(rng() % uint32_t(size - win.width + 1));
      win.mirror = trial % 2 == 1;
      std::vector<uint8_t> got(size_t(win.height) * win.width * 4);
      load_image_window(p.string(), size, win, got.data());
      for (int y = 0; y < win.height; ++y)
        for (int x = 0; x < win.width; ++x) {
          const int sx = win.mirror ? win.width - 1 - x : x;
          for (int ch = 0; ch < 3; ++ch)
            ASSERT_EQ(got[(size_t(y) * win.width + x) * 4 + size_t(ch)],
                      whole[(size_t(win.top + y) * size + size_t(win.left + sx)) * 4 + size_t(ch)])
                << c.name << ": window " << win.height << " x " << win.width << " at (" << win.top
                << ", " << win.left << ")" << (win.mirror ? " mirrored" : "") << ", pixel (" << y
                << ", " << x << ")";
        }
    }
  }
  // A window outside the crop is a ValueError.
  ImageWindow bad;
  bad.height = bad.width = 10;
  bad.left = 60;
  std::vector<uint8_t> out(400);
  EXPECT_THROW(load_image_window((dir / "small.jpg").string(), 64, bad, out.data()), ValueError);
#endif
}

// ---------------------------------------------------------------------------------------------
// folder_source

#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
// root/b_dogs: two JPEGs + a README + a hidden file; root/a_cats: a .JPEG and a .PNG;
// root/c_birds: one .Jpeg; root/labels.txt (not a folder). Each image is one flat colour.
struct FolderFixture {
  TempDir dir;
  fs::path root = dir / "train";
  FolderFixture() {
    for (const char* c : {"a_cats", "b_dogs", "c_birds"}) fs::create_directories(root / c);
    auto flat = [](int w, int h, uint8_t r, uint8_t g, uint8_t b) {
      std::vector<uint8_t> px;
      for (int i = 0; i < w * h; ++i) px.insert(px.end(), {r, g, b});
      return px;
    };
    write_jpeg(root / "b_dogs" / "dog2.jpg", 40, 30, 3, JCS_RGB, flat(40, 30, 200, 10, 10));
    write_jpeg(root / "b_dogs" / "dog1.jpg", 30, 50, 3, JCS_RGB, flat(30, 50, 10, 200, 10));
    write_jpeg(root / "a_cats" / "cat.JPEG", 64, 48, 3, JCS_RGB, flat(64, 48, 10, 10, 200));
    write_png_rgb(root / "a_cats" / "another.PNG", 17, 19, flat(17, 19, 90, 80, 70));
    write_jpeg(root / "c_birds" / "bird.Jpeg", 20, 20, 3, JCS_RGB, flat(20, 20, 128, 128, 128));
    std::ofstream(root / "b_dogs" / "README.txt") << "not an image";
    std::ofstream(root / "b_dogs" / ".hidden.jpg") << "not an image either";
    std::ofstream(root / "labels.txt") << "cats dogs birds";
  }
};
#endif

TEST(FolderSource, SortedClassesIndicesAndPaths) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  FolderFixture fx;
  auto src = folder_source(fx.root.string(), 8);
  EXPECT_EQ(src->class_names(), (std::vector<std::string>{"a_cats", "b_dogs", "c_birds"}));
  EXPECT_EQ(src->classes(), 3);
  EXPECT_EQ(src->channels(), 3);
  EXPECT_EQ(src->height(), 8);
  EXPECT_EQ(src->width(), 8);
  ASSERT_EQ(src->size(), 5);  // README.txt, .hidden.jpg and labels.txt are not examples
  const std::vector<std::pair<std::string, int>> want = {
      {"a_cats/another.PNG", 0}, {"a_cats/cat.JPEG", 0}, {"b_dogs/dog1.jpg", 1},
      {"b_dogs/dog2.jpg", 1},   {"c_birds/bird.Jpeg", 2}};
  const uint8_t colours[5][3] = {{90, 80, 70}, {10, 10, 200}, {10, 200, 10}, {200, 10, 10},
                                 {128, 128, 128}};
  std::vector<float> chw(3 * 8 * 8);
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(src->describe(i), (fx.root / want[size_t(i)].first).string());
    EXPECT_EQ(src->load(i, chw.data()), want[size_t(i)].second) << i;
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 64; ++p)
        ASSERT_NEAR(chw[size_t(c * 64 + p)], colours[i][c], 3.0) << "example " << i << " c " << c;
  }
  EXPECT_THROW(src->describe(5), ValueError);
  EXPECT_THROW(src->load(-1, chw.data()), ValueError);
#endif
}

TEST(FolderSource, EmptyClassFolderIsValueErrorNamingIt) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  FolderFixture fx;
  fs::create_directories(fx.root / "d_empty");
  std::ofstream(fx.root / "d_empty" / "notes.txt") << "no images here";
  expect_throw_naming<ValueError>([&] { folder_source(fx.root.string()); },
                                  (fx.root / "d_empty").string());
#endif
}

TEST(FolderSource, MissingOrEmptyRootIsValueErrorNamingIt) {
  TempDir dir;
  const std::string missing = (dir / "nope").string();
  expect_throw_naming<ValueError>([&] { folder_source(missing); }, missing);
  fs::create_directories(dir / "flat");
  std::ofstream(dir / "flat" / "a.jpg") << "x";  // images but no class folders
  const std::string flat = (dir / "flat").string();
  expect_throw_naming<ValueError>([&] { folder_source(flat); }, flat);
  // A file given as the root.
  expect_throw_naming<ValueError>([&] { folder_source((dir / "flat" / "a.jpg").string()); },
                                  "a.jpg");
}

// The test part of a data set takes the training labels by class NAME: a test folder that
// lacks a class (here a_cats) keeps every other class's label, where matching by position would
// shift them all; a test class the training set lacks is a ValueError naming it.
TEST(FolderSource, TestFolderMatchesTrainingClassesByName) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  FolderFixture fx;
  const fs::path val = fx.dir / "val";
  fs::create_directories(val / "b_dogs");
  fs::create_directories(val / "c_birds");
  const std::vector<uint8_t> grey(20 * 20 * 3, 128);
  write_jpeg(val / "b_dogs" / "d.jpg", 20, 20, 3, JCS_RGB, grey);
  write_jpeg(val / "c_birds" / "b.jpg", 20, 20, 3, JCS_RGB, grey);
  const Dataset d = open_dataset(fx.dir.path().string(), 8);
  EXPECT_EQ(d.test->class_names(), (std::vector<std::string>{"a_cats", "b_dogs", "c_birds"}));
  EXPECT_EQ(d.test->classes(), 3);
  ASSERT_EQ(d.test->size(), 2);
  std::vector<float> chw(3 * 8 * 8);
  EXPECT_EQ(d.test->describe(0), (val / "b_dogs" / "d.jpg").string());
  EXPECT_EQ(d.test->load(0, chw.data()), 1);  // b_dogs, as in training (by position: 0)
  EXPECT_EQ(d.test->load(1, chw.data()), 2);  // c_birds (by position: 1)
  // Through the pipeline's window path too.
  PipelineOptions o;
  o.batch = 2;
  o.shuffle = false;
  o.train = false;
  Pipeline p(d.test, o);
  Batch b;
  ASSERT_TRUE(p.next(b));
  EXPECT_EQ(b.labels.to_vector(), (std::vector<float>{1, 2}));

  fs::create_directories(val / "d_fish");
  write_jpeg(val / "d_fish" / "f.jpg", 20, 20, 3, JCS_RGB, grey);
  expect_throw_naming<ValueError>([&] { open_dataset(fx.dir.path().string(), 8); }, (val / "d_fish").string());
  expect_throw_naming<ValueError>([&] { open_dataset(fx.dir.path().string(), 8); }, "no counterpart among the 3 training classes");
#endif
}

TEST(FolderSource, CorruptFileIsDataErrorNamingIt) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  FolderFixture fx;
  const fs::path bad = fx.root / "c_birds" / "broken.jpg";
  std::ofstream(bad) << "\xFF\xD8\xFF garbage";
  auto src = folder_source(fx.root.string(), 8);
  ASSERT_EQ(src->size(), 6);
  ASSERT_EQ(src->describe(5), bad.string());
  std::vector<float> chw(3 * 8 * 8);
  expect_throw_naming<DataError>([&] { src->load(5, chw.data()); }, bad.string());
  EXPECT_EQ(src->load(4, chw.data()), 2);  // its neighbour still loads
#endif
}

TEST(FolderSource, ConcurrentLoadsMatchSerialLoads) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  FolderFixture fx;
  auto src = folder_source(fx.root.string(), 16);
  const size_t n = size_t(src->size()), per = 3 * 16 * 16;
  std::vector<float> serial(n * per);
  for (size_t i = 0; i < n; ++i) src->load(int64_t(i), &serial[i * per]);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      std::vector<float> buf(per);
      for (int rep = 0; rep < 20; ++rep)
        for (size_t i = 0; i < n; ++i) {
          src->load(int64_t(i), buf.data());
          if (!std::equal(buf.begin(), buf.end(), serial.begin() + long(i * per))) ++mismatches;
        }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
#endif
}

#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
// The same examples as `inner`, through DataSource::load only: a Pipeline over it takes the
// general path (whole images, then augmentation), not the window path.
class WholeImages : public DataSource {
 public:
  explicit WholeImages(std::shared_ptr<DataSource> inner) : inner_(std::move(inner)) {}
  int64_t size() const override { return inner_->size(); }
  int channels() const override { return inner_->channels(); }
  int height() const override { return inner_->height(); }
  int width() const override { return inner_->width(); }
  int classes() const override { return inner_->classes(); }
  int load(int64_t i, float* chw) const override { return inner_->load(i, chw); }
  std::string describe(int64_t i) const override { return inner_->describe(i); }

 private:
  std::shared_ptr<DataSource> inner_;
};

std::vector<Batch> all_batches(std::shared_ptr<DataSource> src, PipelineOptions o,
                               const DataStats& stats, int epochs) {
  Pipeline p(std::move(src), o, stats);
  std::vector<Batch> out;
  Batch b;
  for (int e = 0; e < epochs; ++e)
    while (p.next(b)) out.push_back(b);
  return out;
}
#endif

TEST(FolderSource, PipelineWindowPathEqualsWholeImagePath) {
  REQUIRE_JPEG();
  REQUIRE_PNG();
#if defined(CONVNET_WITH_JPEG) && defined(CONVNET_WITH_PNG)
  // The pipeline decodes and resizes only each example's crop window from a folder; its batches
  // must be bitwise those of loading whole images and augmenting them: random crops, reflections,
  // colour noise, mean image, scale, groups of 16 and partial ones, a corrupt file replaced.
  TempDir dir;
  const fs::path root = dir / "train";
  std::mt19937 rng(29);
  const std::array<int, 2> shapes[] = {{120, 90}, {90, 130}, {300, 200}, {600, 520}, {70, 64}};
  for (int i = 0; i < 37; ++i) {
    const fs::path d = root / (i % 3 == 0 ? "a" : "b");
    fs::create_directories(d);
    const auto [w, h] = shapes[size_t(i) % 5];
    const std::string name = "img" + std::to_string(100 + i);
    if (i == 7) write_png_rgb(d / (name + ".png"), w, h, busy_rgb(w, h, uint32_t(i)));
    else write_jpeg(d / (name + ".jpg"), w, h, 3, JCS_RGB, busy_rgb(w, h, uint32_t(i)));
  }
  std::ofstream(root / "b" / "img999.jpg") << "\xFF\xD8\xFF not really";
  auto folder = folder_source(root.string(), 64);
  auto whole = std::make_shared<WholeImages>(folder);
  const DataStats stats = compute_stats(*folder);
  PipelineOptions o;
  o.workers = 2;
  o.augment.crop = 56;
  o.augment.pca_std = 0.1f;
  o.augment.scale = 1.f / 64;
  for (int batch : {16, 20, 32})
  for (bool mean_image : {true, false}) {
    o.batch = batch;
    o.augment.subtract_mean_image = mean_image;
    o.augment.mean_value = mean_image ? 0.f : 99.5f;
    const auto fast = all_batches(folder, o, stats, 2);
    const auto slow = all_batches(whole, o, stats, 2);
    ASSERT_EQ(fast.size(), slow.size());
    int64_t skipped = 0;
    for (size_t i = 0; i < fast.size(); ++i) {
      ASSERT_EQ(fast[i].images.shape(), slow[i].images.shape());
      ASSERT_EQ(std::memcmp(fast[i].images.data(), slow[i].images.data(),
                            sizeof(float) * size_t(fast[i].images.numel())), 0)
          << "batch " << i << " of " << batch << (mean_image ? ", mean image" : "");
      ASSERT_EQ(fast[i].labels.to_vector(), slow[i].labels.to_vector());
      EXPECT_EQ(fast[i].skipped, slow[i].skipped);
      skipped += fast[i].skipped;
    }
    EXPECT_EQ(skipped, 2);  // the corrupt file, once per epoch
  }
  // Test mode (centre crop, a scalar mean) and no reflections.
  o.train = false;
  o.augment.subtract_mean_image = false;
  o.augment.mean_value = 120.f;
  o.batch = 16;
  const auto fast = all_batches(folder, o, stats, 1), slow = all_batches(whole, o, stats, 1);
  ASSERT_EQ(fast.size(), slow.size());
  for (size_t i = 0; i < fast.size(); ++i)
    ASSERT_EQ(std::memcmp(fast[i].images.data(), slow[i].images.data(),
                          sizeof(float) * size_t(fast[i].images.numel())), 0)
        << "test-mode batch " << i;
#endif
}

}  // namespace
}  // namespace convnet
