#include "coordinator/state/kv_db.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace dstrain::coordinator {

absl::string_view TableName(Table table) {
  switch (table) {
    case Table::kJobs:
      return "jobs";
    case Table::kJobEvents:
      return "job_events";
    case Table::kWorkers:
      return "workers";
    case Table::kCheckpoints:
      return "checkpoints";
    case Table::kMetrics:
      return "metrics";
    case Table::kLogs:
      return "logs";
    case Table::kKv:
      return "kv";
    case Table::kSecrets:
      return "secrets";
  }
  return "unknown";
}

std::string PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    const unsigned char last = static_cast<unsigned char>(end.back());
    if (last != 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();  // every key starting "a\xff" is below "b": drop the 0xff and carry
  }
  return end;
}

void WriteBatch::Put(Table table, absl::string_view key, absl::string_view value) {
  ops_.push_back({OpKind::kPut, table, std::string(key), std::string(value)});
}

void WriteBatch::Delete(Table table, absl::string_view key) {
  ops_.push_back({OpKind::kDelete, table, std::string(key), std::string()});
}

void WriteBatch::DeleteRange(Table table, absl::string_view begin, absl::string_view end) {
  ops_.push_back({OpKind::kDeleteRange, table, std::string(begin), std::string(end)});
}

absl::Status KvDb::DeleteRange(Table table, absl::string_view begin, absl::string_view end,
                               Durability durability) {
  WriteBatch batch;
  batch.DeleteRange(table, begin, end);
  return Write(batch, durability);
}

absl::Status KvDb::ValidateBatch(const WriteBatch& batch) {
  for (const WriteBatch::Op& op : batch.ops()) {
    if (op.kind == WriteBatch::OpKind::kDeleteRange && op.key > op.value) {
      return absl::InvalidArgumentError(absl::StrCat(
          "DeleteRange in table ", TableName(op.table), ": begin \"", absl::CHexEscape(op.key),
          "\" is after end \"", absl::CHexEscape(op.value), "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace dstrain::coordinator
