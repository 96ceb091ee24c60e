// safetensors reading (validated header, one tensor at a time) and atomic writing.
#include "convnet/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "convnet/error.h"

// The format is little-endian; the bytes go to and from memory as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");

namespace convnet {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kLengthBytes = 8;

std::string shape_text(const std::vector<int64_t>& shape) { return json(shape).dump(); }

uint64_t decode_le64(const unsigned char* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

void encode_le64(uint64_t v, unsigned char* b) {
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
}

}  // namespace

void TensorHash::update(const float* data, size_t count) {
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(data);
  uint64_t h = state_;
  for (size_t i = 0; i < count; ++i) {
    uint32_t word;
    std::memcpy(&word, bytes + 4 * i, 4);
    h = (h ^ word) * 0x100000001b3ull;
  }
  state_ = h;
}

std::string TensorHash::hex_of(uint64_t checksum) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(checksum));
  return text;
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- reading ----

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(path_, ec);
  if (ec) fail("cannot read it: " + ec.message());
  file_.open(path_, std::ios::binary);
  if (!file_) fail(std::string("cannot open it: ") + std::strerror(errno));
  if (size < kLengthBytes)
    fail("the file is " + std::to_string(size) +
         " bytes long, too short to hold the 8-byte header "
         "length (truncated?)");
  unsigned char length_bytes[kLengthBytes];
  file_.read(reinterpret_cast<char*>(length_bytes), kLengthBytes);
  const uint64_t header_bytes = decode_le64(length_bytes);
  if (header_bytes > size - kLengthBytes)
    fail("header length " + std::to_string(header_bytes) + " runs past the end of the file (" +
         std::to_string(size) + " bytes; truncated, or not a safetensors file?)");
  std::string header(header_bytes, '\0');
  file_.read(header.data(), static_cast<std::streamsize>(header_bytes));
  if (!file_) fail("the file ended while reading the header");
  data_start_ = kLengthBytes + header_bytes;
  parse_header(header);
  check_layout(size - data_start_);
}

void SafetensorsReader::fail(const std::string& problem) const {
  throw ValueError("safetensors file '" + path_ + "': " + problem);
}

void SafetensorsReader::parse_header(const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) fail("the header is not a JSON object");
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "__metadata__")
      parse_metadata(it.value());
    else
      tensors_[it.key()] = parse_entry(it.key(), it.value());
  }
}

void SafetensorsReader::parse_metadata(const json& metadata) {
  if (!metadata.is_object()) fail("__metadata__ is not an object");
  for (auto m = metadata.begin(); m != metadata.end(); ++m) {
    if (!m.value().is_string()) fail("metadata '" + m.key() + "' is not a string");
    metadata_[m.key()] = m.value().get<std::string>();
  }
}

SafetensorsEntry SafetensorsReader::parse_entry(const std::string& name, const json& v) const {
  const std::string where = "tensor '" + name + "'";
  if (!v.is_object()) fail(where + ": expected an object, got " + v.dump());
  if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where + ": no dtype");
  const std::string dtype = v["dtype"].get<std::string>();
  if (dtype != "F32") fail(where + ": dtype " + dtype + " is not supported (only F32 is)");
  if (!v.contains("shape") || !v["shape"].is_array()) fail(where + ": no shape list");
  SafetensorsEntry e;
  int64_t numel = 1;
  const int64_t max_numel = std::numeric_limits<int64_t>::max() / 4;  // so that bytes fit too
  for (const json& d : v["shape"]) {
    if (!d.is_number_unsigned())
      fail(where + ": shape " + v["shape"].dump() + " is not a list of sizes");
    const uint64_t dim = d.get<uint64_t>();
    if (dim > uint64_t(max_numel) || (dim > 0 && numel > max_numel / int64_t(dim)))
      fail(where + ": shape " + v["shape"].dump() + " is too large");
    numel *= int64_t(dim);
    e.shape.push_back(int64_t(dim));
  }
  const json& offsets = v.contains("data_offsets") ? v["data_offsets"] : json();
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    fail(where + ": data_offsets must be [begin, end]");
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  if (e.end < e.begin) fail(where + ": data_offsets " + offsets.dump() + " end before they begin");
  if (e.end - e.begin != uint64_t(numel) * 4)
    fail(where + ": data_offsets " + offsets.dump() + " hold " + std::to_string(e.end - e.begin) +
         " bytes, but shape " + shape_text(e.shape) + " of F32 needs " + std::to_string(numel * 4));
  return e;
}

// The tensors must tile the data section exactly: in range, no overlaps, no gaps.
void SafetensorsReader::check_layout(uint64_t data_bytes) const {
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> by_offset;
  for (const auto& [name, e] : tensors_) by_offset.push_back({&name, &e});
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
  });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const auto& [name, e] : by_offset) {
    if (e->end > data_bytes)
      fail("tensor '" + *name + "' ends at byte " + std::to_string(e->end) +
           " of the data, but the "
           "file holds only " +
           std::to_string(data_bytes) + " bytes of data (truncated?)");
    if (e->begin < covered)
      fail("tensors '" + *previous + "' and '" + *name + "' overlap (before byte " +
           std::to_string(covered) + " of the data)");
    if (e->begin > covered)
      fail("bytes " + std::to_string(covered) + " to " + std::to_string(e->begin) +
           " of the data belong to no tensor");
    covered = e->end;
    previous = name;
  }
  if (covered != data_bytes)
    fail(std::to_string(data_bytes - covered) + " bytes after the last tensor belong to no tensor");
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("no tensor named '" + name + "'");
  return it->second;
}

void SafetensorsReader::read(const std::string& name, float* dst) {
  const SafetensorsEntry& e = entry(name);
  const uint64_t bytes = e.end - e.begin;
  if (bytes == 0) return;
  file_.clear();
  file_.seekg(static_cast<std::streamoff>(data_start_ + e.begin));
  file_.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(bytes));
  if (!file_ || uint64_t(file_.gcount()) != bytes)
    fail("the file ended while reading tensor '" + name + "' (truncated while open?)");
}

SafetensorsScan SafetensorsReader::scan() {
  // The tensors tile the data section (check_layout), so an offset names its tensor.
  std::vector<std::pair<uint64_t, const std::string*>> starts;
  for (const auto& [name, e] : tensors_)
    if (e.end > e.begin) starts.push_back({e.begin, &name});  // an empty tensor holds no value
  std::sort(starts.begin(), starts.end());
  uint64_t data_bytes = 0;
  for (const auto& [name, e] : tensors_) data_bytes = std::max(data_bytes, e.end);

  SafetensorsScan out;
  TensorHash hash;
  std::vector<float> chunk(size_t(1) << 18);  // 1 MiB
  file_.clear();
  file_.seekg(static_cast<std::streamoff>(data_start_));
  for (uint64_t done = 0; done < data_bytes;) {
    const uint64_t bytes = std::min<uint64_t>(data_bytes - done, chunk.size() * 4);
    file_.read(reinterpret_cast<char*>(chunk.data()), static_cast<std::streamsize>(bytes));
    if (!file_ || uint64_t(file_.gcount()) != bytes)
      fail("the file ended at byte " + std::to_string(done) + " of the data (truncated while open?)");
    const size_t count = size_t(bytes / 4);
    hash.update(chunk.data(), count);
    if (out.nonfinite_tensor.empty()) {
      for (size_t i = 0; i < count; ++i) {
        if (std::isfinite(chunk[i])) continue;
        const uint64_t at = done + 4 * i;
        auto it = std::upper_bound(starts.begin(), starts.end(),
                                   std::make_pair(at, static_cast<const std::string*>(nullptr)),
                                   [](const auto& a, const auto& b) { return a.first < b.first; });
        --it;  // the last tensor starting at or before `at`
        out.nonfinite_tensor = *it->second;
        out.nonfinite_index = int64_t((at - it->first) / 4);
        out.nonfinite_value = chunk[i];
        break;
      }
    }
    done += bytes;
  }
  out.checksum = hash.value();
  return out;
}

std::vector<float> SafetensorsReader::read(const std::string& name) {
  std::vector<float> out(static_cast<size_t>(entry(name).numel()));
  read(name, out.data());
  return out;
}

// ---- writing ----

namespace {

// "<target>.tmp.<pid>", written, flushed and renamed over the target by commit(); removed
// when it goes out of scope uncommitted, so a failed save leaves no debris and the old file.
class TempFile {
 public:
  explicit TempFile(std::string target)
      : target_(std::move(target)), temp_(target_ + ".tmp." + std::to_string(::getpid())) {
    file_ = std::fopen(temp_.c_str(), "wb");
    if (!file_) fail("cannot create the temporary file '" + temp_ + "'");
  }
  ~TempFile() {
    if (file_) std::fclose(file_);
    if (!committed_) std::remove(temp_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write(const void* data, size_t bytes) {
    if (bytes && std::fwrite(data, 1, bytes, file_) != bytes)
      fail("writing '" + temp_ + "' failed");
  }

  void commit() {
    if (std::fflush(file_) != 0) fail("flushing '" + temp_ + "' failed");
    if (::fsync(::fileno(file_)) != 0) fail("fsync of '" + temp_ + "' failed");
    FILE* f = file_;
    file_ = nullptr;
    if (std::fclose(f) != 0) fail("closing '" + temp_ + "' failed");
    if (std::rename(temp_.c_str(), target_.c_str()) != 0)
      fail("cannot rename '" + temp_ + "' over it");
    committed_ = true;
    sync_folder();
  }

 private:
  // The rename is durable only once the folder's entry is on disk.
  void sync_folder() {
    fs::path folder = fs::path(target_).parent_path();
    if (folder.empty()) folder = ".";
    const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) fail("cannot open its folder '" + folder.string() + "' to fsync it");
    const bool synced = ::fsync(fd) == 0 || errno == EINVAL;  // EINVAL: the filesystem can't
    const int saved = errno;
    ::close(fd);
    errno = saved;
    if (!synced) fail("fsync of its folder '" + folder.string() + "' failed");
  }

  [[noreturn]] void fail(const std::string& what) const {
    const std::string reason = std::strerror(errno);
    throw RuntimeError("cannot save '" + target_ + "': " + what + ": " + reason);
  }

  std::string target_, temp_;
  FILE* file_ = nullptr;
  bool committed_ = false;
};

std::string header_text(const std::map<std::string, SafetensorsSpan>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    CONVNET_CHECK(!name.empty() && name != "__metadata__", "safetensors: invalid tensor name '",
                  name, "'");
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      CONVNET_CHECK(d >= 0, "safetensors: tensor '", name, "' has shape ", shape_text(t.shape));
      numel *= d;
    }
    CONVNET_CHECK(numel == 0 || t.data, "safetensors: tensor '", name, "' has no data");
    const uint64_t bytes = uint64_t(numel) * 4;
    header[name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  return text;
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::map<std::string, SafetensorsSpan>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = header_text(tensors, metadata);
  TempFile out(path);
  unsigned char length[kLengthBytes];
  encode_le64(header.size(), length);
  out.write(length, sizeof length);
  out.write(header.data(), header.size());
  for (const auto& [name, t] : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    out.write(t.data, size_t(numel) * sizeof(float));
  }
  out.commit();
}

}  // namespace convnet
