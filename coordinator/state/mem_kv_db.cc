#include "coordinator/state/mem_kv_db.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace dstrain::coordinator {
namespace {

using Entries = std::vector<std::pair<std::string, std::string>>;

size_t Index(Table table) { return static_cast<size_t>(table); }

bool HasPrefix(const std::string& key, absl::string_view prefix) {
  return absl::string_view(key).substr(0, prefix.size()) == prefix;
}

absl::Status Deliver(const Entries& entries, const KvDb::ScanFn& fn) {
  for (const auto& [key, value] : entries) {
    if (!fn(key, value)) break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MemKvDb::Write(const WriteBatch& batch, Durability /*durability*/) {
  absl::Status valid = ValidateBatch(batch);
  if (!valid.ok()) return valid;
  absl::MutexLock lock(&mu_);
  for (const WriteBatch::Op& op : batch.ops()) {
    Map& map = tables_[Index(op.table)];
    switch (op.kind) {
      case WriteBatch::OpKind::kPut:
        map[op.key] = op.value;
        break;
      case WriteBatch::OpKind::kDelete:
        map.erase(op.key);
        break;
      case WriteBatch::OpKind::kDeleteRange:
        map.erase(map.lower_bound(op.key), map.lower_bound(op.value));
        break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> MemKvDb::Get(Table table, absl::string_view key) {
  absl::MutexLock lock(&mu_);
  const Map& map = tables_[Index(table)];
  auto it = map.find(std::string(key));
  if (it == map.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

absl::Status MemKvDb::Scan(Table table, absl::string_view prefix, absl::string_view start,
                           const ScanFn& fn) {
  const std::string first(std::max(prefix, start));
  Entries entries;
  {
    absl::MutexLock lock(&mu_);
    const Map& map = tables_[Index(table)];
    for (auto it = map.lower_bound(first); it != map.end() && HasPrefix(it->first, prefix); ++it) {
      entries.emplace_back(it->first, it->second);
    }
  }
  return Deliver(entries, fn);
}

absl::Status MemKvDb::ReverseScan(Table table, absl::string_view prefix, absl::string_view start,
                                  const ScanFn& fn) {
  const std::string end = PrefixEnd(prefix);
  Entries entries;
  {
    absl::MutexLock lock(&mu_);
    const Map& map = tables_[Index(table)];
    // One past the last candidate: the first key > start, or the end of the prefix's range when
    // start is empty or beyond it. Every key below that and >= prefix has the prefix.
    const bool from_range_end = start.empty() || (!end.empty() && start >= end);
    auto it = !from_range_end ? map.upper_bound(std::string(start))
              : end.empty()   ? map.end()
                              : map.lower_bound(end);
    while (it != map.begin()) {
      --it;
      if (!HasPrefix(it->first, prefix)) break;
      entries.emplace_back(it->first, it->second);
    }
  }
  return Deliver(entries, fn);
}

}  // namespace dstrain::coordinator
