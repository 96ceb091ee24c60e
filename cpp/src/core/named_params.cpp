#include "convnet/named_params.h"

#include "convnet/error.h"

namespace convnet {

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

}  // namespace

NamedParams parse_named_params(const std::string& text, const std::string& what) {
  const std::string t = trim(text);
  const auto open = t.find('[');
  NamedParams out;
  out.name = trim(t.substr(0, open));
  if (open == std::string::npos) return out;
  CONVNET_CHECK(t.back() == ']', what, " '", t, "': missing ']' (write ", out.name, "[key=value;key=value])");
  const std::string body = t.substr(open + 1, t.size() - open - 2);
  size_t start = 0;
  while (start <= body.size()) {
    size_t end = body.find(';', start);
    if (end == std::string::npos) end = body.size();
    const std::string item = trim(body.substr(start, end - start));
    start = end + 1;
    if (item.empty()) continue;
    const auto eq = item.find('=');
    CONVNET_CHECK(eq != std::string::npos, what, " '", t, "': '", item, "' is not key=value");
    out.params.emplace_back(trim(item.substr(0, eq)), trim(item.substr(eq + 1)));
  }
  return out;
}

}  // namespace convnet
