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

size_t idx_element_size(uint8_t type) {
  switch (type) {
    case 0x08: case 0x09: return 1;  // unsigned, signed bytes
    case 0x0B: return 2;             // int16
    case 0x0C: case 0x0D: return 4;  // int32, float32
    case 0x0E: return 8;             // float64
    default: return 0;
  }
}

// Checks that an IDX file holds unsigned bytes in `ndim` dimensions; `what` says what it should hold.
void expect_idx(const IdxArray& a, const std::string& path, int ndim, const char* what) {
  const uint32_t magic = (uint32_t(a.type) << 8) | uint32_t(a.dims.size());
  const std::string expected = std::string("expected ") + what + " (magic number " +
                               hex32(0x00000800u | uint32_t(ndim)) + ")";
  if (a.type != 0x08)
    throw ValueError(detail::concat(path, ": IDX data type 0x", std::hex, int(a.type), std::dec,
                                    " is not unsigned bytes (magic number ", hex32(magic), "); ", expected));
  if (int(a.dims.size()) != ndim)
    throw ValueError(detail::concat(path, ": IDX file has ", a.dims.size(), " dimensions (magic number ",
                                    hex32(magic), "); ", expected));
}

// read_idx, first checking that the header promises unsigned bytes in `ndim` dimensions (ndim 0:
// anything); `what` says what the file should hold.
IdxArray read_idx_expecting(const std::string& path, int ndim, const char* what);

class IdxSource final : public DataSource {
 public:
  IdxSource(const std::string& images_path, const std::string& labels_path)
      : images_path_(images_path), labels_path_(labels_path) {
    IdxArray images = read_idx_expecting(images_path, 3, "N x H x W images of unsigned bytes");
    const IdxArray labels = read_idx_expecting(labels_path, 1, "N labels of unsigned bytes");
    const std::vector<uint32_t>& idims = images.dims;
    const std::vector<uint32_t>& ldims = labels.dims;
    if (idims[0] != ldims[0])
      throw ValueError(detail::concat(images_path, " holds ", idims[0], " images but ", labels_path,
                                      " holds ", ldims[0], " labels; expected the same count"));
    if (idims[0] == 0) throw ValueError(images_path + ": holds no images");
    if (idims[1] == 0 || idims[2] == 0)
      throw ValueError(detail::concat(images_path, ": images of size ", idims[1], " x ", idims[2]));
    count_ = idims[0];
    height_ = int(idims[1]);
    width_ = int(idims[2]);
    images_ = std::move(images.data);
    labels_ = labels.data;
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
    const uint8_t* src = images_.data() + size_t(index) * plane;
    for (size_t i = 0; i < plane; ++i) chw[i] = float(src[i]);
    return labels_[size_t(index)];
  }

  std::string describe(int64_t index) const override {
    return detail::concat("idx file ", images_path_, ", image ", index);
  }

 private:
  std::string images_path_, labels_path_;
  std::vector<uint8_t> images_, labels_;  // the files' bodies
  int64_t count_ = 0;
  int height_ = 0, width_ = 0, classes_ = 0;
};

}  // namespace

IdxArray read_idx(const std::string& path) { return read_idx_expecting(path, 0, nullptr); }

namespace {

IdxArray read_idx_expecting(const std::string& path, int want_ndim, const char* what) {
  const std::vector<uint8_t> file = read_maybe_gzip(path);
  if (file.size() < 4)
    throw ValueError(detail::concat(path, ": not an IDX file (only ", file.size(), " bytes)"));
  const uint32_t magic = big_endian32(file.data());
  if (file[0] != 0 || file[1] != 0)
    throw ValueError(path + ": not an IDX file (bad magic number " + hex32(magic) + ")");
  IdxArray a;
  a.type = file[2];
  const size_t element = idx_element_size(a.type);
  if (element == 0)
    throw ValueError(path + ": not an IDX file (unknown data type in magic number " + hex32(magic) + ")");
  const size_t ndim = file[3], header = 4 + 4 * ndim;
  if (ndim == 0 || file.size() < header)
    throw ValueError(detail::concat(path, ": truncated IDX header (", file.size(), " bytes, ", ndim, " dimensions)"));
  uint64_t count = 1;
  std::string dims_text;
  for (size_t i = 0; i < ndim; ++i) {
    a.dims.push_back(big_endian32(file.data() + 4 + 4 * i));
    count *= a.dims.back();
    dims_text += (i ? " x " : "") + std::to_string(a.dims.back());
  }
  if (want_ndim) expect_idx(a, path, want_ndim, what);  // what the header says first: the clearer message
  if (file.size() - header != count * element)
    throw ValueError(detail::concat(path, ": header says ", dims_text, " (", count * element,
                                    " bytes of data) but the file holds ", file.size() - header));
  a.data.assign(file.begin() + std::ptrdiff_t(header), file.end());
  // IDX is big-endian; the host (x86, ARM) is little-endian.
  if (element > 1)
    for (size_t i = 0; i < a.data.size(); i += element) std::reverse(a.data.begin() + std::ptrdiff_t(i),
                                                                     a.data.begin() + std::ptrdiff_t(i + element));
  return a;
}

}  // namespace

std::shared_ptr<DataSource> idx_source(const std::string& images_path, const std::string& labels_path) {
  return std::make_shared<IdxSource>(images_path, labels_path);
}

}  // namespace convnet
