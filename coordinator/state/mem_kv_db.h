// MemKvDb: a KvDb held in memory, for tests and for running the coordinator without a data
// directory. Nothing survives the object; Durability is accepted and ignored.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/state/kv_db.h"

namespace dstrain::coordinator {

// Thread-safe (one mutex). A scan copies the entries it may visit before calling back, which
// gives RocksDB's snapshot semantics and lets the callback write; it costs O(range) per scan,
// fine for the table sizes tests use.
class MemKvDb final : public KvDb {
 public:
  MemKvDb() = default;

  absl::Status Write(const WriteBatch& batch, Durability durability) override;
  absl::StatusOr<std::optional<std::string>> Get(Table table, absl::string_view key) override;
  absl::Status Scan(Table table, absl::string_view prefix, absl::string_view start,
                    const ScanFn& fn) override;
  absl::Status ReverseScan(Table table, absl::string_view prefix, absl::string_view start,
                           const ScanFn& fn) override;

 private:
  using Map = std::map<std::string, std::string>;

  absl::Mutex mu_;
  std::array<Map, kAllTables.size()> tables_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dstrain::coordinator
