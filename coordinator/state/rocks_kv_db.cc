#include "coordinator/state/rocks_kv_db.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/status.h"
#include "rocksdb/write_batch.h"

namespace dstrain::coordinator {
namespace {

rocksdb::Slice ToSlice(absl::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
absl::string_view ToView(const rocksdb::Slice& s) { return absl::string_view(s.data(), s.size()); }

// RocksDB's codes onto Abseil's (= gRPC's), so a caller can tell "retry" from "the disk lies".
absl::StatusCode ToCode(const rocksdb::Status& s) {
  switch (s.code()) {
    case rocksdb::Status::kOk:
      return absl::StatusCode::kOk;
    case rocksdb::Status::kNotFound:
      return absl::StatusCode::kNotFound;
    case rocksdb::Status::kCorruption:
      return absl::StatusCode::kDataLoss;
    case rocksdb::Status::kNotSupported:
      return absl::StatusCode::kUnimplemented;
    case rocksdb::Status::kInvalidArgument:
      return absl::StatusCode::kInvalidArgument;
    case rocksdb::Status::kIOError:
      // A full disk will not clear by retrying at once; anything else (a flaky device, the LOCK
      // held by another process) might.
      return s.IsNoSpace() ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kUnavailable;
    case rocksdb::Status::kShutdownInProgress:
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTryAgain:
      return absl::StatusCode::kUnavailable;
    case rocksdb::Status::kTimedOut:
    case rocksdb::Status::kExpired:
      return absl::StatusCode::kDeadlineExceeded;
    case rocksdb::Status::kAborted:
      return absl::StatusCode::kAborted;
    case rocksdb::Status::kCompactionTooLarge:
      return absl::StatusCode::kResourceExhausted;
    case rocksdb::Status::kColumnFamilyDropped:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

// "<what> in <dir>: <RocksDB's message>".
absl::Status ToStatus(const rocksdb::Status& s, absl::string_view what, absl::string_view dir) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(ToCode(s), absl::StrCat("rocksdb ", what, " in ", dir, ": ", s.ToString()));
}

// An iterator over the keys that start with `prefix`. The bounds keep it from stepping over
// tombstones outside the range; they live here as long as the iterator that points at them.
class PrefixIterator {
 public:
  PrefixIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* handle, absl::string_view prefix)
      : prefix_(prefix), end_(PrefixEnd(prefix)), lower_(prefix_), upper_(end_) {
    rocksdb::ReadOptions options;
    options.iterate_lower_bound = &lower_;
    if (!end_.empty()) options.iterate_upper_bound = &upper_;
    it_.reset(db->NewIterator(options, handle));
  }
  rocksdb::Iterator* get() { return it_.get(); }
  // The first key past the range ("" when there is none).
  const std::string& end() const { return end_; }

 private:
  const std::string prefix_;
  const std::string end_;
  const rocksdb::Slice lower_, upper_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RocksKvDb>> RocksKvDb::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  // RocksDB keeps 1000 old info LOG files by default, one per open: bound it for a daemon that
  // restarts.
  options.keep_log_file_num = 10;

  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (Table table : kAllTables) {
    families.emplace_back(std::string(TableName(table)), rocksdb::ColumnFamilyOptions(options));
  }
  families.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions(options));
  // RocksDB refuses to open a database without naming every column family it has, so one written
  // by a newer version with an extra table still opens here. A new database has none yet.
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(options, dir, &existing).ok()) {
    for (const std::string& name : existing) {
      const bool known = std::any_of(families.begin(), families.end(),
                                     [&](const auto& f) { return f.name == name; });
      if (!known) families.emplace_back(name, rocksdb::ColumnFamilyOptions(options));
    }
  }

  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, families, &handles, &db);
  if (!s.ok()) return ToStatus(s, "Open", dir);
  return std::unique_ptr<RocksKvDb>(new RocksKvDb(dir, db, std::move(handles)));
}

RocksKvDb::RocksKvDb(std::string dir, rocksdb::DB* db,
                     std::vector<rocksdb::ColumnFamilyHandle*> handles)
    : dir_(std::move(dir)), db_(db), handles_(std::move(handles)) {}

RocksKvDb::~RocksKvDb() {
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  // Close reports errors that the destructor would swallow too; nothing useful to do with them
  // here, and the WAL already holds every acknowledged write.
  db_->Close().PermitUncheckedError();
}

rocksdb::ColumnFamilyHandle* RocksKvDb::Handle(Table table) const {
  return handles_[static_cast<size_t>(table)];
}

absl::Status RocksKvDb::Write(const WriteBatch& batch, Durability durability) {
  absl::Status valid = ValidateBatch(batch);
  if (!valid.ok()) return valid;
  rocksdb::WriteBatch rocks_batch;
  for (const WriteBatch::Op& op : batch.ops()) {
    rocksdb::Status s;
    switch (op.kind) {
      case WriteBatch::OpKind::kPut:
        s = rocks_batch.Put(Handle(op.table), ToSlice(op.key), ToSlice(op.value));
        break;
      case WriteBatch::OpKind::kDelete:
        s = rocks_batch.Delete(Handle(op.table), ToSlice(op.key));
        break;
      case WriteBatch::OpKind::kDeleteRange:
        if (op.key == op.value) continue;  // empty range: skip a useless tombstone
        s = rocks_batch.DeleteRange(Handle(op.table), ToSlice(op.key), ToSlice(op.value));
        break;
    }
    if (!s.ok()) return ToStatus(s, "WriteBatch", dir_);
  }
  rocksdb::WriteOptions options;
  options.sync = durability == Durability::kSync;
  return ToStatus(db_->Write(options, &rocks_batch), "Write", dir_);
}

absl::Status RocksKvDb::Compact() {
  rocksdb::CompactRangeOptions options;
  // Range tombstones and the keys they cover leave the bottom level too.
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (Table table : kAllTables) {
    rocksdb::Status s = db_->CompactRange(options, Handle(table), nullptr, nullptr);
    if (!s.ok()) return ToStatus(s, "CompactRange", dir_);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> RocksKvDb::Get(Table table, absl::string_view key) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), Handle(table), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) {
    return ToStatus(s, absl::StrCat("Get ", TableName(table), " \"", absl::CHexEscape(key), "\""),
                    dir_);
  }
  return std::optional<std::string>(std::move(value));
}

absl::Status RocksKvDb::Scan(Table table, absl::string_view prefix, absl::string_view start,
                             const ScanFn& fn) {
  PrefixIterator range(db_.get(), Handle(table), prefix);
  rocksdb::Iterator* it = range.get();
  for (it->Seek(ToSlice(std::max(prefix, start))); it->Valid(); it->Next()) {
    if (!fn(ToView(it->key()), ToView(it->value()))) break;
  }
  return ToStatus(it->status(), absl::StrCat("Scan ", TableName(table)), dir_);
}

absl::Status RocksKvDb::ReverseScan(Table table, absl::string_view prefix, absl::string_view start,
                                    const ScanFn& fn) {
  PrefixIterator range(db_.get(), Handle(table), prefix);
  rocksdb::Iterator* it = range.get();
  const std::string& end = range.end();
  if (start.empty() || (!end.empty() && start >= end)) {
    it->SeekToLast();  // honours iterate_upper_bound: the last key below it
  } else if (start < prefix) {
    return absl::OkStatus();  // every key <= start is below the range
  } else {
    it->SeekForPrev(ToSlice(start));
  }
  for (; it->Valid(); it->Prev()) {
    if (!fn(ToView(it->key()), ToView(it->value()))) break;
  }
  return ToStatus(it->status(), absl::StrCat("ReverseScan ", TableName(table)), dir_);
}

}  // namespace dstrain::coordinator
