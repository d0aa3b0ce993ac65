#include "worker/config/doc_generator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "worker/config/strict_json.h"

namespace dstrain::config::internal {

int DocGeneratorMain(
    int argc, char** argv, const char* tool, const std::function<std::string()>& generate,
    const std::function<absl::StatusOr<std::string>(const std::string&)>& replace) {
  if (argc == 1) {
    std::printf("%s\n", generate().c_str());
    return 0;
  }
  if (argc != 3 || std::strcmp(argv[1], "--write") != 0) {
    std::fprintf(stderr, "usage: %s [--write FILE]\n", tool);
    return 2;
  }
  std::filesystem::path path = argv[2];
  if (const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
      workspace != nullptr && path.is_relative()) {
    path = std::filesystem::path(workspace) / path;
  }
  absl::StatusOr<std::string> doc = ReadFileToString(path.string());
  if (doc.ok()) doc = replace(*doc);
  if (!doc.ok()) {
    std::fprintf(stderr, "%s: %s: %s\n", tool, path.c_str(),
                 std::string(doc.status().message()).c_str());
    return 1;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << *doc;
  out.close();
  if (!out) {
    std::fprintf(stderr, "%s: cannot write %s\n", tool, path.c_str());
    return 1;
  }
  return 0;
}

}  // namespace dstrain::config::internal
