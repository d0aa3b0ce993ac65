// Writes the generated key table of docs/migrating-from-deepspeed.md ("Key by key") from the
// configuration's key table: every DeepSpeed key path of key_effects.cc with its code default
// (keys.cc), whether dstrain honours it, accepts it with a note, or refuses it when it is turned
// on (features.cc), and the row's text. dstrain's own blocks (model, data, job, notes) are left
// out; docs/job-file.md describes them.
//
//   key_table_markdown                 prints the generated region
//   key_table_markdown --write FILE    replaces the region between the markers in FILE
//
// Under `bazel run`, a relative FILE is taken relative to the workspace:
//
//   bazel run //worker/config:key_table_markdown -- --write docs/migrating-from-deepspeed.md
//
// //tests/docs:migration_guide_key_table_test regenerates the region and fails on a difference.
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "worker/config/doc_generator.h"
#include "worker/config/features.h"
#include "worker/config/key_effects.h"
#include "worker/config/keys.h"
#include "worker/config/schema.h"
#include "worker/config/strict_json.h"

namespace dstrain::config::internal {
namespace {

constexpr char kBegin[] =
    "<!-- BEGIN GENERATED: key table. Made from worker/config/key_effects.cc, keys.cc and "
    "features.cc by `bazel run //worker/config:key_table_markdown -- --write "
    "docs/migrating-from-deepspeed.md`; //tests/docs:migration_guide_key_table_test checks it. "
    "Do not edit by hand. -->";
constexpr char kEnd[] = "<!-- END GENERATED: key table -->";

// The schema field of `path` in `block` ("zero_optimization.offload_optimizer.device"), or
// nullptr (a "<block>.*" row, or a key an open block keeps verbatim).
const Field* FindField(const Block& block, absl::string_view path) {
  const Block* b = &block;
  const Field* field = nullptr;
  for (absl::string_view segment : absl::StrSplit(path, '.')) {
    if (b == nullptr) return nullptr;
    field = b->Find(std::string(segment));
    if (field == nullptr) return nullptr;
    b = field->block.get();
  }
  return field;
}

// The fields that define `path`: one, or for scheduler.params.X one per schedule type that has X.
std::vector<const Field*> FieldsOf(absl::string_view path) {
  constexpr absl::string_view kOptimizerParams = "optimizer.params.";
  constexpr absl::string_view kSchedulerParams = "scheduler.params.";
  std::vector<const Field*> out;
  if (absl::StartsWith(path, kOptimizerParams)) {
    const Field* f = FindField(AdamParamsSchema(), path.substr(kOptimizerParams.size()));
    if (f != nullptr) out.push_back(f);
  } else if (absl::StartsWith(path, kSchedulerParams)) {
    for (const std::string& type : SchedulerTypes()) {
      const Block* params = SchedulerParamsSchema(type);
      const Field* f =
          params == nullptr ? nullptr : FindField(*params, path.substr(kSchedulerParams.size()));
      if (f != nullptr) out.push_back(f);
    }
  } else if (const Field* f = FindField(JobFileSchema(), path); f != nullptr) {
    out.push_back(f);
  }
  return out;
}

std::string DefaultOf(const Field& f) {
  if (f.required) return "required";
  if (f.type == ValueType::kObject && !f.default_value.is_null()) return "";
  return absl::StrCat("`", f.default_value.dump(), "`");
}

// The code default of `path` as the table shows it; "" when there is none to show.
std::string DefaultCell(absl::string_view path) {
  const std::vector<const Field*> fields = FieldsOf(path);
  if (fields.empty()) return "";
  const std::string first = DefaultOf(*fields[0]);
  for (const Field* f : fields) {
    if (DefaultOf(*f) != first) return "depends on `scheduler.type`";
  }
  return first;
}

// The key as written in a job file, with the other spelling the schema accepts.
std::string KeyCell(absl::string_view path) {
  std::string out = absl::StrCat("`", path, "`");
  const std::vector<const Field*> fields = FieldsOf(path);
  if (!fields.empty() && !fields[0]->alias.empty()) {
    absl::StrAppend(&out, " (or `", fields[0]->alias, "`)");
  }
  return out;
}

std::string WhatCell(const KeyEffectRow& row) {
  std::string out;
  switch (row.effect) {
    case KeyEffect::kActs:
      out = row.text == nullptr ? "" : row.text;
      break;
    case KeyEffect::kNoEffect:
      out = NoEffectReason(row);
      break;
    case KeyEffect::kNotSupported:
      if (row.text != nullptr) {
        out = absl::StrCat("an error when turned on (", row.text, ")");
      } else {
        const FeatureSwitch* s = FindFeatureSwitch(row.path);
        out = absl::StrCat("an error when set to anything but its default, false or null: \"",
                           s == nullptr ? row.path : s->feature, " is not supported yet\"");
      }
      break;
  }
  const std::vector<const Field*> fields = FieldsOf(row.path);
  if (!fields.empty() && !fields[0]->doc_only_name.empty()) {
    absl::StrAppend(
        &out, ". DeepSpeed's docs call it `", fields[0]->doc_only_name,
        "`, a name its code ignores; dstrain refuses that name and says which to write");
  }
  return out;
}

const char* StatusCell(KeyEffect effect) {
  switch (effect) {
    case KeyEffect::kActs:
      return "honoured";
    case KeyEffect::kNoEffect:
      return "note";
    case KeyEffect::kNotSupported:
      return "refused";
  }
  return "?";
}

bool IsDeepSpeedKey(absl::string_view path) {
  const std::string top(path.substr(0, path.find('.')));
  return !IsJobKey(top);
}

std::string Escape(absl::string_view text) { return absl::StrReplaceAll(text, {{"|", "\\|"}}); }

std::string GeneratedSection() {
  int counts[3] = {0, 0, 0};
  std::string rows;
  for (const KeyEffectRow& row : AllKeyEffects()) {
    if (!IsDeepSpeedKey(row.path)) continue;
    ++counts[static_cast<int>(row.effect)];
    absl::StrAppend(&rows, "| ", KeyCell(row.path), " | ", DefaultCell(row.path), " | ",
                    StatusCell(row.effect), " | ", Escape(WhatCell(row)), " |\n");
  }
  const int total = counts[0] + counts[1] + counts[2];
  return absl::StrCat(
      kBegin, "\n\n", total, " DeepSpeed key paths: ", counts[0], " honoured, ", counts[1],
      " accepted with a note, ", counts[2], " refused when turned on.\n\n",
      "| key | DeepSpeed's code default | in dstrain | why, or the code that reads it |\n"
      "|---|---|---|---|\n",
      rows, "\n", kEnd);
}

absl::StatusOr<std::string> ReplaceSection(absl::string_view doc) {
  const size_t begin = doc.find(kBegin);
  const size_t end = begin == absl::string_view::npos ? begin : doc.find(kEnd, begin);
  if (end == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("the markers of the generated key table are "
                     "missing: \"",
                     kBegin, "\" ... \"", kEnd, "\""));
  }
  return absl::StrCat(doc.substr(0, begin), GeneratedSection(),
                      doc.substr(end + std::strlen(kEnd)));
}

}  // namespace
}  // namespace dstrain::config::internal

int main(int argc, char** argv) {
  namespace internal = dstrain::config::internal;
  return internal::DocGeneratorMain(
      argc, argv, "key_table_markdown", [] { return internal::GeneratedSection(); },
      [](const std::string& doc) { return internal::ReplaceSection(doc); });
}
