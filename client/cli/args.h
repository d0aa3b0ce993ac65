// Minimal command-line parsing for `dstrain <command> [flags] [positional...]`.
//
// Flags are `--name value` or `--name=value`; boolean flags are `--name`. Each command declares
// the flags it takes, so a misspelled flag is an error naming it rather than a silent default.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dstrain::cli {

struct ParsedArgs {
  std::map<std::string, std::string> flags;  // name → value ("" for boolean flags)
  std::vector<std::string> positional;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  absl::StatusOr<int> GetInt(const std::string& name, int fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
};

// value_flags take a value, bool_flags do not. Errors name the offending argument.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::set<std::string>& value_flags,
                                     const std::set<std::string>& bool_flags);

}  // namespace dstrain::cli
