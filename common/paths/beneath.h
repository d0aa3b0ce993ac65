// Confining a path a job names to a directory tree, symlinks included: a lexical check
// ("/data/../etc" is not under "/data") is not enough when "/data/link" points to "/etc". The part
// of the path that exists is resolved (every symlink followed, realpath), the part that does not
// exist yet (a checkpoint directory a run will create) is appended as written after a lexical
// normalisation, and the result must lie beneath the resolved root.
//
// Resolve-then-compare: a path changed between this check and its use (a symlink swapped in by
// someone who can write beneath the root) is not caught; the root's writers are trusted.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dstrain::paths {

// "/a/b/../c/./d" -> "/a/c/d", "a/./b/../c" -> "a/c", "../x" -> "../x": lexical, without touching
// the file system (".." above "/" stays at "/"; an empty relative result is ".").
std::string NormalizeLexically(absl::string_view path);

// `path` (absolute) with the symlinks of its longest existing prefix resolved.
absl::StatusOr<std::string> ResolveExisting(absl::string_view path);

// OK when `path` lies beneath `root` (or is it) once resolved as above; kInvalidArgument naming
// `field` otherwise (a relative path, one that leaves the root, a root that does not exist).
absl::Status CheckBeneath(absl::string_view root, absl::string_view path, absl::string_view field);

}  // namespace dstrain::paths
