// IDX data source (MNIST, Fashion-MNIST): an images file (magic 0x00000803, uint8, N x H x W)
// and a labels file (magic 0x00000801, uint8, N), each raw or gzip-compressed. Both files are
// read whole at construction (Fashion-MNIST's training images are 47 MB), so load() is a copy.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <sys/stat.h>

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

// The bytes of an IDX file, decompressed when it starts with the gzip magic bytes 1f 8b (the
// content decides, not the extension: a renamed or already-gunzipped file still reads). Read
// piece by piece, so that the header is checked before the body is allocated, and a gzip
// stream is inflated no further than the header promises (a small file can inflate to
// gigabytes).
class IdxInput {
 public:
  explicit IdxInput(const std::string& path) : path_(path) {
    raw_ = std::fopen(path.c_str(), "rb");
    if (!raw_) throw RuntimeError(path + ": cannot open IDX file (" + std::strerror(errno) + ")");
    struct stat st;
    if (fstat(fileno(raw_), &st) != 0) throw RuntimeError(path + ": cannot tell the file's size");
    file_size_ = uint64_t(st.st_size);
    unsigned char head[2] = {0, 0};
    gzip_ = std::fread(head, 1, 2, raw_) == 2 && head[0] == 0x1f && head[1] == 0x8b;
    std::rewind(raw_);
    if (!gzip_) return;
#ifdef CONVNET_WITH_ZLIB
    std::fclose(raw_);
    raw_ = nullptr;
    gz_ = gzopen(path.c_str(), "rb");
    if (!gz_) throw RuntimeError(path + ": cannot open gzip file");
    gzbuffer(gz_, 1 << 18);
#else
    throw RuntimeError(path +
                       ": is gzip-compressed, but this build of convnet has no zlib (install zlib "
                       "development files and rebuild, or gunzip the file)");
#endif
  }
  ~IdxInput() {
    if (raw_) std::fclose(raw_);
#ifdef CONVNET_WITH_ZLIB
    if (gz_) gzclose(gz_);
#endif
  }
  IdxInput(const IdxInput&) = delete;
  IdxInput& operator=(const IdxInput&) = delete;

  bool gzip() const { return gzip_; }
  uint64_t file_size() const { return file_size_; }

  // Up to n bytes into dst; fewer only at the end of the data. ValueError naming the file for
  // corrupt or truncated gzip data.
  size_t read(uint8_t* dst, size_t n) {
    size_t got = 0;
    if (raw_) {
      got = std::fread(dst, 1, n, raw_);
      if (got < n && std::ferror(raw_)) throw RuntimeError(path_ + ": read error");
      return got;
    }
#ifdef CONVNET_WITH_ZLIB
    while (got < n) {
      const unsigned chunk = unsigned(std::min<size_t>(n - got, size_t(1) << 30));
      const int r = gzread(gz_, dst + got, chunk);
      if (r < 0) {
        int code = 0;
        throw ValueError(path_ + ": corrupt gzip data (" + gzerror(gz_, &code) + ")");
      }
      got += size_t(r);
      if (unsigned(r) < chunk) break;
    }
    if (got < n) {  // the end: a truncated stream ends without an error from gzread
      int code = Z_OK;
      const std::string msg = gzerror(gz_, &code);
      if (code != Z_OK && code != Z_STREAM_END)
        throw ValueError(path_ + ": corrupt or truncated gzip data (" + msg + ")");
    }
#endif
    return got;
  }

 private:
  std::string path_;
  std::FILE* raw_ = nullptr;
#ifdef CONVNET_WITH_ZLIB
  gzFile gz_ = nullptr;
#endif
  bool gzip_ = false;
  uint64_t file_size_ = 0;
};

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
    if (idims[1] == 0 || idims[2] == 0 || idims[1] > uint32_t(kMaxSourceSide) ||
        idims[2] > uint32_t(kMaxSourceSide))
      throw ValueError(detail::concat(images_path, ": images of size ", idims[1], " x ", idims[2],
                                      " (each side must be in [1, ", kMaxSourceSide, "])"));
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
  IdxInput in(path);
  uint8_t head[4];
  const size_t got_head = in.read(head, 4);
  if (got_head < 4)
    throw ValueError(detail::concat(path, ": not an IDX file (only ", got_head, " bytes)"));
  const uint32_t magic = big_endian32(head);
  if (head[0] != 0 || head[1] != 0)
    throw ValueError(path + ": not an IDX file (bad magic number " + hex32(magic) + ")");
  IdxArray a;
  a.type = head[2];
  const size_t element = idx_element_size(a.type);
  if (element == 0)
    throw ValueError(path + ": not an IDX file (unknown data type in magic number " + hex32(magic) + ")");
  const size_t ndim = head[3], header = 4 + 4 * ndim;
  std::vector<uint8_t> dims(4 * ndim);
  const size_t got_dims = in.read(dims.data(), dims.size());
  if (ndim == 0 || got_dims < dims.size())
    throw ValueError(detail::concat(path, ": truncated IDX header (", 4 + got_dims, " bytes, ", ndim,
                                    " dimensions)"));
  // The body's size, with every multiplication checked: dimensions whose product wraps 2^64
  // could otherwise match a small file and leave a source promising billions of images.
  uint64_t bytes = element;
  bool overflow = false;
  std::string dims_text;
  for (size_t i = 0; i < ndim; ++i) {
    a.dims.push_back(big_endian32(dims.data() + 4 * i));
    overflow = overflow || __builtin_mul_overflow(bytes, uint64_t(a.dims.back()), &bytes);
    dims_text += (i ? " x " : "") + std::to_string(a.dims.back());
  }
  if (want_ndim) expect_idx(a, path, want_ndim, what);  // what the header says first: the clearer message
  if (overflow)
    throw ValueError(detail::concat(path, ": header says ", dims_text, ", more bytes than 64 bits count"));
  if (bytes > kMaxIdxBytes)
    throw ValueError(detail::concat(path, ": header says ", dims_text, " (", bytes,
                                    " bytes of data), more than the limit of ", kMaxIdxBytes >> 30,
                                    " GiB"));
  // Before allocating: the file must be able to hold what the header promises.
  if (!in.gzip() && in.file_size() - header != bytes)
    throw ValueError(detail::concat(path, ": header says ", dims_text, " (", bytes,
                                    " bytes of data) but the file holds ", in.file_size() - header));
  if (in.gzip() && bytes / kMaxGzipRatio > in.file_size())
    throw ValueError(detail::concat(path, ": header says ", dims_text, " (", bytes,
                                    " bytes of data), more than a gzip file of ", in.file_size(),
                                    " bytes can hold (deflate compresses at most 1032:1)"));
  a.data.resize(size_t(bytes));
  const size_t got = in.read(a.data.data(), a.data.size());
  if (got != bytes)
    throw ValueError(detail::concat(path, ": header says ", dims_text, " (", bytes,
                                    " bytes of data) but the file holds ", got));
  uint8_t extra = 0;
  if (in.read(&extra, 1) != 0)  // stop there: not one byte more is inflated or read
    throw ValueError(detail::concat(path, ": header says ", dims_text, " (", bytes,
                                    " bytes of data) but the file holds more"));
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
