// Command-line flags for every dstrain binary: the `dstrain` CLI and its subcommands, the
// dstrain-coordinator and dstrain-worker daemons, and the benchmarks. It lives below all of them
// so that no daemon depends on the client to read its own command line.
//
// Syntax: `--name value` or `--name=value` for a flag that takes a value, `--name` alone for a
// boolean flag; anything not starting with "--" (and "--" or "-x" on their own) is positional.
// A flag given twice keeps its last value. Each caller declares the flags it takes, so a
// misspelled flag is an error naming it rather than a silent default.
//
// Errors are INVALID_ARGUMENT and name the offending argument ("unknown flag --wrold",
// "--world needs a value", "--follow takes no value", "--world: expected an integer, got 'two'"):
// the binaries print them as they are and exit with their usage code. Parsing keeps no global
// state, so it is reentrant and tests can call it with any argument list.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dstrain::flags {

struct ParsedArgs {
  std::map<std::string, std::string> flags;  // name → value ("" for boolean flags)
  std::vector<std::string> positional;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  // `fallback` when the flag is absent; INVALID_ARGUMENT when its value is not a number.
  absl::StatusOr<int> GetInt(const std::string& name, int fallback) const;
  absl::StatusOr<int64_t> GetInt64(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
};

// `args` excludes the program name (argv + 1). value_flags take a value, bool_flags do not.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::set<std::string>& value_flags,
                                     const std::set<std::string>& bool_flags);

}  // namespace dstrain::flags
