// IoQueue: the kernel's asynchronous I/O queue as the swap engine sees it — requests in,
// completions out — so that a test can put a fault-injecting queue in its place
// (FaultInjectionQueue) and the engine runs where io_uring is refused (SyncQueue).
//
//   auto q = NewUringQueue(8);          // or NewSyncQueue(8) without io_uring
//   (*q)->Prepare({fd, /*write=*/false, buf, len, offset, tag});
//   DT_RETURN_IF_ERROR((*q)->Submit());
//   DT_ASSIGN_OR_RETURN(auto done, (*q)->Reap());  // at least one completion
//
// A completion's result is what the system call returned: the bytes moved (possibly fewer than
// asked: a short transfer the caller must finish) or -errno. Buffers and offsets follow the
// file's rules (O_DIRECT: aligned to the logical block size; the engine aligns to kIoAlign).
// One thread uses a queue at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace dstrain::offload {

// What every swap buffer, offset and length is aligned to: a page, which satisfies O_DIRECT on
// every block device (their logical blocks are 512 or 4096 bytes).
inline constexpr int64_t kIoAlign = 4096;
inline constexpr int64_t AlignUp(int64_t n) { return (n + kIoAlign - 1) / kIoAlign * kIoAlign; }

struct IoRequest {
  int fd = -1;
  bool write = false;
  void* buf = nullptr;
  uint32_t len = 0;
  int64_t offset = 0;
  uint64_t tag = 0;  // returned in the completion
};

struct IoCompletion {
  uint64_t tag = 0;
  int64_t result = 0;  // bytes moved, or -errno
};

class IoQueue {
 public:
  virtual ~IoQueue() = default;
  // The most requests prepared or in flight at once.
  virtual int depth() const = 0;
  // Queues a request for the next Submit. REQUIRES: fewer than depth() prepared or in flight.
  virtual void Prepare(const IoRequest& request) = 0;
  // Hands the prepared requests to the kernel.
  virtual absl::Status Submit() = 0;
  // Waits for at least one completion of a submitted request and returns every one available.
  virtual absl::StatusOr<std::vector<IoCompletion>> Reap() = 0;
  // "io_uring" or "pread/pwrite".
  virtual const char* name() const = 0;
};

// io_uring through Debian's liburing. kUnavailable when the kernel (or a sandbox) refuses it.
absl::StatusOr<std::unique_ptr<IoQueue>> NewUringQueue(int depth);
// pread/pwrite on the calling thread at Submit: the fallback where io_uring is refused.
std::unique_ptr<IoQueue> NewSyncQueue(int depth);

}  // namespace dstrain::offload
