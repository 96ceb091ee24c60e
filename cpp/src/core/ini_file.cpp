#include "core/ini_file.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "convnet/error.h"

namespace convnet {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> items;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) items.push_back(trim(item));
  return items;
}

namespace {

// The offset of the first byte that does not belong to well-formed UTF-8 (no overlong forms,
// surrogates or code points past U+10FFFF), or npos. Model files are text: names and values
// become JSON strings, which must be UTF-8.
size_t first_invalid_utf8(const std::string& s) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = b[i];
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      const unsigned d = b[i + k];
      if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return i;
    }
    i += len;
  }
  return std::string::npos;
}

}  // namespace

IniFile IniFile::parse(const std::string& text, const std::string& name) {
  IniFile file;
  file.name = name;
  std::istringstream in(text);
  std::string raw;
  int line = 0;
  IniEntry* last = nullptr;  // what a continuation line continues
  while (std::getline(in, raw)) {
    ++line;
    if (const size_t bad = first_invalid_utf8(raw); bad != std::string::npos)
      throw ValueError(name + ":" + std::to_string(line) + ": not UTF-8 text (byte " + std::to_string(bad + 1) +
                       " of the line)");
    const std::string t = trim(raw);
    if (t.empty() || t[0] == '#' || t[0] == ';') {
      if (t.empty()) last = nullptr;
      continue;
    }
    auto where = [&] { return name + ":" + std::to_string(line) + ": "; };
    if ((raw[0] == ' ' || raw[0] == '\t') && last) {
      last->value += "\n" + t;
      continue;
    }
    if (t[0] == '[') {
      CONVNET_CHECK(t.back() == ']', where(), "'", t, "' is not a [section] line");
      const std::string section = trim(t.substr(1, t.size() - 2));
      CONVNET_CHECK(!section.empty(), where(), "an empty section name");
      CONVNET_CHECK(!file.find(section), where(), "section [", section, "] appears twice (first at line ",
                    file.find(section)->line, ")");
      file.sections.push_back({section, line, {}});
      last = nullptr;
      continue;
    }
    const size_t eq = t.find_first_of("=:");
    CONVNET_CHECK(eq != std::string::npos && eq > 0, where(), "'", t,
                  "' is neither a [section] nor a key=value line");
    CONVNET_CHECK(!file.sections.empty(), where(), "key '", trim(t.substr(0, eq)),
                  "' comes before any [section]");
    IniSection& s = file.sections.back();
    const std::string key = trim(t.substr(0, eq));
    std::string value = trim(t.substr(eq + 1));
    const size_t comment = value.find(" ;");
    if (comment != std::string::npos) value = trim(value.substr(0, comment));
    for (const IniEntry& e : s.entries)
      CONVNET_CHECK(lower(e.key) != lower(key), where(), "section [", s.name, "], key '", key,
                    "': given twice (first at line ", e.line, ")");
    s.entries.push_back({key, value, line});
    last = &s.entries.back();
  }
  return file;
}

IniFile IniFile::read(const std::string& path) {
  std::ifstream in(path);
  CONVNET_CHECK(bool(in), "'", path, "' cannot be opened");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

const IniSection* IniFile::find(const std::string& section) const {
  for (const IniSection& s : sections)
    if (s.name == section) return &s;
  return nullptr;
}

}  // namespace convnet
