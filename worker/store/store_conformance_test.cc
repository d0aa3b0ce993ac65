// The Store contract (store.h), checked against every backend: InMemoryStore, TcpStoreClient
// talking to an in-process TcpStoreServer, GrpcStore talking to the coordinator's StoreService
// (over a DurableStore) on loopback, and PrefixStore (one and two levels) over each.
// Every blocking call in here has a timeout, so a broken backend fails the test instead of
// hanging it.
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "coordinator/store/durable_store.h"
#include "coordinator/store/store_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/store/grpc_store.h"
#include "worker/store/in_memory_store.h"
#include "worker/store/prefix_store.h"
#include "worker/store/store.h"
#include "worker/store/tcp_store.h"

namespace dstrain::store {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

// Matches an OK StatusOr whose value matches `matcher` (absent from Abseil 20220623).
MATCHER_P(IsOkAndHolds, matcher, "") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(matcher, *arg, result_listener);
}

// Generous bound for calls that should not block.
constexpr absl::Duration kLong = absl::Seconds(5);
// Timeout for the calls meant to time out.
constexpr absl::Duration kShort = absl::Milliseconds(250);
// How late a timed-out call may return.
constexpr absl::Duration kSlack = absl::Seconds(2);

// A backend under test: owns whatever the Store needs (a server, an inner store).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual Store* store() = 0;
};

class InMemoryBackend : public Backend {
 public:
  Store* store() override { return &store_; }

 private:
  InMemoryStore store_;
};

class TcpBackend : public Backend {
 public:
  TcpBackend() {
    absl::StatusOr<std::unique_ptr<TcpStoreServer>> server = TcpStoreServer::Start("127.0.0.1", 0);
    EXPECT_THAT(server, IsOk());
    if (!server.ok()) return;
    server_ = *std::move(server);
    absl::StatusOr<std::unique_ptr<TcpStoreClient>> client =
        TcpStoreClient::Connect("127.0.0.1", server_->port(), kLong);
    EXPECT_THAT(client, IsOk());
    if (client.ok()) client_ = *std::move(client);
  }
  ~TcpBackend() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown();
  }
  Store* store() override { return client_.get(); }

 private:
  std::unique_ptr<TcpStoreServer> server_;
  std::unique_ptr<TcpStoreClient> client_;
};

// Service mode: the coordinator's StoreService on 127.0.0.1:<free port>, a GrpcStore client.
class GrpcBackend : public Backend {
 public:
  GrpcBackend() : durable_(&log_, {}), service_(&durable_, &credentials_) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port, 0);
    // A trainer's view: its attempt's credential, its keys beneath the attempt's prefix.
    client_ =
        GrpcStore::Connect(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials(),
                           StoreCredential{kScope, credentials_.TokenFor(kScope)}, kLong);
    scoped_ = std::make_unique<PrefixStore>(kScope, client_.get());
  }
  ~GrpcBackend() override {
    durable_.Close();  // wakes blocked Waits so the server can stop
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }
  Store* store() override { return scoped_.get(); }

 private:
  static constexpr char kScope[] = "jobs/conformance/attempt-1";
  class NullLog final : public coordinator::KvLog {
   public:
    absl::Status Put(absl::string_view, absl::string_view) override { return absl::OkStatus(); }
    absl::Status Delete(absl::string_view) override { return absl::OkStatus(); }
  };
  NullLog log_;
  coordinator::DurableStore durable_;
  const coordinator::StoreCredentials credentials_{std::string(32, 's')};
  coordinator::StoreServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<GrpcStore> client_;
  std::unique_ptr<PrefixStore> scoped_;
};

class PrefixBackend : public Backend {
 public:
  PrefixBackend(std::unique_ptr<Backend> inner, std::vector<std::string> prefixes)
      : inner_(std::move(inner)) {
    Store* base = inner_->store();
    for (std::string& prefix : prefixes) {
      layers_.push_back(std::make_unique<PrefixStore>(std::move(prefix), base));
      base = layers_.back().get();
    }
  }
  Store* store() override { return layers_.back().get(); }

 private:
  std::unique_ptr<Backend> inner_;
  std::vector<std::unique_ptr<PrefixStore>> layers_;
};

struct BackendParam {
  std::string name;
  std::function<std::unique_ptr<Backend>()> make;
};

std::vector<BackendParam> AllBackends() {
  auto in_memory = [] { return std::make_unique<InMemoryBackend>(); };
  auto tcp = [] { return std::make_unique<TcpBackend>(); };
  auto grpc = [] { return std::make_unique<GrpcBackend>(); };
  return {
      {"InMemory", in_memory},
      {"Tcp", tcp},
      {"Grpc", grpc},
      {"PrefixOverGrpc",
       [=] { return std::make_unique<PrefixBackend>(grpc(), std::vector<std::string>{"job7"}); }},
      {"PrefixOverInMemory",
       [=] {
         return std::make_unique<PrefixBackend>(in_memory(), std::vector<std::string>{"job7"});
       }},
      {"PrefixOverTcp",
       [=] { return std::make_unique<PrefixBackend>(tcp(), std::vector<std::string>{"job7"}); }},
      {"NestedPrefixOverInMemory",
       [=] {
         return std::make_unique<PrefixBackend>(in_memory(),
                                                std::vector<std::string>{"job7", "attempt2"});
       }},
      {"NestedPrefixOverTcp",
       [=] {
         return std::make_unique<PrefixBackend>(tcp(),
                                                std::vector<std::string>{"job7", "attempt2"});
       }},
  };
}

class StoreConformanceTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    backend_ = GetParam().make();
    store_ = backend_->store();
    ASSERT_NE(store_, nullptr);
  }

  std::unique_ptr<Backend> backend_;
  Store* store_ = nullptr;
};

TEST_P(StoreConformanceTest, SetThenGetAndOverwrite) {
  ASSERT_THAT(store_->Set("k", "v1"), IsOk());
  EXPECT_THAT(store_->Get("k", kLong), IsOkAndHolds(std::string("v1")));
  ASSERT_THAT(store_->Set("k", "v2"), IsOk());
  absl::StatusOr<std::string> value = store_->Get("k", kLong);
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(*value, "v2");
}

TEST_P(StoreConformanceTest, GetOfPresentKeyWithZeroTimeoutSucceeds) {
  ASSERT_THAT(store_->Set("k", "v"), IsOk());
  absl::StatusOr<std::string> value = store_->Get("k", absl::ZeroDuration());
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(*value, "v");
}

TEST_P(StoreConformanceTest, GetBlocksUntilAConcurrentSet) {
  const absl::Time start = absl::Now();
  std::thread writer([this] {
    absl::SleepFor(absl::Milliseconds(150));
    EXPECT_THAT(store_->Set("late", "here"), IsOk());
  });
  absl::StatusOr<std::string> value = store_->Get("late", kLong);
  const absl::Duration elapsed = absl::Now() - start;
  writer.join();
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(*value, "here");
  EXPECT_GE(elapsed, absl::Milliseconds(100));
  EXPECT_LT(elapsed, kLong);
}

TEST_P(StoreConformanceTest, GetTimesOutNamingTheKeyAndTimeout) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> value = store_->Get("never_set", kShort);
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_THAT(value, StatusIs(absl::StatusCode::kDeadlineExceeded,
                              ::testing::AllOf(HasSubstr("never_set"), HasSubstr("250ms"))));
  EXPECT_GE(elapsed, kShort);
  EXPECT_LT(elapsed, kShort + kSlack);
}

TEST_P(StoreConformanceTest, WaitReturnsOnceEveryKeyExists) {
  ASSERT_THAT(store_->Set("a", "1"), IsOk());
  std::thread writer([this] {
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_THAT(store_->Set("b", "2"), IsOk());
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_THAT(store_->Set("c", "3"), IsOk());
  });
  const absl::Time start = absl::Now();
  EXPECT_THAT(store_->Wait({"a", "b", "c"}, kLong), IsOk());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(80));
  writer.join();
}

TEST_P(StoreConformanceTest, WaitOnNoKeysReturnsAtOnce) {
  EXPECT_THAT(store_->Wait({}, absl::ZeroDuration()), IsOk());
}

TEST_P(StoreConformanceTest, WaitTimesOutNamingOnlyTheMissingKeys) {
  ASSERT_THAT(store_->Set("present", "x"), IsOk());
  const absl::Time start = absl::Now();
  absl::Status s = store_->Wait({"present", "absent_1", "absent_2"}, kShort);
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDeadlineExceeded,
                          ::testing::AllOf(HasSubstr("absent_1"), HasSubstr("absent_2"),
                                           HasSubstr("250ms"), Not(HasSubstr("present\"")))));
  EXPECT_GE(elapsed, kShort);
  EXPECT_LT(elapsed, kShort + kSlack);
}

TEST_P(StoreConformanceTest, AddStartsAtZeroAndReturnsTheSum) {
  EXPECT_THAT(store_->Add("n", 5), IsOkAndHolds(int64_t{5}));
  EXPECT_THAT(store_->Add("n", -7), IsOkAndHolds(int64_t{-2}));
  EXPECT_THAT(store_->Add("n", 0), IsOkAndHolds(int64_t{-2}));
  EXPECT_THAT(store_->Get("n", kLong), IsOkAndHolds(std::string("-2")));
  ASSERT_THAT(store_->Set("m", "40"), IsOk());
  EXPECT_THAT(store_->Add("m", 2), IsOkAndHolds(int64_t{42}));
}

TEST_P(StoreConformanceTest, ConcurrentAddsFromEightThreadsAreAtomic) {
  constexpr int kThreads = 8;
  constexpr int kIncrements = 1000;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        if (!store_->Add("counter", 1).ok()) failures.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_THAT(store_->Add("counter", 0), IsOkAndHolds(int64_t{kThreads * kIncrements}));
}

TEST_P(StoreConformanceTest, AddOnANonNumericValueFailsAndLeavesItAlone) {
  ASSERT_THAT(store_->Set("word", "hello"), IsOk());
  EXPECT_THAT(store_->Add("word", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("word")));
  EXPECT_THAT(store_->Get("word", kLong), IsOkAndHolds(std::string("hello")));
}

TEST_P(StoreConformanceTest, AddThatOverflowsFails) {
  ASSERT_THAT(store_->Set("big", absl::StrCat(std::numeric_limits<int64_t>::max())), IsOk());
  EXPECT_THAT(store_->Add("big", 1), StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("big")));
}

TEST_P(StoreConformanceTest, CompareSetOnAbsentKeyWithEmptyExpectedSets) {
  EXPECT_THAT(store_->CompareSet("cas", "", "first"), IsOkAndHolds(std::string("first")));
  EXPECT_THAT(store_->Get("cas", kLong), IsOkAndHolds(std::string("first")));
}

TEST_P(StoreConformanceTest, CompareSetOnAbsentKeyWithNonEmptyExpectedChangesNothing) {
  EXPECT_THAT(store_->CompareSet("cas", "something", "x"), IsOkAndHolds(std::string("")));
  EXPECT_THAT(store_->Get("cas", absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("cas")));
}

TEST_P(StoreConformanceTest, CompareSetReplacesOnlyOnMatch) {
  ASSERT_THAT(store_->Set("cas", "old"), IsOk());
  // Mismatch: returns the current value, changes nothing.
  EXPECT_THAT(store_->CompareSet("cas", "wrong", "new"), IsOkAndHolds(std::string("old")));
  EXPECT_THAT(store_->Get("cas", kLong), IsOkAndHolds(std::string("old")));
  // An empty expected value does not match a present, non-empty value.
  EXPECT_THAT(store_->CompareSet("cas", "", "new"), IsOkAndHolds(std::string("old")));
  // Match: replaces and returns the new value.
  EXPECT_THAT(store_->CompareSet("cas", "old", "new"), IsOkAndHolds(std::string("new")));
  EXPECT_THAT(store_->Get("cas", kLong), IsOkAndHolds(std::string("new")));
}

TEST_P(StoreConformanceTest, DeleteKeyReportsWhetherTheKeyExisted) {
  ASSERT_THAT(store_->Set("gone", "v"), IsOk());
  EXPECT_THAT(store_->DeleteKey("gone"), IsOkAndHolds(true));
  EXPECT_THAT(store_->DeleteKey("gone"), IsOkAndHolds(false));
  EXPECT_THAT(store_->DeleteKey("never"), IsOkAndHolds(false));
  EXPECT_THAT(store_->Get("gone", absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("gone")));
  // The key can come back.
  ASSERT_THAT(store_->Set("gone", "again"), IsOk());
  EXPECT_THAT(store_->Get("gone", kLong), IsOkAndHolds(std::string("again")));
}

TEST_P(StoreConformanceTest, BinaryKeysAndValuesWithNulBytesRoundTrip) {
  const std::string key("bin\0key\xff", 8);
  const std::string value("\0\x01\x02\0\xfe\xff\0", 7);
  ASSERT_EQ(value.size(), 7u);
  ASSERT_THAT(store_->Set(key, value), IsOk());
  absl::StatusOr<std::string> got = store_->Get(key, kLong);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(*got, value);
  // A key differing only after the NUL is a different key.
  EXPECT_THAT(store_->Get(std::string("bin\0other", 9), absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  EXPECT_THAT(store_->CompareSet(key, value, std::string("\0", 1)),
              IsOkAndHolds(std::string("\0", 1)));
}

TEST_P(StoreConformanceTest, EmptyValueIsAPresentKey) {
  ASSERT_THAT(store_->Set("empty", ""), IsOk());
  EXPECT_THAT(store_->Get("empty", kLong), IsOkAndHolds(std::string()));
  EXPECT_THAT(store_->Wait({"empty"}, absl::ZeroDuration()), IsOk());
  EXPECT_THAT(store_->DeleteKey("empty"), IsOkAndHolds(true));
}

TEST_P(StoreConformanceTest, LargeValueRoundTrips) {
  std::string value(1 << 20, '\0');
  for (size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>((i * 131 + 7) % 251);
  ASSERT_THAT(store_->Set("large", value), IsOk());
  absl::StatusOr<std::string> got = store_->Get("large", kLong);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->size(), value.size());
  EXPECT_TRUE(*got == value);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, StoreConformanceTest, ::testing::ValuesIn(AllBackends()),
                         [](const ::testing::TestParamInfo<BackendParam>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace dstrain::store
