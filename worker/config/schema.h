// The key schema of a job file (internal to worker/config).
//
// One declarative table per JSON object says which keys exist, their JSON type, DeepSpeed's code
// default, accepted range or choices, aliases, and whether a non-default value switches on a
// feature that must be looked up in features.cc. Normalize() walks a parsed file against the
// tables: it rejects unknown keys (with a "did you mean" suggestion), wrong types and
// out-of-range values with the key path, converts whole floats such as 5e8 to integers, and
// fills every absent key with its default. The result is the effective config that
// `dstrain validate` prints; the semantic checks of config.cc and the per-block steps (resolve.h)
// run on it afterwards.
//
// The tables themselves are in keys.cc. Thread-safety: the tables are immutable after first use.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dstrain::config::internal {

enum class ValueType {
  kBool,
  kInt,     // int64; a JSON float with an integral value (5e8) is accepted and converted
  kNumber,  // double; JSON integers are converted
  kString,
  kObject,  // described by a nested Block
  kList,    // a JSON array whose elements have `element_type`
  kAny,     // kept verbatim (opaque DeepSpeed blocks we only gate on)
};

struct Block;

struct Field {
  std::string name;  // canonical spelling, used in the effective config
  ValueType type = ValueType::kAny;
  // DeepSpeed's code default. null means Python's None (and the key is then nullable). For
  // kObject: an empty object means "fill the block with its defaults"; null means None.
  nlohmann::json default_value;
  bool nullable = false;  // JSON null is a valid value (Python None)
  bool required = false;
  ValueType element_type = ValueType::kAny;  // kList only
  std::vector<std::string> choices;          // kString: allowed values; empty = any
  std::optional<double> min, max;            // kInt / kNumber: inclusive bounds
  std::shared_ptr<const Block> block;        // kObject only
  std::string alias;                         // a second accepted spelling (pydantic alias)
  std::string doc_only_name;  // a spelling from DeepSpeed's docs that its code silently ignores
  // Set for keys whose non-default value turns on a feature; config.cc checks the value against
  // features.cc. `uses_feature` decides what counts as "on" (default: not null, not false and
  // different from default_value).
  bool gated = false;
  std::function<bool(const nlohmann::json&)> uses_feature;

  // Builders for the tables in keys.cc.
  Field Nullable() const;
  Field DefaultNull() const;  // default None (implies Nullable)
  Field Required() const;
  Field Min(double v) const;
  Field Max(double v) const;
  Field Alias(std::string a) const;
  Field DocOnlyName(std::string n) const;
  Field Gated() const;
  Field GatedWhen(std::function<bool(const nlohmann::json&)> pred) const;

  // True when `value` switches the feature on (see `uses_feature`).
  bool UsesFeature(const nlohmann::json& value) const;
};

struct Block {
  std::vector<Field> fields;
  bool open = false;  // keys outside `fields` are kept verbatim (e.g. apex options under amp)

  const Field* Find(const std::string& name) const;  // by name or alias
};

Field Bool(std::string name, bool def);
Field Int(std::string name, int64_t def);
Field Num(std::string name, double def);
Field Str(std::string name, std::string def, std::vector<std::string> choices = {});
Field NullInt(std::string name);                                         // default None
Field NullNum(std::string name);                                         // default None
Field NullStr(std::string name, std::vector<std::string> choices = {});  // default None
Field Obj(std::string name, std::shared_ptr<const Block> block);         // default: filled block
Field NullObj(std::string name, std::shared_ptr<const Block> block);     // default: None
Field List(std::string name, ValueType element_type, nlohmann::json def);
Field Any(std::string name);  // default None, any JSON value

// A gated value met during Normalize(), checked against features.cc afterwards.
struct GatedValue {
  std::string path;  // e.g. "fp16.enabled"
  nlohmann::json value;
};

struct NormalizeContext {
  std::vector<GatedValue> gated;
  // Key paths (canonical names) present in the input, including the keys an open block keeps
  // verbatim.
  std::set<std::string> given;
  // The given paths whose value equals the field's default (DeepSpeed's code default).
  std::set<std::string> at_default;
  const Block* root = nullptr;  // for "belongs under X" hints on unknown keys
};

// Validates `in` (a JSON object) against `block` and writes the effective object to `*out`.
// Errors are kInvalidArgument and start with the key path: "<path>: unknown key ...",
// "<path>: expected an integer, got string", "<path>: must be >= 1, got 0", "<path>: required".
absl::Status Normalize(const nlohmann::json& in, const Block& block, const std::string& path,
                       NormalizeContext* ctx, nlohmann::json* out);

// Validates one value against `field` (Normalize does so for every field of a block and every
// element of an array).
absl::Status NormalizeField(const nlohmann::json* in, const Field& field, const std::string& path,
                            NormalizeContext* ctx, nlohmann::json* out);

// Every gated key path below `block` (with `prefix`), for the consistency test of features.cc.
void CollectGatedPaths(const Block& block, const std::string& prefix,
                       std::vector<std::string>* out);

// Every key path below `block` (with `prefix`) that is not itself a described object: the leaves
// of the schema, for the consistency test of key_effects.cc. An open block also yields
// "<its path>.*", which stands for the keys it keeps verbatim.
void CollectLeafPaths(const Block& block, const std::string& prefix, std::vector<std::string>* out);

}  // namespace dstrain::config::internal
