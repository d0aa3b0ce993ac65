#include "common/paths/beneath.h"

#include <climits>
#include <cstdlib>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dstrain::paths {
namespace {

absl::StatusOr<std::string> RealPath(const std::string& path) {
  char buffer[PATH_MAX];
  if (realpath(path.c_str(), buffer) == nullptr) {
    return absl::NotFoundError(absl::StrCat("\"", path, "\" cannot be resolved"));
  }
  return std::string(buffer);
}

}  // namespace

std::string NormalizeLexically(absl::string_view path) {
  const bool absolute = absl::StartsWith(path, "/");
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (!absolute) {
        parts.emplace_back("..");
      }  // "/.." is "/"
      continue;
    }
    parts.emplace_back(part);
  }
  const std::string joined = absl::StrJoin(parts, "/");
  if (absolute) return absl::StrCat("/", joined);
  return joined.empty() ? "." : joined;
}

absl::StatusOr<std::string> ResolveExisting(absl::string_view path) {
  // The longest prefix that exists is resolved; what follows cannot hold a symlink yet.
  std::vector<std::string> parts = absl::StrSplit(NormalizeLexically(path), '/', absl::SkipEmpty());
  std::vector<std::string> missing;
  while (true) {
    const std::string prefix = absl::StrCat("/", absl::StrJoin(parts, "/"));
    absl::StatusOr<std::string> resolved = RealPath(prefix);
    if (resolved.ok()) {
      std::string out = *resolved;
      for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
        absl::StrAppend(&out, out == "/" ? "" : "/", *it);
      }
      return out;
    }
    if (parts.empty()) return resolved.status();
    missing.push_back(parts.back());
    parts.pop_back();
  }
}

absl::Status CheckBeneath(absl::string_view root, absl::string_view path, absl::string_view field) {
  if (!absl::StartsWith(path, "/")) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": \"", path, "\" is not absolute"));
  }
  absl::StatusOr<std::string> real_root = RealPath(std::string(root));
  if (!real_root.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": the data root \"", root, "\" does not exist"));
  }
  absl::StatusOr<std::string> real = ResolveExisting(path);
  if (!real.ok())
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", real.status().message()));
  if (*real == *real_root || *real_root == "/" ||
      absl::StartsWith(*real, absl::StrCat(*real_root, "/"))) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": \"", path, "\" resolves to \"", *real,
                                                 "\", outside the data root \"", root, "\""));
}

}  // namespace dstrain::paths
