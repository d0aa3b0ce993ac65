// A shared-memory file every rank of a group maps: the segment (segment.h) and the shared host
// buffers (windows.h) are both made this way.
//
// Rank 0 creates the file under a fresh random name (shm_open, O_EXCL, mode 0600), reserves its
// bytes with posix_fallocate (a full /dev/shm is an error here, not a SIGBUS later), maps it, lets
// the caller initialize it, and publishes the name in the store under `key`; the others open and
// map it. Once every rank has said in the store that it mapped the file, every rank unlinks it, so
// from then on only the mappings keep the memory and a group killed with SIGKILL leaves nothing in
// /dev/shm. (A rank 0 killed between creating and the others mapping leaks the file: the window is
// the rendezvous itself.)
#pragma once

#include <cstddef>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/store/store.h"

namespace dstrain::comm::shm_internal {

struct SharedMapping {
  char* base = nullptr;
  size_t bytes = 0;
  std::string name;  // the file's name while it existed
};

// The rendezvous above, under `key` ("<key>" for the name, "<key>/mapped/<rank>" for the
// barrier) in `scope`, which the caller scopes to its group. `init` runs on rank 0's mapping
// before the name is published. Errors: kResourceExhausted on every rank when rank 0 could not
// create the file; kDeadlineExceeded naming the ranks that did not map it within `timeout`;
// kUnavailable (store, shm_open, mmap), kInternal (a file of another size), all prefixed by `who`.
absl::StatusOr<SharedMapping> MapGroupFile(store::Store& scope, const std::string& key, int rank,
                                           int size, const std::string& who, size_t bytes,
                                           absl::Duration timeout,
                                           absl::FunctionRef<void(char* base)> init);

}  // namespace dstrain::comm::shm_internal
