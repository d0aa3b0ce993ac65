#include "common/flags/flags.h"

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dstrain::flags {

std::string ParsedArgs::Get(const std::string& name, const std::string& fallback) const {
  auto it = flags.find(name);
  return it == flags.end() ? fallback : it->second;
}

namespace {

// The value of flag `name` as `parse` reads it, `fallback` when the flag is absent; `expected`
// names the kind of value in the error.
template <typename T, typename Parse>
absl::StatusOr<T> GetNumber(const std::map<std::string, std::string>& flags,
                            const std::string& name, T fallback, Parse parse,
                            absl::string_view expected) {
  auto it = flags.find(name);
  if (it == flags.end()) return fallback;
  T v;
  if (!parse(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": expected ", expected, ", got '", it->second, "'"));
  }
  return v;
}

}  // namespace

absl::StatusOr<int> ParsedArgs::GetInt(const std::string& name, int fallback) const {
  return GetNumber(
      flags, name, fallback, [](absl::string_view s, int* v) { return absl::SimpleAtoi(s, v); },
      "an integer");
}

absl::StatusOr<int64_t> ParsedArgs::GetInt64(const std::string& name, int64_t fallback) const {
  return GetNumber(
      flags, name, fallback, [](absl::string_view s, int64_t* v) { return absl::SimpleAtoi(s, v); },
      "an integer");
}

absl::StatusOr<double> ParsedArgs::GetDouble(const std::string& name, double fallback) const {
  return GetNumber(
      flags, name, fallback, [](absl::string_view s, double* v) { return absl::SimpleAtod(s, v); },
      "a number");
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::set<std::string>& value_flags,
                                     const std::set<std::string>& bool_flags) {
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
      out.positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (bool_flags.count(name)) {
      if (inline_value) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      out.flags[name] = "";
    } else if (value_flags.count(name)) {
      if (!inline_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        }
        value = args[++i];
      }
      out.flags[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  return out;
}

}  // namespace dstrain::flags
