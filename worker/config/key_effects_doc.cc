// Prints the generated table of docs/configuration.md ("Keys without effect") from
// key_effects.cc; with `--write FILE`, replaces the table in FILE instead. Under `bazel run`, a
// relative FILE is taken relative to the workspace.
//
//   bazel run //worker/config:key_effects_doc -- --write docs/configuration.md
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "worker/config/key_effects.h"
#include "worker/config/strict_json.h"

int main(int argc, char** argv) {
  namespace internal = dstrain::config::internal;
  if (argc == 1) {
    std::printf("%s\n", internal::NoEffectDocSection().c_str());
    return 0;
  }
  if (argc != 3 || std::strcmp(argv[1], "--write") != 0) {
    std::fprintf(stderr, "usage: key_effects_doc [--write FILE]\n");
    return 2;
  }
  std::filesystem::path path = argv[2];
  if (const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
      workspace != nullptr && path.is_relative()) {
    path = std::filesystem::path(workspace) / path;
  }
  absl::StatusOr<std::string> doc = internal::ReadFileToString(path.string());
  if (doc.ok()) doc = internal::ReplaceNoEffectDocSection(*doc);
  if (!doc.ok()) {
    std::fprintf(stderr, "key_effects_doc: %s: %s\n", path.c_str(),
                 std::string(doc.status().message()).c_str());
    return 1;
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << *doc;
  out.close();
  if (!out) {
    std::fprintf(stderr, "key_effects_doc: cannot write %s\n", path.c_str());
    return 1;
  }
  return 0;
}
