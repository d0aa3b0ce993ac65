// Prints the generated table of docs/configuration.md ("Keys without effect") from
// key_effects.cc; with `--write FILE`, replaces the table in FILE instead. Under `bazel run`, a
// relative FILE is taken relative to the workspace.
//
//   bazel run //worker/config:key_effects_doc -- --write docs/configuration.md
#include <string>

#include "absl/status/statusor.h"
#include "worker/config/doc_generator.h"
#include "worker/config/key_effects.h"

int main(int argc, char** argv) {
  namespace internal = dstrain::config::internal;
  return internal::DocGeneratorMain(
      argc, argv, "key_effects_doc", [] { return internal::NoEffectDocSection(); },
      [](const std::string& doc) { return internal::ReplaceNoEffectDocSection(doc); });
}
