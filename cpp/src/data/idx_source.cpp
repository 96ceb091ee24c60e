// IDX data source (MNIST, Fashion-MNIST): an images file (magic 0x00000803, uint8, N x H x W)
// and a labels file (magic 0x00000801, uint8, N), each raw or gzip-compressed. Both files are
// read whole at construction (Fashion-MNIST's training images are 47 MB), so load() is a copy.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <stdexcept>  // before data.h, which uses std::runtime_error without it

#include "convnet/data.h"
#include "convnet/error.h"
#ifdef CONVNET_WITH_ZLIB
#include <zlib.h>
#endif

namespace convnet {
namespace {

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

uint32_t big_endian32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// The whole file, decompressed when it starts with the gzip magic bytes 1f 8b (the content
// decides, not the extension: a renamed or already-gunzipped file still reads).
std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RuntimeError(path + ": cannot open IDX file (" + std::strerror(errno) + ")");
  in.seekg(0, std::ios::end);
  const std::streamoff length = in.tellg();
  in.seekg(0, std::ios::beg);
  if (length < 0) throw RuntimeError(path + ": cannot tell the file's size");
  unsigned char head[2] = {0, 0};
  const bool gzip = length >= 2 && in.read(reinterpret_cast<char*>(head), 2) && head[0] == 0x1f &&
                    head[1] == 0x8b;
  if (!gzip) {
    in.clear();
    in.seekg(0, std::ios::beg);
    std::vector<uint8_t> raw(static_cast<size_t>(length));
    if (length > 0 && !in.read(reinterpret_cast<char*>(raw.data()), length))
      throw RuntimeError(path + ": read error");
    return raw;
  }
#ifdef CONVNET_WITH_ZLIB
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw RuntimeError(path + ": cannot open gzip file");
  gzbuffer(f, 1 << 18);
  std::vector<uint8_t> out;
  const size_t chunk = size_t(1) << 22;
  size_t used = 0;
  for (;;) {
    out.resize(used + chunk);
    const int got = gzread(f, out.data() + used, static_cast<unsigned>(chunk));
    if (got < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      throw ValueError(path + ": corrupt gzip data (" + msg + ")");
    }
    used += size_t(got);
    if (size_t(got) < chunk) break;
  }
  // A truncated stream ends without an error from gzread; zlib reports it here.
  int code = Z_OK;
  std::string msg = gzerror(f, &code);
  gzclose(f);
  if (code != Z_OK && code != Z_STREAM_END)
    throw ValueError(path + ": corrupt or truncated gzip data (" + msg + ")");
  out.resize(used);
  return out;
#else
  throw RuntimeError(path +
                     ": is gzip-compressed, but this build of convnet has no zlib (install zlib "
                     "development files and rebuild, or gunzip the file)");
#endif
}

// Checks an IDX header of unsigned bytes with `ndim` dimensions and a body of exactly the size
// the header promises; returns the dimensions. `what` says what the file should hold.
std::vector<uint32_t> check_idx(const std::string& path, const std::vector<uint8_t>& data,
                                int ndim, const char* what) {
  const uint32_t want_magic = 0x00000800u | uint32_t(ndim);
  const std::string expected =
      std::string("expected ") + what + " (magic number " + hex32(want_magic) + ")";
  if (data.size() < 4)
    throw ValueError(detail::concat(path, ": not an IDX file (only ", data.size(), " bytes); ",
                                    expected));
  const uint32_t magic = big_endian32(data.data());
  if (data[0] != 0 || data[1] != 0)
    throw ValueError(path + ": not an IDX file (bad magic number " + hex32(magic) + "); " + expected);
  if (data[2] != 0x08)
    throw ValueError(detail::concat(path, ": IDX data type 0x", std::hex, int(data[2]), std::dec,
                                    " is not unsigned bytes (magic number ", hex32(magic), "); ",
                                    expected));
  if (data[3] != ndim)
    throw ValueError(detail::concat(path, ": IDX file has ", int(data[3]),
                                    " dimensions (magic number ", hex32(magic), "); ", expected));
  const size_t header = 4 + 4 * size_t(ndim);
  if (data.size() < header)
    throw ValueError(detail::concat(path, ": truncated IDX header (", data.size(), " bytes); ",
                                    expected));
  std::vector<uint32_t> dims(static_cast<size_t>(ndim));
  uint64_t body = 1;
  std::string dims_text;
  for (int i = 0; i < ndim; ++i) {
    dims[size_t(i)] = big_endian32(data.data() + 4 + 4 * i);
    body *= dims[size_t(i)];
    dims_text += (i ? " x " : "") + std::to_string(dims[size_t(i)]);
  }
  if (data.size() - header != body)
    throw ValueError(detail::concat(path, ": header says ", dims_text, " (", body,
                                    " bytes of data) but the file holds ", data.size() - header));
  return dims;
}

class IdxSource final : public DataSource {
 public:
  IdxSource(const std::string& images_path, const std::string& labels_path)
      : images_path_(images_path), labels_path_(labels_path) {
    images_ = read_maybe_gzip(images_path);
    const auto idims = check_idx(images_path, images_, 3, "N x H x W images of unsigned bytes");
    std::vector<uint8_t> labels = read_maybe_gzip(labels_path);
    const auto ldims = check_idx(labels_path, labels, 1, "N labels of unsigned bytes");
    if (idims[0] != ldims[0])
      throw ValueError(detail::concat(images_path, " holds ", idims[0], " images but ", labels_path,
                                      " holds ", ldims[0], " labels; expected the same count"));
    if (idims[0] == 0) throw ValueError(images_path + ": holds no images");
    if (idims[1] == 0 || idims[2] == 0)
      throw ValueError(detail::concat(images_path, ": images of size ", idims[1], " x ", idims[2]));
    count_ = idims[0];
    height_ = int(idims[1]);
    width_ = int(idims[2]);
    labels_.assign(labels.begin() + 8, labels.end());
    int max_label = 0;
    for (uint8_t l : labels_) max_label = std::max(max_label, int(l));
    classes_ = max_label + 1;
  }

  int64_t size() const override { return count_; }
  int channels() const override { return 1; }
  int height() const override { return height_; }
  int width() const override { return width_; }
  int classes() const override { return classes_; }

  int load(int64_t index, float* chw) const override {
    CONVNET_CHECK(index >= 0 && index < count_, "idx_source ", images_path_, ": index ", index,
                  " out of range [0, ", count_, ")");
    const size_t plane = size_t(height_) * size_t(width_);
    const uint8_t* src = images_.data() + 16 + size_t(index) * plane;  // 16-byte header
    for (size_t i = 0; i < plane; ++i) chw[i] = float(src[i]);
    return labels_[size_t(index)];
  }

  std::string describe(int64_t index) const override {
    return detail::concat("idx file ", images_path_, ", image ", index);
  }

 private:
  std::string images_path_, labels_path_;
  std::vector<uint8_t> images_;  // the whole file, header included
  std::vector<uint8_t> labels_;  // the body only
  int64_t count_ = 0;
  int height_ = 0, width_ = 0, classes_ = 0;
};

}  // namespace

std::shared_ptr<DataSource> idx_source(const std::string& images_path, const std::string& labels_path) {
  return std::make_shared<IdxSource>(images_path, labels_path);
}

}  // namespace convnet
