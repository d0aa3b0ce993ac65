// The main() of a generated-documentation tool: prints a generated section, or with `--write
// FILE` replaces that section in FILE (a relative FILE under `bazel run` is taken relative to the
// workspace). key_effects_doc and key_table_markdown are two such tools.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace dstrain::config::internal {

// `generate` makes the section; `replace` puts it into a document's text (an error naming what
// is wrong, e.g. missing markers). Returns the process's exit status.
int DocGeneratorMain(int argc, char** argv, const char* tool,
                     const std::function<std::string()>& generate,
                     const std::function<absl::StatusOr<std::string>(const std::string&)>& replace);

}  // namespace dstrain::config::internal
