// The safetensors file format (https://github.com/huggingface/safetensors), float32 only:
//
//   8 bytes   N, the header length, little-endian uint64
//   N bytes   JSON: {"__metadata__": {string: string},
//                    "<name>": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}
//             padded with spaces so that the data starts at a multiple of 8
//   the rest  the tensors' raw little-endian bytes, in sorted name order; offsets are relative to
//             the start of this data section, which the tensors cover exactly
//
// The reader validates the whole header when it opens a file (so a truncated or corrupt file is
// reported before anything is read) and then reads one tensor at a time, so a checkpoint never
// has to fit in memory twice. The writer replaces its target atomically.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace convnet {

// A 64-bit checksum of float32 data: FNV-1a over its 32-bit words, so the same for any split of
// the bytes into pieces of whole floats (a checkpoint hashes tensor by tensor when it writes and
// its file's data section in chunks when it reads). Every change of one word changes it.
class TensorHash {
 public:
  void update(const float* data, size_t count);
  uint64_t value() const { return state_; }
  std::string hex() const { return hex_of(state_); }
  static std::string hex_of(uint64_t checksum);  // 16 lowercase hex digits

 private:
  uint64_t state_ = 0xcbf29ce484222325ull;
};

// What one pass over a file's data section finds (SafetensorsReader::scan).
struct SafetensorsScan {
  uint64_t checksum = 0;          // TensorHash of the whole data section
  std::string nonfinite_tensor;   // the first tensor holding NaN or Inf ("" : none)
  int64_t nonfinite_index = -1;   // its flat index there
  float nonfinite_value = 0.f;
};

// A tensor's entry in a safetensors header.
struct SafetensorsEntry {
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

class SafetensorsReader {
 public:
  // Opens `path` and validates its header: length, JSON, dtypes (F32 only), shapes, offsets
  // (in range, matching the shape, neither overlapping nor leaving gaps), file size.
  // Throws ValueError naming the file and the problem.
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, SafetensorsEntry>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  // Throws ValueError naming the file and the tensor when there is no such tensor.
  const SafetensorsEntry& entry(const std::string& name) const;

  // Reads tensor `name` into dst (entry(name).numel() floats).
  void read(const std::string& name, float* dst);
  std::vector<float> read(const std::string& name);

  // Reads the whole data section once, in chunks: its TensorHash and its first non-finite value.
  SafetensorsScan scan();

 private:
  void parse_header(const std::string& text);
  void parse_metadata(const nlohmann::json& metadata);
  SafetensorsEntry parse_entry(const std::string& name, const nlohmann::json& entry) const;
  void check_layout(uint64_t data_bytes) const;
  [[noreturn]] void fail(const std::string& problem) const;  // ValueError naming the file

  std::string path_;
  std::ifstream file_;
  uint64_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, SafetensorsEntry> tensors_;
};

// A float32 tensor to write: its shape and the host memory holding its values (not owned).
struct SafetensorsSpan {
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Writes the tensors (in sorted name order) and the metadata to `path` atomically: the bytes go
// to "<path>.tmp.<pid>", which is flushed, fsynced and renamed over `path`, and then the folder
// is fsynced. On failure the temporary file is removed, `path` is left as it was, and a
// RuntimeError names the path and the system's reason.
void write_safetensors(const std::string& path,
                       const std::map<std::string, SafetensorsSpan>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace convnet
