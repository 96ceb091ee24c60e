// What every fuzz target shares: the input as a file (the parsers read paths, as users' files
// are), and the rule that bad input may only end in one of convnet's own errors, whose messages
// name the culprit. Anything else (a crash, a sanitizer report, std::bad_alloc, a library's own
// exception escaping) stops the fuzzer and is a bug.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "convnet/data.h"
#include "convnet/error.h"

namespace convnet::fuzz {

// The input written to a file of this process (one per target and suffix, overwritten each run).
inline std::string as_file(const uint8_t* data, size_t size, const std::string& suffix) {
  const std::string path = "/tmp/convnet-fuzz-" + std::to_string(::getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

// Runs `parse`, accepting only convnet's errors as the outcome of bad input.
template <typename F>
void expect_clear_error(F&& parse) {
  try {
    parse();
  } catch (const ValueError&) {
  } catch (const RuntimeError&) {
  } catch (const DataError&) {
  }
}

}  // namespace convnet::fuzz
