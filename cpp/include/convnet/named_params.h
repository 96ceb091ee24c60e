// The `name[key=value;key=value]` form that learning-rate schedules ("step[every=2;factor=0.1]")
// and generated data sets ("generated[count=512;classes=4]") are written in.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace convnet {

struct NamedParams {
  std::string name;                                         // before '[' (trimmed)
  std::vector<std::pair<std::string, std::string>> params;  // in order, keys and values trimmed
};

// Splits `text`; empty items ("a=1;;b=2") are skipped. ValueError naming `what` and the text for a
// missing ']' or an item that is not key=value. The caller checks the names, keys and values.
NamedParams parse_named_params(const std::string& text, const std::string& what);

}  // namespace convnet
