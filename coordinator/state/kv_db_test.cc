// One conformance suite for every KvDb (MemKvDb and RocksKvDb), plus what only RocksKvDb does:
// files, locking, column-family names, reopening.
#include "coordinator/state/kv_db.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_matchers.h"
#include "coordinator/state/mem_kv_db.h"
#include "coordinator/state/rocks_kv_db.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::Pair;

// An empty directory of its own under TEST_TMPDIR for the running test.
std::string FreshDir(absl::string_view suffix = "") {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = absl::StrCat(test->test_suite_name(), "_", test->name(), suffix);
  for (char& c : name) {
    if (c == '/') c = '_';  // parameterized names contain '/'
  }
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::filesystem::path dir = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::unique_ptr<KvDb> OpenRocks(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<RocksKvDb>> db = RocksKvDb::Open(dir);
  EXPECT_THAT(db, IsOk());
  return db.ok() ? std::move(*db) : nullptr;
}

struct Backend {
  std::string name;
  std::function<std::unique_ptr<KvDb>(const std::string& dir)> open;
};

class KvDbConformanceTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = GetParam().open(FreshDir());
    ASSERT_NE(db_, nullptr);
  }

  void Put(Table table, absl::string_view key, absl::string_view value) {
    WriteBatch batch;
    batch.Put(table, key, value);
    ASSERT_THAT(db_->Write(batch, Durability::kSync), IsOk());
  }

  std::optional<std::string> Get(Table table, absl::string_view key) {
    absl::StatusOr<std::optional<std::string>> value = db_->Get(table, key);
    EXPECT_THAT(value, IsOk());
    return value.ok() ? *value : std::nullopt;
  }

  using Entries = std::vector<std::pair<std::string, std::string>>;

  // The entries a scan visits; stops after `max` when max > 0.
  Entries ScanAll(Table table, absl::string_view prefix, absl::string_view start, bool reverse,
                  size_t max = 0) {
    Entries seen;
    auto fn = [&](absl::string_view key, absl::string_view value) {
      seen.emplace_back(std::string(key), std::string(value));
      return max == 0 || seen.size() < max;
    };
    absl::Status s =
        reverse ? db_->ReverseScan(table, prefix, start, fn) : db_->Scan(table, prefix, start, fn);
    EXPECT_THAT(s, IsOk());
    return seen;
  }

  std::vector<std::string> Keys(const Entries& entries) {
    std::vector<std::string> keys;
    for (const auto& entry : entries) keys.push_back(entry.first);
    return keys;
  }

  std::unique_ptr<KvDb> db_;
};

TEST_P(KvDbConformanceTest, PutGetDelete) {
  EXPECT_EQ(Get(Table::kJobs, "a"), std::nullopt);
  Put(Table::kJobs, "a", "1");
  EXPECT_THAT(Get(Table::kJobs, "a"), Optional(std::string("1")));
  Put(Table::kJobs, "a", "2");
  EXPECT_THAT(Get(Table::kJobs, "a"), Optional(std::string("2")));
  Put(Table::kJobs, "empty", "");
  EXPECT_THAT(Get(Table::kJobs, "empty"), Optional(std::string()));

  WriteBatch del;
  del.Delete(Table::kJobs, "a");
  del.Delete(Table::kJobs, "never-there");
  ASSERT_THAT(db_->Write(del, Durability::kBuffered), IsOk());
  EXPECT_EQ(Get(Table::kJobs, "a"), std::nullopt);
}

TEST_P(KvDbConformanceTest, TablesAreSeparate) {
  for (Table table : kAllTables) Put(table, "k", TableName(table));
  for (Table table : kAllTables) {
    EXPECT_THAT(Get(table, "k"), Optional(std::string(TableName(table))));
    EXPECT_THAT(Keys(ScanAll(table, "", "", false)), ElementsAre("k"));
  }
}

TEST_P(KvDbConformanceTest, BatchAppliesInOrderAcrossTables) {
  Put(Table::kJobs, "old", "x");
  WriteBatch batch;
  batch.Put(Table::kJobs, "j", "job");
  batch.Put(Table::kLogs, "l", "log");
  batch.Delete(Table::kJobs, "old");
  batch.Put(Table::kKv, "gone", "1");
  batch.Delete(Table::kKv, "gone");
  batch.Put(Table::kKv, "twice", "1");
  batch.Put(Table::kKv, "twice", "2");
  EXPECT_EQ(batch.size(), 7u);
  ASSERT_THAT(db_->Write(batch, Durability::kSync), IsOk());

  EXPECT_THAT(Get(Table::kJobs, "j"), Optional(std::string("job")));
  EXPECT_THAT(Get(Table::kLogs, "l"), Optional(std::string("log")));
  EXPECT_EQ(Get(Table::kJobs, "old"), std::nullopt);
  EXPECT_EQ(Get(Table::kKv, "gone"), std::nullopt);
  EXPECT_THAT(Get(Table::kKv, "twice"), Optional(std::string("2")));
}

TEST_P(KvDbConformanceTest, BadBatchWritesNothing) {
  WriteBatch batch;
  batch.Put(Table::kJobs, "a", "1");
  batch.Put(Table::kMetrics, "m", "1");
  batch.DeleteRange(Table::kLogs, "z", "a");  // begin after end
  EXPECT_THAT(db_->Write(batch, Durability::kSync),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("logs")));
  EXPECT_EQ(Get(Table::kJobs, "a"), std::nullopt);
  EXPECT_EQ(Get(Table::kMetrics, "m"), std::nullopt);
}

TEST_P(KvDbConformanceTest, ScanHonoursPrefixStartAndStop) {
  for (const char* key : {"c", "b/3", "a", "b/1", "b0", "b/2", "b"}) Put(Table::kJobs, key, "v");

  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "", false)), ElementsAre("b/1", "b/2", "b/3"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "b/2", false)), ElementsAre("b/2", "b/3"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "b/15", false)), ElementsAre("b/2", "b/3"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "a", false)), ElementsAre("b/1", "b/2", "b/3"));
  EXPECT_THAT(ScanAll(Table::kJobs, "b/", "b/9", false), IsEmpty());
  EXPECT_THAT(ScanAll(Table::kJobs, "b/", "c", false), IsEmpty());
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "", false, /*max=*/2)), ElementsAre("b/1", "b/2"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "", "", false)),
              ElementsAre("a", "b", "b/1", "b/2", "b/3", "b0", "c"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "", "b0", false)), ElementsAre("b0", "c"));
  EXPECT_THAT(ScanAll(Table::kJobs, "x", "", false), IsEmpty());
}

TEST_P(KvDbConformanceTest, ReverseScanHonoursPrefixStartAndStop) {
  for (const char* key : {"c", "b/3", "a", "b/1", "b0", "b/2", "b"}) Put(Table::kJobs, key, "v");

  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "", true)), ElementsAre("b/3", "b/2", "b/1"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "b/2", true)), ElementsAre("b/2", "b/1"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "b/25", true)), ElementsAre("b/2", "b/1"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "z", true)), ElementsAre("b/3", "b/2", "b/1"));
  EXPECT_THAT(ScanAll(Table::kJobs, "b/", "a", true), IsEmpty());
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "b/", "", true, /*max=*/1)), ElementsAre("b/3"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "", "", true)),
              ElementsAre("c", "b0", "b/3", "b/2", "b/1", "b", "a"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "", "b/1", true)), ElementsAre("b/1", "b", "a"));
  EXPECT_THAT(ScanAll(Table::kJobs, "x", "", true), IsEmpty());
}

TEST_P(KvDbConformanceTest, ReverseScanOfAPrefixOfMaxBytes) {
  const std::string ff = "\xff";
  for (const std::string& key : {std::string("\xfe"), ff, ff + "\x01", ff + ff}) {
    Put(Table::kKv, key, "v");
  }
  EXPECT_THAT(Keys(ScanAll(Table::kKv, ff, "", true)), ElementsAre(ff + ff, ff + "\x01", ff));
  EXPECT_THAT(Keys(ScanAll(Table::kKv, ff, "", false)), ElementsAre(ff, ff + "\x01", ff + ff));
}

TEST_P(KvDbConformanceTest, DeleteRangeIsHalfOpen) {
  for (const char* key : {"k1", "k2", "k3", "k4", "k5"}) Put(Table::kLogs, key, "v");
  Put(Table::kMetrics, "k3", "other table");

  EXPECT_THAT(db_->DeleteRange(Table::kLogs, "k2", "k4", Durability::kBuffered), IsOk());
  EXPECT_THAT(Keys(ScanAll(Table::kLogs, "", "", false)), ElementsAre("k1", "k4", "k5"));
  EXPECT_THAT(db_->DeleteRange(Table::kLogs, "k4", "k4", Durability::kSync), IsOk());
  EXPECT_THAT(Keys(ScanAll(Table::kLogs, "", "", false)), ElementsAre("k1", "k4", "k5"));
  EXPECT_THAT(db_->DeleteRange(Table::kLogs, "k5", "k1", Durability::kSync),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("begin")));
  EXPECT_THAT(db_->DeleteRange(Table::kLogs, "", PrefixEnd("k"), Durability::kSync), IsOk());
  EXPECT_THAT(ScanAll(Table::kLogs, "", "", false), IsEmpty());
  EXPECT_THAT(Get(Table::kMetrics, "k3"), Optional(std::string("other table")));
}

TEST_P(KvDbConformanceTest, BinaryKeysAndValues) {
  const std::string nul(1, '\0');
  const std::string value = "v" + nul + "\xff" + nul;
  Put(Table::kKv, "a" + nul + "b", value);
  Put(Table::kKv, "a" + nul, "x");
  Put(Table::kKv, "a", "y");
  Put(Table::kKv, "\x80", "high");  // bytes compare unsigned: after 0x7f
  Put(Table::kKv, "\x7f", "low");

  EXPECT_THAT(Get(Table::kKv, "a" + nul + "b"), Optional(value));
  EXPECT_EQ(Get(Table::kKv, "a" + nul + "c"), std::nullopt);
  EXPECT_THAT(ScanAll(Table::kKv, "a" + nul, "", false),
              ElementsAre(Pair("a" + nul, "x"), Pair("a" + nul + "b", value)));
  EXPECT_THAT(Keys(ScanAll(Table::kKv, "", "", false)),
              ElementsAre("a", "a" + nul, "a" + nul + "b", "\x7f", "\x80"));
}

TEST_P(KvDbConformanceTest, ScanCallbackMayWriteAndSeesTheStartingState) {
  for (const char* key : {"a", "b", "c"}) Put(Table::kJobs, key, "v");
  std::vector<std::string> seen;
  ASSERT_THAT(db_->Scan(Table::kJobs, "", "",
                        [&](absl::string_view key, absl::string_view) {
                          seen.emplace_back(key);
                          WriteBatch batch;
                          batch.Put(Table::kJobs, "b2", "new");
                          batch.Delete(Table::kJobs, "c");
                          EXPECT_THAT(db_->Write(batch, Durability::kBuffered), IsOk());
                          return true;
                        }),
              IsOk());
  EXPECT_THAT(seen, ElementsAre("a", "b", "c"));
  EXPECT_THAT(Keys(ScanAll(Table::kJobs, "", "", false)), ElementsAre("a", "b", "b2"));
}

TEST_P(KvDbConformanceTest, ConcurrentWritersAllLand) {
  constexpr int kThreads = 4;
  constexpr int kKeysPerThread = 100;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kKeysPerThread; ++i) {
        WriteBatch batch;
        batch.Put(Table::kMetrics, absl::StrCat(t, "/", 1000 + i), "v");
        EXPECT_THAT(db_->Write(batch, Durability::kBuffered), IsOk());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ScanAll(Table::kMetrics, "", "", false).size(), size_t{kThreads * kKeysPerThread});
}

INSTANTIATE_TEST_SUITE_P(
    Backends, KvDbConformanceTest,
    ::testing::Values(Backend{"Mem",
                              [](const std::string&) { return std::make_unique<MemKvDb>(); }},
                      Backend{"Rocks", OpenRocks}),
    [](const ::testing::TestParamInfo<Backend>& info) { return info.param.name; });

TEST(PrefixEndTest, IncrementsTheLastByteThatCan) {
  EXPECT_EQ(PrefixEnd("job/"), "job0");
  EXPECT_EQ(PrefixEnd("a\xff"), "b");
  EXPECT_EQ(PrefixEnd(std::string("a\xff\xff")), "b");
  EXPECT_EQ(PrefixEnd("\xff\xff"), "");
  EXPECT_EQ(PrefixEnd(""), "");
}

TEST(TableTest, ColumnFamilyNames) {
  std::vector<std::string> names;
  for (Table table : kAllTables) names.emplace_back(TableName(table));
  EXPECT_THAT(names, ElementsAre("jobs", "job_events", "workers", "checkpoints", "metrics", "logs",
                                 "kv", "secrets"));
}

TEST(RocksKvDbTest, ReopenKeepsSyncedAndBufferedWritesInEveryColumnFamily) {
  const std::string dir = FreshDir();
  {
    std::unique_ptr<KvDb> db = OpenRocks(dir);
    ASSERT_NE(db, nullptr);
    WriteBatch sync;
    WriteBatch buffered;
    for (Table table : kAllTables) {
      sync.Put(table, "s", TableName(table));
      buffered.Put(table, "b", TableName(table));
    }
    ASSERT_THAT(db->Write(sync, Durability::kSync), IsOk());
    ASSERT_THAT(db->Write(buffered, Durability::kBuffered), IsOk());
  }
  std::vector<std::string> families;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &families).ok());
  EXPECT_THAT(families,
              ::testing::UnorderedElementsAre("default", "jobs", "job_events", "workers",
                                              "checkpoints", "metrics", "logs", "kv", "secrets"));

  std::unique_ptr<KvDb> db = OpenRocks(dir);
  ASSERT_NE(db, nullptr);
  for (Table table : kAllTables) {
    for (const char* key : {"s", "b"}) {
      absl::StatusOr<std::optional<std::string>> value = db->Get(table, key);
      ASSERT_THAT(value, IsOk());
      EXPECT_THAT(*value, Optional(std::string(TableName(table)))) << key;
    }
  }
}

// Deleting a job's records and compacting gives the disk space back: the retention of the
// coordinator (--job-ttl) keeps its database bounded.
TEST(RocksKvDbTest, DeletedRangesLeaveTheDiskAfterCompact) {
  const std::string dir = FreshDir();
  std::unique_ptr<KvDb> db = OpenRocks(dir);
  ASSERT_NE(db, nullptr);
  auto disk = [&dir] {
    uint64_t bytes = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
      if (e.is_regular_file() && e.path().extension() == ".sst") bytes += e.file_size();
    }
    return bytes;
  };
  // 16 MiB of incompressible log records for one job.
  uint64_t x = 88172645463325252ull;
  for (int batch = 0; batch < 16; ++batch) {
    WriteBatch b;
    for (int i = 0; i < 256; ++i) {
      std::string value(4096, '\0');
      for (char& c : value) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        c = static_cast<char>(x);
      }
      b.Put(Table::kLogs, absl::StrFormat("job1/%08d", batch * 256 + i), value);
    }
    ASSERT_THAT(db->Write(b, Durability::kBuffered), IsOk());
  }
  ASSERT_THAT(db->Compact(), IsOk());  // flushed into files
  const uint64_t before = disk();
  EXPECT_GT(before, 15u << 20);
  ASSERT_THAT(db->DeleteRange(Table::kLogs, "job1/", "job10", Durability::kSync), IsOk());
  ASSERT_THAT(db->Compact(), IsOk());
  const uint64_t after = disk();
  EXPECT_LT(after, before / 20) << before << " bytes before, " << after << " after";
}

TEST(RocksKvDbTest, SecondOpenOfALockedDirIsUnavailable) {
  const std::string dir = FreshDir();
  std::unique_ptr<KvDb> first = OpenRocks(dir);
  ASSERT_NE(first, nullptr);
  EXPECT_THAT(RocksKvDb::Open(dir), StatusIs(absl::StatusCode::kUnavailable, HasSubstr(dir)));
}

TEST(RocksKvDbTest, OpenOfAFileFailsNamingIt) {
  const std::string file = FreshDir() + "/not-a-dir";
  std::ofstream(file) << "x";
  absl::StatusOr<std::unique_ptr<RocksKvDb>> db = RocksKvDb::Open(file);
  EXPECT_FALSE(db.ok());
  EXPECT_THAT(db.status().message(), HasSubstr(file));
}

TEST(RocksKvDbTest, OpensADatabaseWithAColumnFamilyItDoesNotKnow) {
  const std::string dir = FreshDir();
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::ColumnFamilyHandle* future = nullptr;
    ASSERT_TRUE(db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "future", &future).ok());
    ASSERT_TRUE(db->DestroyColumnFamilyHandle(future).ok());
  }
  std::unique_ptr<KvDb> db = OpenRocks(dir);
  ASSERT_NE(db, nullptr);
  WriteBatch batch;
  batch.Put(Table::kJobs, "j", "v");
  EXPECT_THAT(db->Write(batch, Durability::kSync), IsOk());
}

}  // namespace
}  // namespace dstrain::coordinator
