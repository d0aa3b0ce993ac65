#include "worker/config/schema.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"
#include "worker/config/strict_json.h"

namespace dstrain::config::internal {
namespace {

using nlohmann::json;

absl::Status PathError(const std::string& path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

const char* Expected(ValueType t) {
  switch (t) {
    case ValueType::kBool:
      return "a boolean";
    case ValueType::kInt:
      return "an integer";
    case ValueType::kNumber:
      return "a number";
    case ValueType::kString:
      return "a string";
    case ValueType::kObject:
      return "an object";
    case ValueType::kList:
      return "an array";
    case ValueType::kAny:
      return "a value";
  }
  return "a value";
}

absl::Status TypeError(const std::string& path, const Field& field, const json& got) {
  std::string message = absl::StrCat("expected ", Expected(field.type));
  if (field.nullable) absl::StrAppend(&message, " or null");
  absl::StrAppend(&message, ", got ", JsonTypeName(got));
  if (got.is_string() || got.is_number() || got.is_boolean()) {
    absl::StrAppend(&message, " ", ShortDump(got));
  }
  if (got.is_string() && got.get_ref<const std::string&>() == "auto") {
    // Hugging Face's Trainer replaces "auto" before DeepSpeed sees the config.
    absl::StrAppend(&message,
                    " (\"auto\" is a Hugging Face Trainer placeholder; write the value itself)");
  }
  return PathError(path, message);
}

std::string FormatBound(double v, ValueType t) {
  if (t == ValueType::kInt) return absl::StrCat(static_cast<int64_t>(v));
  return absl::StrCat(v);
}

absl::Status CheckRange(const std::string& path, const Field& field, double v, const json& shown) {
  if (field.min && v < *field.min) {
    return PathError(path, absl::StrCat("must be >= ", FormatBound(*field.min, field.type),
                                        ", got ", ShortDump(shown)));
  }
  if (field.max && v > *field.max) {
    return PathError(path, absl::StrCat("must be <= ", FormatBound(*field.max, field.type),
                                        ", got ", ShortDump(shown)));
  }
  return absl::OkStatus();
}

// Converts a JSON number to int64 when it is a whole number in range (5e8 -> 500000000).
absl::Status ToInt(const std::string& path, const Field& field, const json& in, int64_t* out) {
  if (in.is_number_integer() && !in.is_number_unsigned()) {
    *out = in.get<int64_t>();
    return absl::OkStatus();
  }
  if (in.is_number_unsigned()) {
    const uint64_t u = in.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return PathError(
          path, absl::StrCat("must be <= ", std::numeric_limits<int64_t>::max(), ", got ", u));
    }
    *out = static_cast<int64_t>(u);
    return absl::OkStatus();
  }
  if (in.is_number_float()) {
    const double d = in.get<double>();
    // 2^63 is exactly representable; every double below it converts without overflow.
    constexpr double kTwo63 = 9223372036854775808.0;
    if (std::isfinite(d) && std::floor(d) == d && d >= -kTwo63 && d < kTwo63) {
      *out = static_cast<int64_t>(d);
      return absl::OkStatus();
    }
    return PathError(path, absl::StrCat("expected an integer, got ", ShortDump(in)));
  }
  return TypeError(path, field, in);
}

// Paths of every field named `key` anywhere below `block`.
void FindFieldPaths(const Block& block, const std::string& prefix, const std::string& key,
                    std::vector<std::string>* out) {
  for (const Field& f : block.fields) {
    const std::string path = JoinPath(prefix, f.name);
    if (f.name == key || (!f.alias.empty() && f.alias == key)) out->push_back(path);
    if (f.block) FindFieldPaths(*f.block, path, key, out);
  }
}

absl::Status UnknownKey(const std::string& path, const std::string& key, const Block& block,
                        const NormalizeContext& ctx) {
  std::vector<std::string> candidates;
  for (const Field& f : block.fields) {
    candidates.push_back(f.name);
    if (!f.alias.empty()) candidates.push_back(f.alias);
  }
  std::string message = "unknown key";
  const std::string close = ClosestKey(key, candidates);
  if (!close.empty()) {
    absl::StrAppend(&message, " (did you mean \"", close, "\"?)");
  } else if (ctx.root != nullptr) {
    std::vector<std::string> elsewhere;
    FindFieldPaths(*ctx.root, "", key, &elsewhere);
    if (elsewhere.size() == 1) {
      absl::StrAppend(&message, " here (did you mean ", elsewhere[0], "?)");
    }
  }
  return PathError(JoinPath(path, key), message);
}

}  // namespace

Field Field::Nullable() const {
  Field f = *this;
  f.nullable = true;
  return f;
}
Field Field::DefaultNull() const {
  Field f = *this;
  f.nullable = true;
  f.default_value = nullptr;
  return f;
}
Field Field::Required() const {
  Field f = *this;
  f.required = true;
  return f;
}
Field Field::Min(double v) const {
  Field f = *this;
  f.min = v;
  return f;
}
Field Field::Max(double v) const {
  Field f = *this;
  f.max = v;
  return f;
}
Field Field::Alias(std::string a) const {
  Field f = *this;
  f.alias = std::move(a);
  return f;
}
Field Field::DocOnlyName(std::string n) const {
  Field f = *this;
  f.doc_only_name = std::move(n);
  return f;
}
Field Field::Gated() const {
  Field f = *this;
  f.gated = true;
  return f;
}
Field Field::GatedWhen(std::function<bool(const json&)> pred) const {
  Field f = *this;
  f.gated = true;
  f.uses_feature = std::move(pred);
  return f;
}

bool Field::UsesFeature(const json& value) const {
  if (uses_feature) return uses_feature(value);
  return !value.is_null() && value != json(false) && value != default_value;
}

const Field* Block::Find(const std::string& name) const {
  for (const Field& f : fields) {
    if (f.name == name || (!f.alias.empty() && f.alias == name)) return &f;
  }
  return nullptr;
}

Field Bool(std::string name, bool def) {
  Field f;
  f.name = std::move(name);
  f.type = ValueType::kBool;
  f.default_value = def;
  return f;
}
Field Int(std::string name, int64_t def) {
  Field f;
  f.name = std::move(name);
  f.type = ValueType::kInt;
  f.default_value = def;
  return f;
}
Field Num(std::string name, double def) {
  Field f;
  f.name = std::move(name);
  f.type = ValueType::kNumber;
  f.default_value = def;
  return f;
}
Field Str(std::string name, std::string def, std::vector<std::string> choices) {
  Field f;
  f.name = std::move(name);
  f.type = ValueType::kString;
  f.default_value = std::move(def);
  f.choices = std::move(choices);
  return f;
}
Field NullInt(std::string name) { return Int(std::move(name), 0).DefaultNull(); }
Field NullNum(std::string name) { return Num(std::move(name), 0).DefaultNull(); }
Field NullStr(std::string name, std::vector<std::string> choices) {
  return Str(std::move(name), "", std::move(choices)).DefaultNull();
}
Field Obj(std::string name, std::shared_ptr<const Block> block) {
  Field f;
  f.name = std::move(name);
  f.type = ValueType::kObject;
  f.default_value = json::object();
  f.block = std::move(block);
  return f;
}
Field NullObj(std::string name, std::shared_ptr<const Block> block) {
  Field f = Obj(std::move(name), std::move(block)).Nullable();
  f.default_value = nullptr;
  return f;
}
Field List(std::string name, ValueType element_type, json def) {
  Field f;
  f.name = std::move(name);
  f.type = ValueType::kList;
  f.element_type = element_type;
  f.default_value = std::move(def);
  return f;
}
Field Any(std::string name) {
  Field f;
  f.name = std::move(name);
  f.type = ValueType::kAny;
  f.default_value = nullptr;
  f.nullable = true;
  return f;
}

absl::Status NormalizeField(const json* in, const Field& field, const std::string& path,
                            NormalizeContext* ctx, json* out) {
  if (in == nullptr) {
    if (field.required) return PathError(path, "required");
    if (field.type == ValueType::kObject && field.default_value.is_object()) {
      DT_RETURN_IF_ERROR(Normalize(json::object(), *field.block, path, ctx, out));
    } else {
      *out = field.default_value;
    }
    return absl::OkStatus();
  }
  ctx->given.insert(path);
  if (in->is_null()) {
    if (!field.nullable) return TypeError(path, field, *in);
    *out = nullptr;
    if (field.default_value.is_null()) ctx->at_default.insert(path);
    return absl::OkStatus();
  }
  switch (field.type) {
    case ValueType::kBool:
      if (!in->is_boolean()) return TypeError(path, field, *in);
      *out = *in;
      break;
    case ValueType::kInt: {
      int64_t v = 0;
      DT_RETURN_IF_ERROR(ToInt(path, field, *in, &v));
      DT_RETURN_IF_ERROR(CheckRange(path, field, static_cast<double>(v), json(v)));
      *out = v;
      break;
    }
    case ValueType::kNumber: {
      if (!in->is_number()) return TypeError(path, field, *in);
      const double v = in->get<double>();
      DT_RETURN_IF_ERROR(CheckRange(path, field, v, *in));
      *out = v;
      break;
    }
    case ValueType::kString: {
      if (!in->is_string()) return TypeError(path, field, *in);
      const std::string& s = in->get_ref<const std::string&>();
      if (!field.choices.empty() &&
          std::find(field.choices.begin(), field.choices.end(), s) == field.choices.end()) {
        std::vector<std::string> quoted;
        for (const std::string& c : field.choices) quoted.push_back(absl::StrCat("\"", c, "\""));
        return PathError(path, absl::StrCat("must be one of ", absl::StrJoin(quoted, ", "),
                                            "; got ", ShortDump(*in)));
      }
      *out = s;
      break;
    }
    case ValueType::kObject:
      if (!in->is_object()) return TypeError(path, field, *in);
      DT_RETURN_IF_ERROR(Normalize(*in, *field.block, path, ctx, out));
      break;
    case ValueType::kList: {
      if (!in->is_array()) return TypeError(path, field, *in);
      Field element;
      element.type = field.element_type;
      element.min = field.min;
      element.max = field.max;
      *out = json::array();
      for (size_t i = 0; i < in->size(); ++i) {
        json v;
        DT_RETURN_IF_ERROR(NormalizeField(&(*in)[i], element, IndexPath(path, i), ctx, &v));
        out->push_back(std::move(v));
      }
      break;
    }
    case ValueType::kAny:
      *out = *in;
      break;
  }
  if (field.gated && field.UsesFeature(*out)) ctx->gated.push_back(GatedValue{path, *out});
  if (*out == field.default_value) ctx->at_default.insert(path);
  return absl::OkStatus();
}

absl::Status Normalize(const json& in, const Block& block, const std::string& path,
                       NormalizeContext* ctx, json* out) {
  if (!in.is_object()) {
    return PathError(path.empty() ? "(top level)" : path,
                     absl::StrCat("expected an object, got ", JsonTypeName(in)));
  }
  *out = json::object();
  // Unknown keys first, so that a typo is reported as such rather than as a missing key.
  for (const auto& [key, value] : in.items()) {
    if (block.Find(key) != nullptr) continue;
    const Field* doc_named = nullptr;
    for (const Field& f : block.fields) {
      if (!f.doc_only_name.empty() && f.doc_only_name == key) doc_named = &f;
    }
    if (doc_named != nullptr) {
      return PathError(
          JoinPath(path, key),
          absl::StrCat("DeepSpeed's docs use this name but its code reads \"", doc_named->name,
                       "\" and silently ignores \"", key, "\"; write \"", doc_named->name, "\""));
    }
    if (block.open) {
      ctx->given.insert(JoinPath(path, key));
      (*out)[key] = value;
      continue;
    }
    return UnknownKey(path, key, block, *ctx);
  }
  for (const Field& f : block.fields) {
    const json* given = nullptr;
    if (auto it = in.find(f.name); it != in.end()) given = &*it;
    if (!f.alias.empty()) {
      if (auto it = in.find(f.alias); it != in.end()) {
        if (given != nullptr) {
          return PathError(JoinPath(path, f.alias), absl::StrCat("given together with \"", f.name,
                                                                 "\" (two spellings of one key)"));
        }
        given = &*it;
      }
    }
    json value;
    DT_RETURN_IF_ERROR(NormalizeField(given, f, JoinPath(path, f.name), ctx, &value));
    (*out)[f.name] = std::move(value);
  }
  return absl::OkStatus();
}

void CollectGatedPaths(const Block& block, const std::string& prefix,
                       std::vector<std::string>* out) {
  for (const Field& f : block.fields) {
    const std::string path = JoinPath(prefix, f.name);
    if (f.gated) out->push_back(path);
    if (f.block) CollectGatedPaths(*f.block, path, out);
  }
}

void CollectLeafPaths(const Block& block, const std::string& prefix,
                      std::vector<std::string>* out) {
  if (block.open) out->push_back(JoinPath(prefix, "*"));
  for (const Field& f : block.fields) {
    const std::string path = JoinPath(prefix, f.name);
    if (f.block) {
      CollectLeafPaths(*f.block, path, out);
    } else {
      out->push_back(path);
    }
  }
}

}  // namespace dstrain::config::internal
