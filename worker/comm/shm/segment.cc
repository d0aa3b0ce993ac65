#include "worker/comm/shm/segment.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "worker/comm/shm/shared_file.h"
#include "worker/store/prefix_store.h"

namespace dstrain::comm::shm_internal {

namespace {

constexpr uint64_t kMagic = 0x64737472'73686d31;  // "dstrshm1"
constexpr size_t kPage = 4096;

// Failure record states (Header::failed).
constexpr uint32_t kNoFailure = 0;
constexpr uint32_t kWriting = 1;  // a rank claimed the record and is writing its reason
constexpr uint32_t kRecorded = 2;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

int64_t RoundDownToPage(int64_t n) { return std::max<int64_t>(kPage, n / kPage * kPage); }

struct Offsets {
  size_t rank_flags, channel_flags, slots, out, rings, total;
};

Offsets Layout(int size, int64_t chunk, int64_t ring) {
  Offsets o;
  o.rank_flags = kPage;  // the header fits in the first page
  o.channel_flags = RoundUp(o.rank_flags + size * kRankFlags * kLine, kPage);
  o.slots = RoundUp(o.channel_flags + size * size * 2 * kLine, kPage);
  o.out = o.slots + static_cast<size_t>(size) * 2 * chunk;
  o.rings = o.out + 2 * static_cast<size_t>(chunk);
  o.total = o.rings + static_cast<size_t>(size) * std::max(size - 1, 0) * ring;
  return o;
}

}  // namespace

struct Segment::Header {
  uint64_t magic;
  int64_t size;
  int64_t chunk_bytes;
  int64_t ring_bytes;
  int64_t total_bytes;
  alignas(kLine) std::atomic<uint32_t> failed;
  char reason[2048];
};

SegmentOptions SizeFor(int size, const SegmentOptions& requested) {
  // Collective staging: 2 buffers per rank plus 2 output buffers, within 32 MiB; point to point:
  // size * (size - 1) rings within 16 MiB. Two ranks get the full 4 MiB chunks.
  SegmentOptions o;
  o.chunk_bytes =
      RoundDownToPage(std::min<int64_t>(requested.chunk_bytes, (32 << 20) / (2 * size + 2)));
  const int64_t pairs = std::max(1, size * (size - 1));
  o.ring_bytes = RoundDownToPage(std::min<int64_t>(requested.ring_bytes, (16 << 20) / pairs));
  return o;
}

Segment::Segment(char* base, size_t bytes, int size, const SegmentOptions& options,
                 std::string name)
    : base_(base),
      bytes_(bytes),
      size_(size),
      chunk_bytes_(options.chunk_bytes),
      ring_bytes_(options.ring_bytes),
      file_name_(std::move(name)) {
  const Offsets o = Layout(size, chunk_bytes_, ring_bytes_);
  rank_flags_ = o.rank_flags;
  channel_flags_ = o.channel_flags;
  slots_ = o.slots;
  out_ = o.out;
  rings_ = o.rings;
}

Segment::~Segment() { munmap(base_, bytes_); }

Segment::Header& Segment::header() const {
  static_assert(sizeof(Header) <= kPage);
  return *reinterpret_cast<Header*>(base_);
}

Flag& Segment::rank_flag(int rank, RankFlag which) const {
  return reinterpret_cast<Flag*>(base_ + rank_flags_)[rank * kRankFlags + which];
}

Flag& Segment::head(int src, int dst) const {
  return reinterpret_cast<Flag*>(base_ + channel_flags_)[(src * size_ + dst) * 2];
}

Flag& Segment::tail(int src, int dst) const {
  return reinterpret_cast<Flag*>(base_ + channel_flags_)[(src * size_ + dst) * 2 + 1];
}

char* Segment::ring(int src, int dst) const {
  const int index = src * (size_ - 1) + (dst < src ? dst : dst - 1);
  return base_ + rings_ + static_cast<size_t>(index) * ring_bytes_;
}

char* Segment::slot(int rank, int buffer) const {
  return base_ + slots_ + (static_cast<size_t>(rank) * 2 + buffer) * chunk_bytes_;
}

char* Segment::out(int buffer) const {
  return base_ + out_ + static_cast<size_t>(buffer) * chunk_bytes_;
}

void Segment::Fail(int rank, absl::string_view reason) {
  Header& h = header();
  uint32_t expected = kNoFailure;
  if (!h.failed.compare_exchange_strong(expected, kWriting, std::memory_order_acq_rel)) return;
  const std::string text = absl::StrCat("rank ", rank, " failed first: ", reason);
  const size_t n = std::min(text.size(), sizeof(h.reason) - 1);
  std::memcpy(h.reason, text.data(), n);
  h.reason[n] = '\0';
  h.failed.store(kRecorded, std::memory_order_release);
}

bool Segment::Failed() const {
  return header().failed.load(std::memory_order_acquire) != kNoFailure;
}

std::optional<std::string> Segment::Failure() const {
  const Header& h = header();
  uint32_t state = h.failed.load(std::memory_order_acquire);
  if (state == kNoFailure) return std::nullopt;
  // The writer copies at most 2 KiB; give it a moment (it may also have died in between).
  const absl::Time until = absl::Now() + absl::Milliseconds(50);
  while (state == kWriting && absl::Now() < until) {
    std::this_thread::yield();
    state = h.failed.load(std::memory_order_acquire);
  }
  if (state != kRecorded) return std::string("a rank failed (its reason was not recorded)");
  return std::string(h.reason);
}

absl::StatusOr<std::unique_ptr<Segment>> Segment::Join(store::Store* store,
                                                       const std::string& prefix, int rank,
                                                       int size, const std::string& who,
                                                       const SegmentOptions& requested,
                                                       absl::Duration timeout) {
  store::PrefixStore scope(prefix, store);
  const SegmentOptions options = SizeFor(size, requested);
  const Offsets layout = Layout(size, options.chunk_bytes, options.ring_bytes);
  auto init = [&](char* base) {
    Header& h = *reinterpret_cast<Header*>(base);
    h.magic = kMagic;
    h.size = size;
    h.chunk_bytes = options.chunk_bytes;
    h.ring_bytes = options.ring_bytes;
    h.total_bytes = static_cast<int64_t>(layout.total);
  };
  DT_ASSIGN_OR_RETURN(const SharedMapping m,
                      MapGroupFile(scope, "segment", rank, size, who, layout.total, timeout, init));
  std::unique_ptr<Segment> segment(new Segment(m.base, m.bytes, size, options, m.name));
  const Header& h = segment->header();
  if (h.magic != kMagic || h.size != size || h.chunk_bytes != options.chunk_bytes ||
      h.ring_bytes != options.ring_bytes) {
    return absl::InternalError(
        absl::StrCat(who, ": segment ", m.name, " does not match this group (size ", size, ")"));
  }
  segment->rank_flag(rank, kPid).value.store(getpid(), std::memory_order_release);
  return segment;
}

}  // namespace dstrain::comm::shm_internal
