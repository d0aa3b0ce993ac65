// A main() for fuzz targets built without libFuzzer (gcc, the plain and ASan phases of
// tools/test.sh): runs LLVMFuzzerTestOneInput once over every file named on the command line, or
// in a directory named there, so each target's checked-in corpus is a regression test wherever the
// tree builds. Arguments starting with '-' are libFuzzer flags and are ignored, so run_fuzzer.sh
// calls both kinds of binary the same way. Exits 0 when every input ran; a crash or sanitizer
// report ends the process as it would under libFuzzer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

bool RunFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  // A copy in a buffer of exactly the input's size, so ASan sees reads past its end.
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] == '-') continue;
    const std::filesystem::path arg(argv[i]);
    if (std::filesystem::is_directory(arg)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(arg)) {
        if (entry.is_regular_file()) inputs.push_back(entry.path());
      }
    } else {
      inputs.push_back(arg);
    }
  }
  std::sort(inputs.begin(), inputs.end());
  int failed = 0;
  for (const auto& path : inputs) failed += RunFile(path) ? 0 : 1;
  std::printf("replayed %zu inputs without libFuzzer, %d unreadable\n", inputs.size(), failed);
  return failed == 0 ? 0 : 1;
}
