// Tests of idx_source (data/idx_source.cpp) on IDX files the tests write by hand into a temp
// directory, raw and gzip: exact pixel values and labels, gzip detected by content rather than
// name, and every malformed file raising an error that names the file and says what was expected.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "convnet/data.h"
#include "convnet/error.h"

#if __has_include(<zlib.h>)
#include <zlib.h>
#define TEST_HAVE_ZLIB 1
#endif

namespace convnet {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class IdxSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("convnet_idx_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
}

std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& body) {
  std::vector<uint8_t> out;
  put32(out, magic);
  for (uint32_t d : dims) put32(out, d);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

#ifdef TEST_HAVE_ZLIB
void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}
#endif

// 3 images of 4 x 5: pixel k of image i is (i * 20 + k) * 3 % 256; labels 2, 0, 4 (5 classes).
std::vector<uint8_t> image_body() {
  std::vector<uint8_t> body(3 * 4 * 5);
  for (size_t i = 0; i < body.size(); ++i) body[i] = uint8_t(i * 3 % 256);
  return body;
}
const std::vector<uint8_t> kLabels = {2, 0, 4};

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception of the expected type";
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "\"" << text << "\" lacks \"" << part << "\"";
}

void check_source(const DataSource& s) {
  ASSERT_EQ(s.size(), 3);
  EXPECT_EQ(s.channels(), 1);
  EXPECT_EQ(s.height(), 4);
  EXPECT_EQ(s.width(), 5);
  EXPECT_EQ(s.classes(), 5);  // max label + 1
  const auto body = image_body();
  std::vector<float> img(20);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(s.load(i, img.data()), kLabels[size_t(i)]);
    for (int k = 0; k < 20; ++k) ASSERT_EQ(img[size_t(k)], float(body[size_t(i * 20 + k)])) << i << " " << k;
  }
}

TEST_F(IdxSourceTest, ReadsRawFiles) {
  write_raw(path("img"), idx_bytes(0x803, {3, 4, 5}, image_body()));
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  auto s = idx_source(path("img"), path("lab"));
  check_source(*s);
  expect_contains(s->describe(2), path("img"));
  expect_contains(s->describe(2), "2");
  std::vector<float> img(20);
  EXPECT_THROW(s->load(3, img.data()), ValueError);
  EXPECT_THROW(s->load(-1, img.data()), ValueError);
}

#ifdef TEST_HAVE_ZLIB
TEST_F(IdxSourceTest, ReadsGzipByContentNotName) {
  // Gzip named .gz, gzip without the extension, and a raw file named .gz: all read.
  write_gzip(path("img.gz"), idx_bytes(0x803, {3, 4, 5}, image_body()));
  write_gzip(path("lab"), idx_bytes(0x801, {3}, kLabels));
  check_source(*idx_source(path("img.gz"), path("lab")));
  write_raw(path("raw-img.gz"), idx_bytes(0x803, {3, 4, 5}, image_body()));
  check_source(*idx_source(path("raw-img.gz"), path("lab")));
}

// A gzip file whose header promises more than deflate can expand it to (1032:1) is refused from
// the header, before anything is inflated or allocated.
TEST_F(IdxSourceTest, GzipPromisingMoreThanItCanHoldIsRefused) {
  write_gzip(path("img.gz"), idx_bytes(0x803, {1000, 1000, 1000}, image_body()));
  const auto msg = error_of<ValueError>([&] { read_idx(path("img.gz")); });
  expect_contains(msg, path("img.gz"));
  expect_contains(msg, "1000 x 1000 x 1000 (1000000000 bytes of data), more than a gzip file of ");
}

// A gzip bomb: a header promising 60 bytes in a stream of 8 MB. Inflating stops at the promised
// size plus one byte, which is the error (the message cannot say how much more there is: that
// would mean inflating it all).
TEST_F(IdxSourceTest, GzipHoldingMoreThanPromisedIsRefusedAtThePromisedSize) {
  auto body = image_body();
  body.resize(body.size() + (size_t(8) << 20), 0);
  write_gzip(path("bomb.gz"), idx_bytes(0x803, {3, 4, 5}, body));
  ASSERT_LT(fs::file_size(path("bomb.gz")), size_t(64) << 10);
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  const auto msg = error_of<ValueError>([&] { idx_source(path("bomb.gz"), path("lab")); });
  expect_contains(msg, path("bomb.gz"));
  expect_contains(msg, "3 x 4 x 5 (60 bytes of data) but the file holds more");
}
#endif

// Dimensions whose byte count wraps 2^64 (here 2^31 x 2^31 x 4 = 2^64, "0 bytes") once matched
// an empty body and passed as a valid file with 2^64 elements.
TEST_F(IdxSourceTest, DimensionsWhoseProductOverflowsAreRefused) {
  write_raw(path("wrap"), idx_bytes(0x803, {1u << 31, 1u << 31, 4}, {}));
  auto msg = error_of<ValueError>([&] { read_idx(path("wrap")); });
  expect_contains(msg, path("wrap"));
  expect_contains(msg, "2147483648 x 2147483648 x 4, more bytes than 64 bits count");
  // The element size counts too: 2^31 x 2^31 float64s are 2^65 bytes.
  write_raw(path("wrap8"), idx_bytes(0xE02, {1u << 31, 1u << 31}, {}));
  msg = error_of<ValueError>([&] { read_idx(path("wrap8")); });
  expect_contains(msg, "more bytes than 64 bits count");
}

TEST_F(IdxSourceTest, HeaderOverTheSizeLimitIsRefused) {
  write_raw(path("huge"), idx_bytes(0x803, {5, 65536, 65536}, image_body()));  // 20 GiB
  const auto msg = error_of<ValueError>([&] { read_idx(path("huge")); });
  expect_contains(msg, path("huge"));
  expect_contains(msg, "(21474836480 bytes of data), more than the limit of 16 GiB");
}

#ifdef TEST_HAVE_ZLIB
TEST_F(IdxSourceTest, CorruptGzipNamesTheFile) {
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  write_gzip(path("img.gz"), idx_bytes(0x803, {3, 4, 5}, image_body()));
  std::ifstream in(path("img.gz"), std::ios::binary);
  std::vector<uint8_t> gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  gz.resize(gz.size() - 12);  // cut into the deflate stream and the trailer
  write_raw(path("cut.gz"), gz);
  const auto msg = error_of<ValueError>([&] { idx_source(path("cut.gz"), path("lab")); });
  expect_contains(msg, path("cut.gz"));
}
#endif

TEST_F(IdxSourceTest, ReadsFashionMnistWhenInstalled) {
  const std::string root = "/usr/share/datasets/fashion-mnist/";
  if (!fs::exists(root + "train-images-idx3-ubyte.gz")) GTEST_SKIP() << root << " not installed";
  auto s = idx_source(root + "t10k-images-idx3-ubyte.gz", root + "t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(s->size(), 10000);
  EXPECT_EQ(s->height(), 28);
  EXPECT_EQ(s->width(), 28);
  EXPECT_EQ(s->classes(), 10);
  std::vector<float> img(28 * 28);
  const int label = s->load(0, img.data());
  EXPECT_EQ(label, 9);  // the first test image is an ankle boot
  for (float v : img) ASSERT_TRUE(v >= 0.f && v <= 255.f && v == float(int(v)));
}

TEST_F(IdxSourceTest, LabelsFileAsImagesIsAWrongMagic) {
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  const auto msg = error_of<ValueError>([&] { idx_source(path("lab"), path("lab")); });
  expect_contains(msg, path("lab"));
  expect_contains(msg, "0x00000801");  // what it found
  expect_contains(msg, "0x00000803");  // what it expected
}

TEST_F(IdxSourceTest, ImagesFileAsLabelsIsAWrongMagic) {
  write_raw(path("img"), idx_bytes(0x803, {3, 4, 5}, image_body()));
  const auto msg = error_of<ValueError>([&] { idx_source(path("img"), path("img")); });
  expect_contains(msg, path("img"));
  expect_contains(msg, "0x00000801");
}

TEST_F(IdxSourceTest, NotAnIdxFile) {
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  write_raw(path("text"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
  auto msg = error_of<ValueError>([&] { idx_source(path("text"), path("lab")); });
  expect_contains(msg, path("text"));
  expect_contains(msg, "not an IDX file");
  write_raw(path("tiny"), {0, 0});
  msg = error_of<ValueError>([&] { idx_source(path("tiny"), path("lab")); });
  expect_contains(msg, path("tiny"));
}

TEST_F(IdxSourceTest, WrongDataTypeIsRejected) {
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  // int32 images (type 0x0C): right dimensions, wrong element type.
  write_raw(path("int"), idx_bytes(0xC03, {3, 4, 5}, std::vector<uint8_t>(240)));
  const auto msg = error_of<ValueError>([&] { idx_source(path("int"), path("lab")); });
  expect_contains(msg, path("int"));
  expect_contains(msg, "0x00000803");
}

TEST_F(IdxSourceTest, SizeNotMatchingTheHeader) {
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  auto body = image_body();
  body.pop_back();
  write_raw(path("short"), idx_bytes(0x803, {3, 4, 5}, body));
  auto msg = error_of<ValueError>([&] { idx_source(path("short"), path("lab")); });
  expect_contains(msg, path("short"));
  expect_contains(msg, "3 x 4 x 5 (60 bytes of data) but the file holds 59");
  body.push_back(1);
  body.push_back(2);
  write_raw(path("long"), idx_bytes(0x803, {3, 4, 5}, body));
  msg = error_of<ValueError>([&] { idx_source(path("long"), path("lab")); });
  expect_contains(msg, "holds 61");
  write_raw(path("longlab"), idx_bytes(0x801, {3}, {1, 2, 3, 4}));
  write_raw(path("img"), idx_bytes(0x803, {3, 4, 5}, image_body()));
  msg = error_of<ValueError>([&] { idx_source(path("img"), path("longlab")); });
  expect_contains(msg, path("longlab"));
}

TEST_F(IdxSourceTest, TruncatedHeader) {
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  write_raw(path("img"), {0, 0, 8, 3, 0, 0, 0, 3, 0, 0});
  const auto msg = error_of<ValueError>([&] { idx_source(path("img"), path("lab")); });
  expect_contains(msg, path("img"));
  expect_contains(msg, "truncated");
}

TEST_F(IdxSourceTest, CountsThatDifferNameBothFiles) {
  write_raw(path("img"), idx_bytes(0x803, {3, 4, 5}, image_body()));
  write_raw(path("lab"), idx_bytes(0x801, {2}, {1, 0}));
  const auto msg = error_of<ValueError>([&] { idx_source(path("img"), path("lab")); });
  expect_contains(msg, path("img"));
  expect_contains(msg, path("lab"));
  expect_contains(msg, "3 images");
  expect_contains(msg, "2 labels");
}

TEST_F(IdxSourceTest, MissingFileIsNamed) {
  write_raw(path("lab"), idx_bytes(0x801, {3}, kLabels));
  const auto msg = error_of<RuntimeError>([&] { idx_source(path("nope"), path("lab")); });
  expect_contains(msg, path("nope"));
}

}  // namespace
}  // namespace convnet
