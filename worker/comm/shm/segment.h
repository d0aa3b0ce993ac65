// Segment: the POSIX shared-memory region one ShmCommunicator group moves its data through, and
// its layout. shm_communicator.h states the protocol; this header says where everything lives.
//
// Layout (offsets from the start of the mapping; every part starts on a 4 KiB page, every flag
// has a 64-byte cache line of its own, so a rank spinning on a peer's flag never shares a line
// with a flag someone else writes):
//
//   Header                       magic, size, the sizes below, the group's failure record
//   rank lines [size][kRankFlags] arrive / reduced / done step counters, and the rank's pid
//   channel lines [size][size][2] point to point: head (bytes written, by the sender) and tail
//                                (bytes read, by the receiver) of the ring src -> dst
//   slots [size][2][chunk_bytes]  each rank's input staging, two buffers so steps pipeline
//   out [2][chunk_bytes]          AllReduce's reduced chunk, each rank writing its own share
//   rings [size][size-1][ring]    point-to-point byte streams, one per ordered pair
//
// Lifetime: made by MapGroupFile (shared_file.h): rank 0 creates and sizes the file, everyone maps
// it, and once all have mapped it every rank unlinks it, so a job killed with SIGKILL leaves
// nothing in /dev/shm.
//
// Thread-safety: the mapping is shared by design; who writes what is the protocol's business.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/store/store.h"

namespace dstrain::comm::shm_internal {

inline constexpr size_t kLine = 64;

// A counter on a cache line of its own, written by one rank, read by the others. `value` only
// grows; `waiters` counts the threads asleep in futex(2) on the low 32 bits of `value`.
struct alignas(kLine) Flag {
  std::atomic<uint64_t> value;
  std::atomic<uint32_t> waiters;
};
static_assert(sizeof(Flag) == kLine);

// The per-rank flags of the collective protocol (steps.h).
enum RankFlag : int { kArrive = 0, kReduced = 1, kDone = 2, kPid = 3, kRankFlags = 4 };

struct SegmentOptions {
  // Bytes of one staging buffer (per rank, per pipeline stage); a multiple of 4096.
  int64_t chunk_bytes = 4 << 20;
  // Bytes of one point-to-point ring (per ordered pair of ranks); a multiple of 4096.
  int64_t ring_bytes = 1 << 20;
};

// The sizes used for a group of `size` ranks: `requested` capped so that the segment stays within
// a few tens of MiB however many ranks share the host.
SegmentOptions SizeFor(int size, const SegmentOptions& requested);

class Segment {
 public:
  // Rendezvous of `size` ranks under `prefix` in `store`, as described above. Errors:
  // kDeadlineExceeded naming the ranks that did not map the segment within `timeout`;
  // kResourceExhausted (on every rank) when rank 0 could not create it (/dev/shm full or
  // missing); kUnavailable for the store's errors.
  static absl::StatusOr<std::unique_ptr<Segment>> Join(store::Store* store,
                                                       const std::string& prefix, int rank,
                                                       int size, const std::string& who,
                                                       const SegmentOptions& options,
                                                       absl::Duration timeout);
  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  int size() const { return size_; }
  int64_t chunk_bytes() const { return chunk_bytes_; }
  int64_t ring_bytes() const { return ring_bytes_; }
  const std::string& file_name() const { return file_name_; }

  Flag& rank_flag(int rank, RankFlag which) const;
  // Point to point from `src` to `dst`: the sender's and the receiver's counters, and the ring.
  Flag& head(int src, int dst) const;
  Flag& tail(int src, int dst) const;
  char* ring(int src, int dst) const;
  char* slot(int rank, int buffer) const;
  char* out(int buffer) const;
  // The pid `rank` mapped the segment from (0 until it did).
  int64_t pid(int rank) const {
    return rank_flag(rank, kPid).value.load(std::memory_order_acquire);
  }

  // Records that the group failed because of `rank` (`reason`); only the first record counts.
  void Fail(int rank, absl::string_view reason);
  // "<reason>" of the first record, once there is one.
  std::optional<std::string> Failure() const;
  bool Failed() const;

 private:
  struct Header;
  Segment(char* base, size_t bytes, int size, const SegmentOptions& options, std::string name);
  Header& header() const;

  char* const base_;
  const size_t bytes_;
  const int size_;
  const int64_t chunk_bytes_;
  const int64_t ring_bytes_;
  const std::string file_name_;
  size_t rank_flags_ = 0, channel_flags_ = 0, slots_ = 0, out_ = 0, rings_ = 0;
};

}  // namespace dstrain::comm::shm_internal
