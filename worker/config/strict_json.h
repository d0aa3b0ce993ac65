// Strict JSON reading for job files and DeepSpeed configs (internal to worker/config).
//
// nlohmann::json's DOM parser silently keeps the last of two equal keys in an object; DeepSpeed
// raises on a repeated key (`dict_raise_error_on_duplicate_keys`), and so must we. This file
// builds the DOM through nlohmann's SAX interface so that it can see every key as it is read,
// reject duplicates with the key path, accept `//` and `/* */` comments (DeepSpeed reads its
// files with hjson, where comments are common), and never let an exception escape. It also holds
// the small helpers every error message needs: key paths and "did you mean" suggestions.
//
// Thread-safety: all functions are pure.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dstrain::config::internal {

// Parses `text` (one JSON value, comments allowed) into a DOM. Errors (kInvalidArgument) start
// with the key path where parsing stopped, e.g. `zero_optimization.stage: duplicate key`, or
// `<source>: invalid JSON at line 3, column 7: ...` when no key path applies. `source` names the
// text in messages (a file name, or "job").
absl::StatusOr<nlohmann::json> ParseStrictJson(absl::string_view text, absl::string_view source);

// Reads a whole file. kNotFound / kInvalidArgument with the path and the OS error on failure.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Appends an object key or an array index to a key path: JoinPath("a", "b") == "a.b",
// JoinPath("", "b") == "b", IndexPath("a", 2) == "a[2]".
std::string JoinPath(absl::string_view parent, absl::string_view key);
std::string IndexPath(absl::string_view parent, size_t index);

// The candidate closest to `key` (case-insensitive optimal-string-alignment distance) when that
// distance is at most 2, else "". Ties go to the earliest candidate.
std::string ClosestKey(absl::string_view key, const std::vector<std::string>& candidates);

// nlohmann's name for a value's JSON type, with "integer" for whole numbers written as such:
// "null", "boolean", "integer", "number", "string", "array", "object".
std::string JsonTypeName(const nlohmann::json& value);

// A short, exception-free rendering of a value for error messages (long values are cut).
std::string ShortDump(const nlohmann::json& value);

}  // namespace dstrain::config::internal
