#include "worker/comm/testing/conformance.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::comm::testing {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::_;
using ::testing::AnyOf;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;

constexpr int64_t kBig = int64_t{1} << 20;

CommOptions Options(absl::Duration timeout = absl::Seconds(30)) {
  CommOptions o;
  o.timeout = timeout;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Independent number formats: decoding, exact encoding and rounding through double arithmetic
// (nothing from cpu_reduce, so the reference does not share the code it checks).

double RoundRef(double v, int p, int emin, double max) {
  if (v == 0 || std::isnan(v) || std::isinf(v)) return v;
  int e;
  std::frexp(std::fabs(v), &e);
  const int exp = std::max(e - 1, emin);
  const double quantum = std::ldexp(1.0, exp - (p - 1));
  const double r = std::nearbyint(v / quantum) * quantum;
  if (std::fabs(r) > max) return std::copysign(std::numeric_limits<double>::infinity(), v);
  return r;
}

double RoundTo(DType dtype, double v) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<double>(static_cast<float>(v));
    case DType::kBF16:
      return RoundRef(v, 8, -126, std::ldexp(255.0, 120));
    case DType::kF16:
      return RoundRef(v, 11, -14, 65504.0);
    default:
      return v;
  }
}

double Decode(DType dtype, const std::vector<char>& buf, int64_t i) {
  if (dtype == DType::kF32) {
    float f;
    std::memcpy(&f, buf.data() + i * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, buf.data() + i * 2, 2);
  if (dtype == DType::kBF16) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int man = h & 0x3ff;
  if (exp == 0x1f) {
    return man ? std::numeric_limits<double>::quiet_NaN()
               : sign * std::numeric_limits<double>::infinity();
  }
  if (exp == 0) return sign * std::ldexp(man, -24);
  return sign * std::ldexp(1024 + man, exp - 25);
}

// REQUIRES: v is exactly representable in dtype (and a normal number or zero for f16).
void Encode(DType dtype, std::vector<char>& buf, int64_t i, double v) {
  if (dtype == DType::kF32) {
    const float f = static_cast<float>(v);
    std::memcpy(buf.data() + i * 4, &f, 4);
    return;
  }
  uint16_t h = 0;
  if (dtype == DType::kBF16) {
    const float f = static_cast<float>(v);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    h = static_cast<uint16_t>(u >> 16);
  } else if (v != 0) {
    int e;
    const double f = std::frexp(std::fabs(v), &e);  // |v| = f * 2^e, f in [0.5, 1)
    const int biased = e - 1 + 15;
    const int man = static_cast<int>((f * 2 - 1) * 1024);
    h = static_cast<uint16_t>((v < 0 ? 0x8000 : 0) | (biased << 10) | man);
  }
  std::memcpy(buf.data() + i * 2, &h, 2);
}

// Rank `rank`'s input element `i`, exactly representable in dtype and small enough that f32
// accumulation over 8 ranks is exact, yet with enough bits that bf16/f16 sums need rounding.
double Value(DType dtype, int rank, int64_t i, int salt) {
  const int64_t mix = rank * 1000003LL + i * 7919LL + salt * 104729LL;
  switch (dtype) {
    case DType::kF32:
      return static_cast<double>(mix % 257 - 128);  // integers in [-128, 128]
    case DType::kBF16:
      return static_cast<double>(mix % 257 - 128) / 4;  // quarters in [-32, 32]
    case DType::kF16:
      return static_cast<double>(mix % 4001 - 2000) / 16;  // sixteenths in [-125, 125]
    default:
      return 0;
  }
}

double Reference(DType dtype, ReduceOp op, int n, int64_t i, int salt) {
  double sum = 0;
  double max = -std::numeric_limits<double>::infinity();
  for (int q = 0; q < n; ++q) {
    const double v = Value(dtype, q, i, salt);
    sum += v;
    max = std::max(max, v);
  }
  switch (op) {
    case ReduceOp::kSum:
      return RoundTo(dtype, sum);
    case ReduceOp::kAvg:
      // The contract: the f32 sum divided once by n in f32, then rounded once to dtype.
      return RoundTo(dtype, static_cast<float>(sum) / static_cast<float>(n));
    case ReduceOp::kMax:
      return max;
  }
  return 0;
}

std::vector<char> Filled(DType dtype, int64_t count, int rank, int salt, int64_t offset = 0) {
  std::vector<char> buf(count * DTypeSize(dtype));
  for (int64_t i = 0; i < count; ++i) Encode(dtype, buf, i, Value(dtype, rank, offset + i, salt));
  return buf;
}

// Arbitrary bytes (NaN patterns included) for operations that only move data.
uint8_t Byte(int rank, int64_t i, int salt) {
  uint64_t x = (static_cast<uint64_t>(rank) << 40) ^ (static_cast<uint64_t>(salt) << 20) ^
               static_cast<uint64_t>(i);
  x *= 0x9E3779B97F4A7C15ull;
  return static_cast<uint8_t>(x >> 56);
}

std::vector<char> Bytes(size_t n, int rank, int salt) {
  std::vector<char> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = static_cast<char>(Byte(rank, i, salt));
  return buf;
}

CommBuffer Buf(std::vector<char>& v, int64_t count, DType dtype) {
  return CommBuffer{v.empty() ? nullptr : v.data(), count, dtype};
}

std::vector<int64_t> Counts(DType dtype) {
  std::vector<int64_t> counts = {0, 1, 3, 4, 1000};
  if (dtype == DType::kF32) counts.push_back(kBig);
  return counts;
}

constexpr DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};
constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax};

absl::Status RunOp(absl::StatusOr<std::unique_ptr<Work>> work) {
  if (!work.ok()) return work.status();
  return (*work)->Wait();
}

// Compares a reduced buffer with the reference; reports at most a few mismatches.
void ExpectReduced(const std::vector<char>& got, DType dtype, ReduceOp op, int n, int64_t count,
                   int64_t offset, int salt, const std::string& what) {
  int64_t bad = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double want = Reference(dtype, op, n, offset + i, salt);
    const double have = Decode(dtype, got, i);
    if (have != want) {
      if (++bad <= 3) {
        ADD_FAILURE() << what << ": element " << i << " is " << have << ", want " << want;
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": mismatched elements";
}

std::string Case(absl::string_view op, int rank, int64_t count, DType dtype) {
  return absl::StrCat(op, " rank ", rank, " count ", count, " ", DTypeName(dtype));
}

}  // namespace

void RunRanks(const CommBackend& backend, int size,
              const std::function<void(int rank, Communicator& comm)>& fn) {
  RankFactory factory = backend.new_group(size);
  std::vector<std::unique_ptr<Communicator>> comms(size);
  std::vector<std::thread> threads;
  threads.reserve(size);
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<Communicator>> comm = factory(r);
      if (!comm.ok()) {
        ADD_FAILURE() << backend.name << ": creating rank " << r << " of " << size << ": "
                      << comm.status();
        return;
      }
      comms[r] = *std::move(comm);
      EXPECT_EQ(comms[r]->rank(), r);
      EXPECT_EQ(comms[r]->size(), size);
      fn(r, *comms[r]);
    });
  }
  for (std::thread& t : threads) t.join();
  comms.clear();
}

std::vector<ConformanceParam> ConformanceParams(std::shared_ptr<const CommBackend> backend,
                                                std::vector<int> sizes) {
  std::vector<ConformanceParam> params;
  for (int size : sizes) params.push_back(ConformanceParam{backend, size});
  return params;
}

void PrintTo(const ConformanceParam& param, std::ostream* os) {
  *os << param.backend->name << ", " << param.size << " rank(s)";
}

std::string ConformanceParamName(const ::testing::TestParamInfo<ConformanceParam>& info) {
  return absl::StrCat(info.param.backend->name, "_size", info.param.size);
}

TEST_P(CommConformanceTest, AllReduce) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    int salt = 0;
    for (DType dtype : kDTypes) {
      for (int64_t count : Counts(dtype)) {
        for (ReduceOp op : kOps) {
          ++salt;
          const std::string what =
              absl::StrCat(Case("AllReduce", rank, count, dtype), " ", ReduceOpName(op));
          std::vector<char> buf = Filled(dtype, count, rank, salt);
          ASSERT_THAT(RunOp(comm.AllReduce(Buf(buf, count, dtype), op, Options())), IsOk()) << what;
          ExpectReduced(buf, dtype, op, n, count, 0, salt, what);
        }
      }
    }
  });
}

TEST_P(CommConformanceTest, ReduceScatter) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    int salt = 100;
    for (DType dtype : kDTypes) {
      const size_t es = DTypeSize(dtype);
      for (int64_t count : Counts(dtype)) {
        const int64_t chunk = count == kBig ? kBig / n : count;
        for (ReduceOp op : kOps) {
          ++salt;
          const std::string what =
              absl::StrCat(Case("ReduceScatter", rank, chunk, dtype), " ", ReduceOpName(op));
          std::vector<char> in = Filled(dtype, n * chunk, rank, salt);
          const std::vector<char> in_copy = in;
          std::vector<char> out(chunk * es, 0x55);
          ASSERT_THAT(RunOp(comm.ReduceScatter(Buf(in, n * chunk, dtype), Buf(out, chunk, dtype),
                                               op, Options())),
                      IsOk())
              << what;
          ExpectReduced(out, dtype, op, n, chunk, rank * chunk, salt, what);
          EXPECT_TRUE(in == in_copy) << what << ": the input was modified";
        }
      }
      // In place: the output is this rank's chunk of the input.
      ++salt;
      const int64_t chunk = 1000;
      std::vector<char> in = Filled(dtype, n * chunk, rank, salt);
      CommBuffer whole = Buf(in, n * chunk, dtype);
      CommBuffer mine{in.data() + rank * chunk * es, chunk, dtype};
      ASSERT_THAT(RunOp(comm.ReduceScatter(whole, mine, ReduceOp::kSum, Options())), IsOk());
      std::vector<char> out(in.begin() + rank * chunk * es, in.begin() + (rank + 1) * chunk * es);
      ExpectReduced(out, dtype, ReduceOp::kSum, n, chunk, rank * chunk, salt,
                    Case("ReduceScatter in place", rank, chunk, dtype));
    }
  });
}

TEST_P(CommConformanceTest, AllGather) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    int salt = 200;
    for (DType dtype : kDTypes) {
      const size_t es = DTypeSize(dtype);
      for (int64_t count : Counts(dtype)) {
        const int64_t chunk = count == kBig ? kBig / n : count;
        ++salt;
        const std::string what = Case("AllGather", rank, chunk, dtype);
        std::vector<char> in = Bytes(chunk * es, rank, salt);
        std::vector<char> out(n * chunk * es, 0x11);
        ASSERT_THAT(
            RunOp(comm.AllGather(Buf(in, chunk, dtype), Buf(out, n * chunk, dtype), Options())),
            IsOk())
            << what;
        for (int q = 0; q < n; ++q) {
          const std::vector<char> want = Bytes(chunk * es, q, salt);
          EXPECT_TRUE(std::equal(want.begin(), want.end(), out.begin() + q * chunk * es))
              << what << ": chunk of rank " << q;
        }
      }
      // In place: the input is this rank's chunk of the output.
      ++salt;
      const int64_t chunk = 333;
      std::vector<char> out(n * chunk * es, 0x22);
      const std::vector<char> mine = Bytes(chunk * es, rank, salt);
      std::copy(mine.begin(), mine.end(), out.begin() + rank * chunk * es);
      CommBuffer in{out.data() + rank * chunk * es, chunk, dtype};
      ASSERT_THAT(RunOp(comm.AllGather(in, Buf(out, n * chunk, dtype), Options())), IsOk());
      for (int q = 0; q < n; ++q) {
        const std::vector<char> want = Bytes(chunk * es, q, salt);
        EXPECT_TRUE(std::equal(want.begin(), want.end(), out.begin() + q * chunk * es))
            << "in-place AllGather, chunk of rank " << q;
      }
    }
  });
}

// Buffers from AllocateHostBuffer carry the same collectives with the same results, wherever
// they lie in it and whether or not every rank's buffer came from it (the shared-memory backend
// then runs them without staging when all did, and staged when one did not).
TEST_P(CommConformanceTest, HostBuffers) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    EXPECT_THAT(comm.AllocateHostBuffer(-1, Options()).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("AllocateHostBuffer")));
    // Large enough for a backend's fast path (tens of KiB), at an odd element offset too.
    const int64_t count = 40001, offset = 7;
    const int64_t bytes = (offset + n * count) * 4;
    absl::StatusOr<std::unique_ptr<HostBuffer>> host = comm.AllocateHostBuffer(bytes, Options());
    ASSERT_THAT(host.status(), IsOk());
    ASSERT_EQ((*host)->bytes(), bytes);
    ASSERT_EQ(reinterpret_cast<uintptr_t>((*host)->data()) % 64, 0u);
    char* base = static_cast<char*>((*host)->data());
    EXPECT_TRUE(std::all_of(base, base + bytes, [](char c) { return c == 0; })) << "not zeroed";
    int salt = 300;
    for (DType dtype : kDTypes) {
      const size_t es = DTypeSize(dtype);
      for (ReduceOp op : kOps) {
        for (int64_t at : {int64_t{0}, offset}) {
          // The last round: rank 0's buffer is plain memory, the others' are in the host buffer.
          for (bool plain_on_rank0 : {false, true}) {
            ++salt;
            const std::string what = absl::StrCat(
                Case("AllReduce in a host buffer", rank, count, dtype), " ", ReduceOpName(op),
                " at element ", at, plain_on_rank0 ? ", rank 0's plain" : "");
            const std::vector<char> in = Filled(dtype, count, rank, salt);
            std::vector<char> plain = in;
            char* data = plain_on_rank0 && rank == 0 ? plain.data() : base + at * es;
            std::memcpy(data, in.data(), in.size());
            ASSERT_THAT(RunOp(comm.AllReduce(CommBuffer{data, count, dtype}, op, Options())),
                        IsOk())
                << what;
            ExpectReduced(std::vector<char>(data, data + in.size()), dtype, op, n, count, 0, salt,
                          what);
          }
        }
      }
      // ReduceScatter from the host buffer, out of place and in place.
      for (bool in_place : {false, true}) {
        ++salt;
        const std::string what = Case(in_place ? "ReduceScatter in place in a host buffer"
                                               : "ReduceScatter from a host "
                                                 "buffer",
                                      rank, count, dtype);
        const std::vector<char> in = Filled(dtype, n * count, rank, salt);
        std::memcpy(base, in.data(), in.size());
        std::vector<char> out(count * es, 0x55);
        char* dst = in_place ? base + rank * count * es : out.data();
        ASSERT_THAT(
            RunOp(comm.ReduceScatter(CommBuffer{base, n * count, dtype},
                                     CommBuffer{dst, count, dtype}, ReduceOp::kSum, Options())),
            IsOk())
            << what;
        ExpectReduced(std::vector<char>(dst, dst + count * es), dtype, ReduceOp::kSum, n, count,
                      rank * count, salt, what);
        if (!in_place) {
          EXPECT_EQ(std::memcmp(base, in.data(), in.size()), 0) << what << ": input modified";
        }
      }
      // AllGather from the host buffer, out of place and in place.
      for (bool in_place : {false, true}) {
        ++salt;
        const std::string what =
            Case(in_place ? "AllGather in place in a host buffer" : "AllGather from a host buffer",
                 rank, count, dtype);
        const std::vector<char> mine = Bytes(count * es, rank, salt);
        std::vector<char> out(n * count * es, 0x11);
        char* dst = in_place ? base : out.data();
        char* src = in_place ? base + rank * count * es : base;
        std::memcpy(src, mine.data(), mine.size());
        ASSERT_THAT(RunOp(comm.AllGather(CommBuffer{src, count, dtype},
                                         CommBuffer{dst, n * count, dtype}, Options())),
                    IsOk())
            << what;
        for (int q = 0; q < n; ++q) {
          const std::vector<char> want = Bytes(count * es, q, salt);
          EXPECT_EQ(std::memcmp(want.data(), dst + q * count * es, want.size()), 0)
              << what << ": chunk of rank " << q;
        }
      }
    }
  });
}

TEST_P(CommConformanceTest, Broadcast) {
  const int n = size();
  const std::set<int> roots = {0, n - 1, n / 2};
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    int salt = 300;
    for (DType dtype : kDTypes) {
      for (int64_t count : Counts(dtype)) {
        for (int root : roots) {
          ++salt;
          const std::string what =
              absl::StrCat(Case("Broadcast", rank, count, dtype), " root ", root);
          const size_t bytes = count * DTypeSize(dtype);
          std::vector<char> buf = Bytes(bytes, rank, salt);  // non-roots hold other bytes
          ASSERT_THAT(RunOp(comm.Broadcast(Buf(buf, count, dtype), root, Options())), IsOk())
              << what;
          EXPECT_TRUE(buf == Bytes(bytes, root, salt)) << what;
        }
      }
    }
  });
}

TEST_P(CommConformanceTest, Barrier) {
  const int n = size();
  std::atomic<int> arrived{0};
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    for (int round = 1; round <= 5; ++round) {
      if (rank == round % n) absl::SleepFor(absl::Milliseconds(20));  // a late rank
      arrived.fetch_add(1);
      ASSERT_THAT(RunOp(comm.Barrier(Options())), IsOk());
      EXPECT_GE(arrived.load(), n * round)
          << "rank " << rank << " left barrier " << round << " before every rank arrived";
      // Nobody may enter the next round's count before everyone left this barrier's check:
      // a second barrier separates the rounds.
      ASSERT_THAT(RunOp(comm.Barrier(Options())), IsOk());
    }
  });
}

TEST_P(CommConformanceTest, SendRecvRing) {
  const int n = size();
  if (n == 1) GTEST_SKIP() << "point to point needs two ranks";
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    const int right = (rank + 1) % n;
    const int left = (rank + n - 1) % n;
    const int tags[] = {0, 7, 1 << 20};
    int salt = 400;
    for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{300000}}) {
      ++salt;
      std::vector<std::vector<char>> sends, recvs;
      for (int tag : tags) {
        sends.push_back(Bytes(count * 4, rank, salt + tag));
        recvs.push_back(std::vector<char>(count * 4, 0x33));
      }
      // Everything is posted before anything is waited for; half the ranks post receives first.
      std::vector<std::unique_ptr<Work>> works;
      for (int pass = 0; pass < 2; ++pass) {
        const bool send_pass = (pass == 0) == (rank % 2 == 0);
        for (size_t t = 0; t < 3; ++t) {
          absl::StatusOr<std::unique_ptr<Work>> w =
              send_pass ? comm.Send(Buf(sends[t], count, DType::kF32), right, tags[t], Options())
                        : comm.Recv(Buf(recvs[t], count, DType::kF32), left, tags[t], Options());
          ASSERT_THAT(w, IsOk());
          works.push_back(*std::move(w));
        }
      }
      for (auto it = works.rbegin(); it != works.rend(); ++it) {
        EXPECT_THAT((*it)->Wait(), IsOk()) << "rank " << rank << " count " << count;
        EXPECT_TRUE((*it)->IsCompleted());
      }
      for (size_t t = 0; t < 3; ++t) {
        EXPECT_TRUE(recvs[t] == Bytes(count * 4, left, salt + tags[t]))
            << "rank " << rank << " from " << left << " tag " << tags[t] << " count " << count;
      }
    }
  });
}

TEST_P(CommConformanceTest, SendRecvAllPairs) {
  const int n = size();
  if (n == 1) GTEST_SKIP() << "point to point needs two ranks";
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    // Same tag to every peer: matching is per (src, dst, tag); two messages in order per pair.
    std::vector<std::vector<char>> out(2 * n), in(2 * n);
    std::vector<std::unique_ptr<Work>> works;
    for (int peer = 0; peer < n; ++peer) {
      if (peer == rank) continue;
      for (int k = 0; k < 2; ++k) {
        out[2 * peer + k] = Bytes(4096, rank, 1000 * peer + k);
        in[2 * peer + k] = std::vector<char>(4096);
        auto s = comm.Send(Buf(out[2 * peer + k], 1024, DType::kF32), peer, 5, Options());
        auto r = comm.Recv(Buf(in[2 * peer + k], 1024, DType::kF32), peer, 5, Options());
        ASSERT_THAT(s, IsOk());
        ASSERT_THAT(r, IsOk());
        works.push_back(*std::move(s));
        works.push_back(*std::move(r));
      }
    }
    for (auto& w : works) EXPECT_THAT(w->Wait(), IsOk());
    for (int peer = 0; peer < n; ++peer) {
      if (peer == rank) continue;
      for (int k = 0; k < 2; ++k) {
        EXPECT_TRUE(in[2 * peer + k] == Bytes(4096, peer, 1000 * rank + k))
            << "rank " << rank << " message " << k << " from " << peer;
      }
    }
  });
}

TEST_P(CommConformanceTest, ManyOperationsInFlight) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    constexpr int kOpsInFlight = 16;
    std::vector<std::vector<char>> bufs;
    std::vector<std::vector<char>> gathered(kOpsInFlight);
    std::vector<std::unique_ptr<Work>> works;
    for (int k = 0; k < kOpsInFlight; ++k) {
      bufs.push_back(Filled(DType::kF32, 1000, rank, 500 + k));
      absl::StatusOr<std::unique_ptr<Work>> w;
      if (k % 4 == 3) {
        gathered[k] = std::vector<char>(n * 1000 * 4);
        w = comm.AllGather(Buf(bufs[k], 1000, DType::kF32), Buf(gathered[k], n * 1000, DType::kF32),
                           Options());
      } else {
        w = comm.AllReduce(Buf(bufs[k], 1000, DType::kF32), ReduceOp::kSum, Options());
      }
      ASSERT_THAT(w, IsOk());
      works.push_back(*std::move(w));
    }
    for (int k = kOpsInFlight - 1; k >= 0; --k) {
      ASSERT_THAT(works[k]->Wait(), IsOk()) << "op " << k;
    }
    for (int k = 0; k < kOpsInFlight; ++k) {
      if (k % 4 == 3) {
        for (int q = 0; q < n; ++q) {
          const std::vector<char> want = Filled(DType::kF32, 1000, q, 500 + k);
          EXPECT_TRUE(std::equal(want.begin(), want.end(), gathered[k].begin() + q * 4000))
              << "op " << k;
        }
      } else {
        ExpectReduced(bufs[k], DType::kF32, ReduceOp::kSum, n, 1000, 0, 500 + k,
                      absl::StrCat("op ", k, " rank ", rank));
      }
    }
  });
}

TEST_P(CommConformanceTest, ZeroCountOperationsStayInOrder) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    std::vector<char> a = Filled(DType::kF32, 4, rank, 600);
    std::vector<char> b = Filled(DType::kBF16, 5, rank, 601);
    std::vector<char> empty;
    std::vector<std::unique_ptr<Work>> works;
    auto push = [&](absl::StatusOr<std::unique_ptr<Work>> w) {
      ASSERT_THAT(w, IsOk());
      works.push_back(*std::move(w));
    };
    push(comm.AllReduce(Buf(empty, 0, DType::kF32), ReduceOp::kSum, Options()));
    push(comm.AllReduce(Buf(a, 4, DType::kF32), ReduceOp::kSum, Options()));
    push(comm.Broadcast(Buf(empty, 0, DType::kF16), 0, Options()));
    push(comm.AllGather(Buf(empty, 0, DType::kF32), Buf(empty, 0, DType::kF32), Options()));
    push(comm.ReduceScatter(Buf(empty, 0, DType::kBF16), Buf(empty, 0, DType::kBF16),
                            ReduceOp::kAvg, Options()));
    push(comm.Barrier(Options()));
    push(comm.AllReduce(Buf(b, 5, DType::kBF16), ReduceOp::kMax, Options()));
    for (auto& w : works) EXPECT_THAT(w->Wait(), IsOk());
    ExpectReduced(a, DType::kF32, ReduceOp::kSum, n, 4, 0, 600, "f32 after zero-count ops");
    ExpectReduced(b, DType::kBF16, ReduceOp::kMax, n, 5, 0, 601, "bf16 after zero-count ops");
  });
}

TEST_P(CommConformanceTest, Split) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    std::vector<int> evens, odds, all;
    for (int r = 0; r < n; ++r) {
      (r % 2 == 0 ? evens : odds).push_back(r);
      all.push_back(r);
    }
    absl::StatusOr<std::unique_ptr<Communicator>> even = comm.Split(evens, "even", Options());
    ASSERT_THAT(even, IsOk());
    std::unique_ptr<Communicator> odd;
    if (!odds.empty()) {
      absl::StatusOr<std::unique_ptr<Communicator>> o = comm.Split(odds, "odd", Options());
      ASSERT_THAT(o, IsOk());
      odd = *std::move(o);
    }
    absl::StatusOr<std::unique_ptr<Communicator>> copy = comm.Split(all, "copy", Options());
    ASSERT_THAT(copy, IsOk());
    ASSERT_NE(*copy, nullptr);
    EXPECT_EQ((*copy)->rank(), rank);
    EXPECT_EQ((*copy)->name(), "copy");

    Communicator* mine = rank % 2 == 0 ? even->get() : odd.get();
    Communicator* other = rank % 2 == 0 ? odd.get() : even->get();
    ASSERT_NE(mine, nullptr);
    EXPECT_EQ(other, nullptr);
    const std::vector<int>& group = rank % 2 == 0 ? evens : odds;
    EXPECT_EQ(mine->size(), static_cast<int>(group.size()));
    EXPECT_EQ(mine->rank(), rank / 2);
    EXPECT_EQ(mine->name(), rank % 2 == 0 ? "even" : "odd");

    // Sub-group, copy and parent collectives interleaved, all in flight at once.
    float sub = static_cast<float>(rank + 1);
    float parent = static_cast<float>(rank + 1);
    float dup = 10.0f * (rank + 1);
    auto w1 = mine->AllReduce(CommBuffer{&sub, 1, DType::kF32}, ReduceOp::kSum, Options());
    auto w2 = comm.AllReduce(CommBuffer{&parent, 1, DType::kF32}, ReduceOp::kSum, Options());
    auto w3 = (*copy)->AllReduce(CommBuffer{&dup, 1, DType::kF32}, ReduceOp::kMax, Options());
    ASSERT_THAT(w1, IsOk());
    ASSERT_THAT(w2, IsOk());
    ASSERT_THAT(w3, IsOk());
    EXPECT_THAT((*w3)->Wait(), IsOk());
    EXPECT_THAT((*w1)->Wait(), IsOk());
    EXPECT_THAT((*w2)->Wait(), IsOk());
    float want_sub = 0;
    for (int r : group) want_sub += r + 1;
    EXPECT_EQ(sub, want_sub) << "rank " << rank;
    EXPECT_EQ(parent, n * (n + 1) / 2.0f);
    EXPECT_EQ(dup, 10.0f * n);

    // Nested: the first rank of each sub-group alone.
    absl::StatusOr<std::unique_ptr<Communicator>> first = mine->Split({0}, "first", Options());
    ASSERT_THAT(first, IsOk());
    EXPECT_EQ(*first != nullptr, mine->rank() == 0);
    if (*first != nullptr) {
      EXPECT_EQ((*first)->size(), 1);
      float x = 3.5f;
      EXPECT_THAT(
          RunOp((*first)->AllReduce(CommBuffer{&x, 1, DType::kF32}, ReduceOp::kAvg, Options())),
          IsOk());
      EXPECT_EQ(x, 3.5f);
    }
  });
}

TEST_P(CommConformanceTest, InvalidArgumentsFailAtOnceAndDoNotDesync) {
  const int n = size();
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    const auto invalid = [&](absl::string_view op) {
      return StatusIs(absl::StatusCode::kInvalidArgument,
                      ::testing::AllOf(HasSubstr(op), HasSubstr(comm.name())));
    };
    std::vector<char> buf(4096);
    EXPECT_THAT(comm.AllReduce(Buf(buf, 4, DType::kI32), ReduceOp::kSum, Options()),
                invalid("AllReduce"));
    EXPECT_THAT(comm.AllReduce(CommBuffer{nullptr, 3, DType::kF32}, ReduceOp::kSum, Options()),
                invalid("AllReduce"));
    EXPECT_THAT(comm.AllReduce(Buf(buf, -1, DType::kF32), ReduceOp::kSum, Options()),
                invalid("AllReduce"));
    EXPECT_THAT(comm.ReduceScatter(Buf(buf, n * 2 + 1, DType::kF32), Buf(buf, 2, DType::kF32),
                                   ReduceOp::kSum, Options()),
                invalid("ReduceScatter"));
    EXPECT_THAT(comm.AllGather(Buf(buf, 2, DType::kF32), Buf(buf, n * 2, DType::kF16), Options()),
                invalid("AllGather"));
    EXPECT_THAT(comm.Broadcast(Buf(buf, 2, DType::kF32), n, Options()), invalid("Broadcast"));
    EXPECT_THAT(comm.Broadcast(Buf(buf, 2, DType::kF32), -1, Options()), invalid("Broadcast"));
    EXPECT_THAT(comm.Send(Buf(buf, 2, DType::kF32), rank, 0, Options()), invalid("Send"));
    EXPECT_THAT(comm.Recv(Buf(buf, 2, DType::kF32), n, 0, Options()), invalid("Recv"));
    EXPECT_THAT(comm.Barrier(Options(absl::ZeroDuration())), invalid("Barrier"));
    CommBuffer gpu = Buf(buf, 2, DType::kF32);
    gpu.device.type = DeviceType::kCuda;
    EXPECT_THAT(comm.AllReduce(gpu, ReduceOp::kSum, Options()), invalid("AllReduce"));
    EXPECT_THAT(comm.Split({}, "x", Options()), StatusIs(absl::StatusCode::kInvalidArgument, _));
    EXPECT_THAT(comm.Split({n}, "x", Options()), StatusIs(absl::StatusCode::kInvalidArgument, _));
    EXPECT_THAT(comm.AsyncError(), IsOk());

    // Nothing was issued: the next collective still lines up on every rank.
    std::vector<char> a = Filled(DType::kF32, 10, rank, 700);
    ASSERT_THAT(RunOp(comm.AllReduce(Buf(a, 10, DType::kF32), ReduceOp::kSum, Options())), IsOk());
    ExpectReduced(a, DType::kF32, ReduceOp::kSum, n, 10, 0, 700, "after invalid calls");
  });
}

TEST_P(CommConformanceTest, AbortFailsPendingAndLaterOperations) {
  const int n = size();
  if (n == 1) GTEST_SKIP() << "needs a peer that does not arrive";
  absl::Notification aborted;
  const absl::Duration timeout = absl::Seconds(2);
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    std::vector<char> buf = Filled(DType::kF32, 1000, rank, 800);
    if (rank == 0) {
      absl::StatusOr<std::unique_ptr<Work>> w =
          comm.AllReduce(Buf(buf, 1000, DType::kF32), ReduceOp::kSum, Options(absl::Seconds(60)));
      ASSERT_THAT(w, IsOk());
      absl::SleepFor(absl::Milliseconds(20));
      EXPECT_FALSE((*w)->IsCompleted());
      const absl::Time start = absl::Now();
      comm.Abort(absl::CancelledError("test abort"));
      EXPECT_THAT((*w)->Wait(absl::Seconds(10)),
                  StatusIs(absl::StatusCode::kAborted, HasSubstr("test abort")));
      EXPECT_LT(absl::Now() - start, absl::Seconds(5));
      EXPECT_THAT(comm.AllReduce(Buf(buf, 10, DType::kF32), ReduceOp::kSum, Options()),
                  StatusIs(absl::StatusCode::kAborted, HasSubstr("test abort")));
      EXPECT_THAT(comm.Barrier(Options()), StatusIs(absl::StatusCode::kAborted, _));
      EXPECT_THAT(comm.AsyncError(), StatusIs(absl::StatusCode::kAborted, HasSubstr("test abort")));
      aborted.Notify();
    } else {
      aborted.WaitForNotification();
      // The peers' collective cannot complete: it must fail within its timeout.
      const absl::Time start = absl::Now();
      const absl::Status s =
          RunOp(comm.AllReduce(Buf(buf, 1000, DType::kF32), ReduceOp::kSum, Options(timeout)));
      EXPECT_FALSE(s.ok()) << "rank " << rank;
      EXPECT_LT(absl::Now() - start, timeout + backend().failure_slack) << s;
      EXPECT_FALSE(comm.AsyncError().ok());
    }
  });
}

TEST_P(CommConformanceTest, MissingRankFailsOthersWithinTimeoutNamingIt) {
  const int n = size();
  if (n == 1) GTEST_SKIP() << "needs a peer that does not arrive";
  const int missing = n - 1;
  const absl::Duration timeout = absl::Seconds(1);
  absl::BlockingCounter others_done(n - 1);
  RunRanks(backend(), n, [&](int rank, Communicator& comm) {
    std::vector<char> buf = Filled(DType::kF32, 1000, rank, 900);
    // One good collective first, so the failure is not about connecting.
    ASSERT_THAT(RunOp(comm.AllReduce(Buf(buf, 10, DType::kF32), ReduceOp::kSum, Options())),
                IsOk());
    if (rank != missing) {
      const absl::Time start = absl::Now();
      const absl::Status s =
          RunOp(comm.AllReduce(Buf(buf, 1000, DType::kF32), ReduceOp::kSum, Options(timeout)));
      const absl::Duration elapsed = absl::Now() - start;
      EXPECT_THAT(s.code(), AnyOf(absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kAborted))
          << s;
      EXPECT_THAT(std::string(s.message()),
                  ::testing::AllOf(
                      HasSubstr("AllReduce"), HasSubstr(absl::StrCat("'", comm.name(), "'")),
                      ContainsRegex(absl::StrCat("\\[([0-9]+, )*", missing, "(, [0-9]+)*\\]"))))
          << "rank " << rank;
      EXPECT_LT(elapsed, timeout + backend().failure_slack) << s;
      EXPECT_FALSE(comm.AsyncError().ok());
      others_done.DecrementCount();
    } else {
      others_done.Wait();
      // Arriving after the others gave up: fails too, promptly.
      const absl::Time start = absl::Now();
      const absl::Status s =
          RunOp(comm.AllReduce(Buf(buf, 1000, DType::kF32), ReduceOp::kSum, Options(timeout)));
      EXPECT_FALSE(s.ok());
      EXPECT_LT(absl::Now() - start, timeout + backend().failure_slack) << s;
    }
  });
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CommConformanceTest);

}  // namespace dstrain::comm::testing
