#include "worker/offload/swap_engine.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/status/status_macros.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/env/test_dir.h"
#include "worker/offload/aligned_buffer.h"
#include "worker/offload/fault_injection_queue.h"
#include "worker/offload/swap_file.h"
#include "worker/tensor/allocator.h"

namespace dstrain::offload {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class SwapEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = env::FreshTestDir(env::PosixEnv::Default());
    auto dir = SwapDir::Prepare(root_, "job", 0, 0);
    ASSERT_THAT(dir.status(), IsOk());
    dir_ = std::move(*dir);
  }

  AlignedBuffer Buffer(int64_t bytes, uint64_t seed) {
    auto b = AlignedBuffer::Allocate(&host_, bytes, tensor::MemoryCategory::kOther);
    EXPECT_THAT(b.status(), IsOk());
    for (int64_t i = 0; i + 8 <= b->size(); i += 8) {
      const uint64_t v = (static_cast<uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
      std::memcpy(b->data() + i, &v, 8);
    }
    return std::move(*b);
  }

  // Writes a pattern through `engine` and reads it back into another buffer.
  void RoundTrip(SwapEngine& engine, int64_t bytes) {
    auto file = SwapFile::Create(dir_->Join("rt.swp"), bytes);
    ASSERT_THAT(file.status(), IsOk());
    AlignedBuffer out = Buffer(bytes, 1), in = Buffer(bytes, 2);
    ASSERT_THAT(engine.Wait(engine.Write((*file)->ref(), 0, out.data(), bytes)), IsOk());
    ASSERT_THAT(engine.Wait(engine.Read((*file)->ref(), 0, in.data(), bytes)), IsOk());
    EXPECT_EQ(std::memcmp(out.data(), in.data(), bytes), 0);
  }

  tensor::CpuAllocator host_;
  std::string root_;
  std::unique_ptr<SwapDir> dir_;
};

SwapEngine::Options Small() {
  SwapEngine::Options o;
  o.block_size = 64 << 10;
  o.queue_depth = 4;
  return o;
}

TEST_F(SwapEngineTest, RoundTripsOverEverySetting) {
  struct Case {
    const char* name;
    bool sync, single_submit, overlap;
    int threads;
    int64_t block;
  };
  for (const Case& c : {Case{"uring", false, false, true, 1, 64 << 10},
                        Case{"uring single_submit", false, true, true, 1, 64 << 10},
                        Case{"uring no overlap_events", false, false, false, 1, 4096},
                        Case{"uring 3 threads", false, false, true, 3, 64 << 10},
                        Case{"pread/pwrite", true, false, true, 2, 1 << 20}}) {
    SCOPED_TRACE(c.name);
    SwapEngine::Options o = Small();
    o.single_submit = c.single_submit;
    o.overlap_events = c.overlap;
    o.threads = c.threads;
    o.block_size = c.block;
    if (c.sync) {
      o.make_queue = [](int depth) -> absl::StatusOr<std::unique_ptr<IoQueue>> {
        return NewSyncQueue(depth);
      };
    }
    auto engine = SwapEngine::Create(o);
    ASSERT_THAT(engine.status(), IsOk());
    EXPECT_STREQ((*engine)->backend(), c.sync ? "pread/pwrite" : "io_uring");
    const int64_t bytes = (5 << 20) + 3 * 4096;
    RoundTrip(**engine, bytes);
    EXPECT_EQ((*engine)->bytes_written(), bytes);
    EXPECT_EQ((*engine)->bytes_read(), bytes);
  }
}

TEST_F(SwapEngineTest, ManyTransfersInFlightTogether) {
  auto engine = SwapEngine::Create(Small());
  ASSERT_THAT(engine.status(), IsOk());
  const int64_t piece = 256 << 10;
  const int n = 12;
  auto file = SwapFile::Create(dir_->Join("many.swp"), piece * n);
  ASSERT_THAT(file.status(), IsOk());
  std::vector<AlignedBuffer> out, in;
  std::vector<SwapEngine::Ticket> tickets;
  for (int i = 0; i < n; ++i) {
    out.push_back(Buffer(piece, 100 + i));
    tickets.push_back((*engine)->Write((*file)->ref(), i * piece, out.back().data(), piece));
  }
  for (auto& t : tickets) ASSERT_THAT((*engine)->Wait(t), IsOk());
  tickets.clear();
  for (int i = n - 1; i >= 0; --i) {
    in.push_back(Buffer(piece, 0));
    tickets.push_back((*engine)->Read((*file)->ref(), i * piece, in.back().data(), piece));
  }
  for (auto& t : tickets) ASSERT_THAT((*engine)->Wait(t), IsOk());
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(std::memcmp(out[i].data(), in[n - 1 - i].data(), piece), 0) << i;
  }
}

SwapEngine::Options Faulty(std::shared_ptr<FaultPlan> plan) {
  SwapEngine::Options o = Small();
  o.make_queue = [plan](int depth) -> absl::StatusOr<std::unique_ptr<IoQueue>> {
    DT_ASSIGN_OR_RETURN(auto base, NewUringQueue(depth));
    return std::unique_ptr<IoQueue>(new FaultInjectionQueue(std::move(base), plan));
  };
  return o;
}

TEST_F(SwapEngineTest, ShortTransfersAreFinished) {
  auto plan = std::make_shared<FaultPlan>();
  plan->Add({IoFault::Kind::kShort, /*write=*/true, 0, 0, /*times=*/5});
  plan->Add({IoFault::Kind::kShort, /*write=*/false, 0, 0, /*times=*/5});
  auto engine = SwapEngine::Create(Faulty(plan));
  ASSERT_THAT(engine.status(), IsOk());
  RoundTrip(**engine, 2 << 20);
  EXPECT_EQ(plan->injected(), 10);
  EXPECT_EQ((*engine)->bytes_read(), 2 << 20);
}

TEST_F(SwapEngineTest, ErrorsNameTheFileTheDirectionAndTheOffset) {
  auto plan = std::make_shared<FaultPlan>();
  plan->Add({IoFault::Kind::kError, /*write=*/false, /*min_offset=*/1 << 20, EIO, 1});
  plan->Add({IoFault::Kind::kError, /*write=*/true, /*min_offset=*/512 << 10, ENOSPC, 1});
  auto engine = SwapEngine::Create(Faulty(plan));
  ASSERT_THAT(engine.status(), IsOk());
  const int64_t bytes = 2 << 20;
  auto file = SwapFile::Create(dir_->Join("bad.swp"), bytes);
  ASSERT_THAT(file.status(), IsOk());
  AlignedBuffer buf = Buffer(bytes, 3);
  EXPECT_THAT((*engine)->Wait((*engine)->Write((*file)->ref(), 0, buf.data(), bytes)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("bad.swp: write at offset 524288"),
                             HasSubstr(std::strerror(ENOSPC)))));
  EXPECT_THAT(
      (*engine)->Wait((*engine)->Read((*file)->ref(), 0, buf.data(), bytes)),
      StatusIs(absl::StatusCode::kInternal,
               AllOf(HasSubstr("bad.swp: read at offset 1048576"), HasSubstr(std::strerror(EIO)))));
  // The faults are spent: the engine goes on working.
  RoundTrip(**engine, bytes);
}

TEST_F(SwapEngineTest, ReadingPastTheEndIsDataLoss) {
  auto engine = SwapEngine::Create(Small());
  ASSERT_THAT(engine.status(), IsOk());
  auto file = SwapFile::Create(dir_->Join("short.swp"), 4096);
  ASSERT_THAT(file.status(), IsOk());
  AlignedBuffer buf = Buffer(8192, 0);
  EXPECT_THAT((*engine)->Wait((*engine)->Read((*file)->ref(), 0, buf.data(), 8192)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("read at offset 4096: end of file")));
}

TEST_F(SwapEngineTest, RefusesUnalignedTransfersAndBadOptions) {
  auto engine = SwapEngine::Create(Small());
  ASSERT_THAT(engine.status(), IsOk());
  auto file = SwapFile::Create(dir_->Join("a.swp"), 8192);
  ASSERT_THAT(file.status(), IsOk());
  AlignedBuffer buf = Buffer(8192, 0);
  EXPECT_THAT((*engine)->Wait((*engine)->Read((*file)->ref(), 100, buf.data(), 4096)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not aligned")));
  EXPECT_THAT((*engine)->Wait((*engine)->Write((*file)->ref(), 0, buf.data() + 8, 4096)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not aligned")));
  SwapEngine::Options o = Small();
  o.block_size = 1000;
  EXPECT_THAT(SwapEngine::Create(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("aio.block_size")));
  o = Small();
  o.queue_depth = 0;
  EXPECT_THAT(SwapEngine::Create(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("aio.queue_depth")));
}

TEST_F(SwapEngineTest, UnwrittenBlocksReadAsZeros) {
  auto engine = SwapEngine::Create(Small());
  ASSERT_THAT(engine.status(), IsOk());
  auto file = SwapFile::Create(dir_->Join("z.swp"), 1 << 20);
  ASSERT_THAT(file.status(), IsOk());
  AlignedBuffer buf = Buffer(1 << 20, 5);
  ASSERT_THAT((*engine)->Wait((*engine)->Read((*file)->ref(), 0, buf.data(), 1 << 20)), IsOk());
  for (int64_t i = 0; i < (1 << 20); ++i) ASSERT_EQ(buf.data()[i], 0) << i;
}

TEST_F(SwapEngineTest, MeasuresBandwidth) {
  auto engine = SwapEngine::Create(Small());
  ASSERT_THAT(engine.status(), IsOk());
  auto bw = MeasureBandwidth(**engine, *dir_, 4 << 20, &host_);
  ASSERT_THAT(bw.status(), IsOk());
  EXPECT_EQ(bw->bytes, 4 << 20);
  EXPECT_GT(bw->write_mb_s, 0);
  EXPECT_GT(bw->read_mb_s, 0);
}

class SwapDirTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = env::FreshTestDir(env::PosixEnv::Default()); }
  std::string root_;
};

TEST_F(SwapDirTest, ChecksThePathBeforeWritingAnything) {
  EXPECT_THAT(SwapDir::Prepare(root_ + "/missing", "j", 0, 0).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(root_ + "/missing")));
  ASSERT_THAT(env::PosixEnv::Default()->WriteStringToFile(root_ + "/file", "x", false), IsOk());
  EXPECT_THAT(SwapDir::Prepare(root_ + "/file", "j", 0, 0).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a directory")));
  // Space: the bytes needed and the bytes free, both named.
  EXPECT_THAT(SwapDir::Prepare(root_, "j", 0, int64_t{1} << 60).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr(root_), HasSubstr("bytes free"),
                             HasSubstr("needs 1152921504606846976 bytes"))));
  // A file system without O_DIRECT (tmpfs before Linux 6.6): open(2) says EINVAL.
  SwapDir::Options no_direct;
  no_direct.open_file = [](const char* p, int flags, mode_t mode) {
    if (flags & O_DIRECT) {
      errno = EINVAL;
      return -1;
    }
    return ::open(p, flags, mode);
  };
  EXPECT_THAT(SwapDir::Prepare(root_, "j", 0, 0, no_direct).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(root_), HasSubstr("O_DIRECT"))));
}

TEST_F(SwapDirTest, NotWritableIsRefused) {
  ASSERT_EQ(::mkdir((root_ + "/ro").c_str(), 0500), 0);
  SwapDir::Options options;
  if (::geteuid() == 0) {
    // Root writes into any directory: play the access(2) a user would get.
    options.access_path = [](const char*, int) {
      errno = EACCES;
      return -1;
    };
  }
  EXPECT_THAT(SwapDir::Prepare(root_ + "/ro", "j", 0, 0, options).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("not writable"), HasSubstr(root_ + "/ro"))));
}

TEST_F(SwapDirTest, MemoryFileSystemsAreRefused) {
  for (const int64_t magic : {int64_t{TMPFS_MAGIC}, int64_t{RAMFS_MAGIC}}) {
    SwapDir::Options options;
    options.fs_type = [magic](const char*) { return magic; };
    EXPECT_THAT(SwapDir::Prepare(root_, "j", 0, 0, options).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         AllOf(HasSubstr(root_), HasSubstr("which is memory"))));
  }
  // The real thing where the machine has one.
  struct statfs fs;
  if (::statfs("/dev/shm", &fs) == 0 && fs.f_type == TMPFS_MAGIC) {
    EXPECT_THAT(SwapDir::Prepare("/dev/shm", "j", 0, 0).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("/dev/shm")));
  }
}

TEST_F(SwapDirTest, OneLiveRunPerJobAndRankAndNothingLeftBehind) {
  {
    auto a = SwapDir::Prepare(root_, "job/7", 1, 0);
    ASSERT_THAT(a.status(), IsOk());
    EXPECT_EQ((*a)->path(), root_ + "/dstrain-job_7/rank1");
    EXPECT_THAT(SwapDir::Prepare(root_, "job/7", 1, 0).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("another live run")));
    auto other_rank = SwapDir::Prepare(root_, "job/7", 0, 0);
    EXPECT_THAT(other_rank.status(), IsOk());
    auto file = SwapFile::Create((*a)->Join("x.swp"), 1 << 20);
    ASSERT_THAT(file.status(), IsOk());
  }
  auto children = env::PosixEnv::Default()->GetChildren(root_);
  ASSERT_THAT(children.status(), IsOk());
  EXPECT_TRUE(children->empty()) << children->front();
}

TEST_F(SwapDirTest, RemovesWhatAKilledRunLeft) {
  ASSERT_THAT(env::PosixEnv::Default()->CreateDirs(root_ + "/dstrain-j/rank0"), IsOk());
  ASSERT_THAT(
      env::PosixEnv::Default()->WriteStringToFile(root_ + "/dstrain-j/rank0/old.swp", "x", false),
      IsOk());
  auto dir = SwapDir::Prepare(root_, "j", 0, 0);
  ASSERT_THAT(dir.status(), IsOk());
  EXPECT_FALSE(env::PosixEnv::Default()->FileExists(root_ + "/dstrain-j/rank0/old.swp"));
}

}  // namespace
}  // namespace dstrain::offload
