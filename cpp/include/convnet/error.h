// Errors raised by convnet. Every message names the culprit (layer, file, op) so a user can act on it.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace convnet {

// A mistake in what the user asked for: a model definition, a shape, an argument.
// Python sees it as ValueError.
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Something failed while running: a backend call, an allocation, a file operation.
// Python sees it as RuntimeError.
class RuntimeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace convnet

// CONVNET_CHECK(cond, parts...) throws ValueError with the parts concatenated.
#define CONVNET_CHECK(cond, ...)                                              \
  do {                                                                        \
    if (!(cond)) throw ::convnet::ValueError(::convnet::detail::concat(__VA_ARGS__)); \
  } while (0)
