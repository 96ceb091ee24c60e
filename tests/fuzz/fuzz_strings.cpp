// The option strings users type: schedules, devices, the GPU math mode, data-set specs of the
// generated kind (others name files), pixel scales and whole `convnet train` option lists
// ("name=value" lines). The first byte picks the parser.
#include <sstream>
#include <utility>
#include <vector>

#include "convnet/dataset.h"
#include "convnet/device.h"
#include "convnet/job.h"
#include "convnet/schedule.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  using convnet::fuzz::expect_clear_error;
  switch (data[0] % 5) {
    case 0:
      expect_clear_error([&] { convnet::Schedule::parse(text).multiplier(0.5, 2.0); });
      break;
    case 1:
      expect_clear_error([&] { convnet::Device::parse(text); });
      break;
    case 2:
      expect_clear_error([&] { convnet::parse_math_mode(text); });
      break;
    case 3:
      // Only generated[...] specs: any other text is a path, and the fuzzer must not roam the disk.
      if (text.rfind("generated", 0) == 0)
        expect_clear_error([&] { convnet::open_dataset(text, 16); });
      break;
    default: {
      std::vector<std::pair<std::string, std::string>> args;
      std::istringstream lines(text);
      for (std::string line; std::getline(lines, line);) {
        const size_t eq = line.find('=');
        args.emplace_back(line.substr(0, eq), eq == std::string::npos ? "" : line.substr(eq + 1));
      }
      expect_clear_error([&] { convnet::JobOptions::parse(args); });
    }
  }
  return 0;
}
