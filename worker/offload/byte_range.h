// Byte ranges of an O_DIRECT swap file that need not be block-aligned, moved through an aligned
// scratch buffer: each transfer covers whole blocks, and a block the range covers only in part is
// read before it is written, so its other bytes keep their values. The swap layouts pad every
// region (an optimizer array of a window, a parameter chunk) to whole blocks, so the blocks
// around a range inside a region belong to that region. Synchronous: each transfer is waited for.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "worker/offload/aligned_buffer.h"
#include "worker/offload/swap_engine.h"

namespace dstrain::offload {

// Bytes moved to and from the disk (whole blocks), added to by the calls below.
struct BlockTraffic {
  int64_t read = 0, written = 0;
};

// Bytes [offset, offset + n) of `file` into `dst`.
absl::Status ReadBytes(SwapEngine& engine, const FileRef& file, int64_t offset, int64_t n,
                       void* dst, const AlignedBuffer& scratch, BlockTraffic* traffic = nullptr);
// `n` bytes at `src` into bytes [offset, offset + n) of `file`.
absl::Status WriteBytes(SwapEngine& engine, const FileRef& file, int64_t offset, int64_t n,
                        const void* src, const AlignedBuffer& scratch,
                        BlockTraffic* traffic = nullptr);

}  // namespace dstrain::offload
