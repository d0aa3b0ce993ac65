// KvDb: the ordered key-value store under the coordinator's persistent state (docs/service.md,
// "State in RocksDB").
//
// Keys and values are arbitrary bytes (NUL included) ordered bytewise, kept in a fixed set of
// tables (RocksDB column families). A WriteBatch is applied atomically across tables; Durability
// says whether a successful Write survives only a process crash or also a power loss. What the
// keys and values mean is CoordinatorState's business (state.h); this layer knows none of it.
//
// Every KvDb is safe for concurrent use from many threads without outside locking. A scan sees
// the table as it was when the scan began; its callback may call back into the same KvDb
// (writes included), and the running scan does not see those writes.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dstrain::coordinator {

// The tables (column families) of the coordinator's database.
enum class Table {
  kJobs,
  kJobEvents,
  kWorkers,
  kCheckpoints,
  kMetrics,
  kLogs,
  kKv,       // rendezvous store (StoreService)
  kSecrets,  // the coordinator's own keys (never served by any RPC)
};

inline constexpr std::array<Table, 8> kAllTables = {
    Table::kJobs,    Table::kJobEvents, Table::kWorkers, Table::kCheckpoints,
    Table::kMetrics, Table::kLogs,      Table::kKv,      Table::kSecrets,
};

// The table's column-family name on disk: "jobs", "job_events", "workers", "checkpoints",
// "metrics", "logs", "kv". Never rename one: existing databases would lose the table.
absl::string_view TableName(Table table);

// How durable a successful Write is. RocksDB without WriteOptions::sync loses no write when only
// the process crashes, but may lose recent ones on a power loss or kernel crash.
enum class Durability {
  // WAL fsynced before Write returns (RocksDB WriteOptions::sync): survives a power loss. For
  // state transitions: jobs, events, workers, checkpoint records, the rendezvous store.
  kSync,
  // WAL written to the OS, not fsynced: survives a process crash, recent writes may be lost on a
  // power loss. For high-volume history: metrics and logs.
  kBuffered,
};

// The smallest key greater than every key that starts with `prefix`, so that [prefix,
// PrefixEnd(prefix)) is exactly the keys with that prefix. Empty when no such key exists (prefix
// empty or all 0xff bytes), meaning "no upper bound".
std::string PrefixEnd(absl::string_view prefix);

// Writes to apply together with KvDb::Write, in the order they were added (a Delete after a Put
// of the same key deletes it). Not thread-safe; build it on one thread.
class WriteBatch {
 public:
  enum class OpKind { kPut, kDelete, kDeleteRange };
  struct Op {
    OpKind kind;
    Table table;
    std::string key;    // kDeleteRange: the first key of the range (inclusive)
    std::string value;  // kDeleteRange: the end of the range (exclusive); kDelete: unused
  };

  void Put(Table table, absl::string_view key, absl::string_view value);
  void Delete(Table table, absl::string_view key);
  // Deletes every key in [begin, end). begin == end deletes nothing; begin > end makes the whole
  // batch fail with kInvalidArgument.
  void DeleteRange(Table table, absl::string_view begin, absl::string_view end);

  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }
  size_t size() const { return ops_.size(); }

 private:
  std::vector<Op> ops_;
};

class KvDb {
 public:
  // Called for each entry of a scan in turn; return false to stop the scan. The views are valid
  // only during the call.
  using ScanFn = std::function<bool(absl::string_view key, absl::string_view value)>;

  virtual ~KvDb() = default;
  KvDb(const KvDb&) = delete;
  KvDb& operator=(const KvDb&) = delete;

  // Applies every op of `batch` or none of them. kInvalidArgument (nothing written) for a range
  // with begin > end; otherwise the storage's error, e.g. kUnavailable for an I/O error.
  virtual absl::Status Write(const WriteBatch& batch, Durability durability) = 0;

  // The value stored under `key`, or nullopt when there is none.
  virtual absl::StatusOr<std::optional<std::string>> Get(Table table, absl::string_view key) = 0;

  // Calls `fn` for the keys that start with `prefix` and are >= `start`, in ascending key order,
  // until `fn` returns false. An empty `start` (or one below `prefix`) starts at the first key
  // with the prefix. Returns OK when `fn` stopped the scan.
  virtual absl::Status Scan(Table table, absl::string_view prefix, absl::string_view start,
                            const ScanFn& fn) = 0;

  // As Scan, in descending key order over the keys with `prefix` that are <= `start`; an empty
  // `start` starts at the last key with the prefix. For "the newest N" queries.
  virtual absl::Status ReverseScan(Table table, absl::string_view prefix, absl::string_view start,
                                   const ScanFn& fn) = 0;

  // Gives the space of deleted keys back to the file system (RocksDB: a full compaction, which
  // drops what range deletions cover); a no-op where deletion frees memory at once.
  virtual absl::Status Compact() { return absl::OkStatus(); }

  // Deletes the keys in [begin, end): a one-op Write.
  absl::Status DeleteRange(Table table, absl::string_view begin, absl::string_view end,
                           Durability durability);

 protected:
  KvDb() = default;

  // kInvalidArgument when an op of `batch` cannot be applied; for implementations to call before
  // they apply anything, so that a bad batch writes nothing.
  static absl::Status ValidateBatch(const WriteBatch& batch);
};

}  // namespace dstrain::coordinator
