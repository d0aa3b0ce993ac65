// RocksKvDb: the coordinator's KvDb on disk, one RocksDB database with a column family per Table.
// A restarted coordinator reopens the same directory and finds everything written with kSync, and
// everything written with kBuffered unless the machine (not just the process) went down.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/state/kv_db.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
}  // namespace rocksdb

namespace dstrain::coordinator {

// Thread-safe (RocksDB's own locking). Only one process can have a directory open: RocksDB holds
// a LOCK file, so a second coordinator on the same data directory fails to open it.
class RocksKvDb final : public KvDb {
 public:
  // Opens the database in `dir`, creating the directory, the database and any missing column
  // family. Column families this version does not know are opened and left alone. Errors name
  // `dir` and carry RocksDB's message: kUnavailable when the directory is locked by another
  // process or I/O fails, kDataLoss when the files are corrupt, kInvalidArgument for an unusable
  // path or options.
  static absl::StatusOr<std::unique_ptr<RocksKvDb>> Open(const std::string& dir);

  // Closes the database; writes that returned OK stay durable as their Durability promised.
  ~RocksKvDb() override;

  absl::Status Write(const WriteBatch& batch, Durability durability) override;
  absl::StatusOr<std::optional<std::string>> Get(Table table, absl::string_view key) override;
  absl::Status Compact() override;
  absl::Status Scan(Table table, absl::string_view prefix, absl::string_view start,
                    const ScanFn& fn) override;
  absl::Status ReverseScan(Table table, absl::string_view prefix, absl::string_view start,
                           const ScanFn& fn) override;

 private:
  RocksKvDb(std::string dir, rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles);

  rocksdb::ColumnFamilyHandle* Handle(Table table) const;

  const std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;
  // Every open column family, ours first in kAllTables order, then unknown ones; owned.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

}  // namespace dstrain::coordinator
