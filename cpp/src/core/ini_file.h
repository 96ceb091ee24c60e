// INI files as Python's ConfigParser reads them (cuda-convnet2's layer files): [section] lines,
// `key = value` or `key: value`, comments from '#' or ';' at a line's start (and ' ;' inside one),
// continuation lines indented under their key. Keys compare without case (ConfigParser lowers
// them); sections keep their case. Every entry remembers its line for error messages.
#pragma once
#include <string>
#include <vector>

namespace convnet {

struct IniEntry {
  std::string key;    // as written
  std::string value;  // trimmed
  int line = 0;
};

struct IniSection {
  std::string name;
  int line = 0;
  std::vector<IniEntry> entries;
};

struct IniFile {
  std::string name;  // the path, for messages
  std::vector<IniSection> sections;
  // ValueError naming the file and line for a key outside a section, a line that is neither,
  // a section or key given twice.
  static IniFile parse(const std::string& text, const std::string& name);
  static IniFile read(const std::string& path);
  const IniSection* find(const std::string& section) const;
};

std::string lower(std::string s);
// Without leading and trailing spaces, tabs and carriage returns.
std::string trim(const std::string& s);
// A comma-separated value's items, each trimmed ("a, b" -> {"a", "b"}).
std::vector<std::string> split_commas(const std::string& s);

}  // namespace convnet
