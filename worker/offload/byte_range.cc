#include "worker/offload/byte_range.h"

#include <algorithm>
#include <cstring>

#include "common/status/status_macros.h"

namespace dstrain::offload {
namespace {

// One transfer's blocks: `bytes` from the block-aligned `lo` cover the next `len` bytes of the
// range, which start `skip` bytes in.
struct Piece {
  int64_t lo, skip, len, bytes;
};

Piece PieceOf(int64_t offset, int64_t n, const AlignedBuffer& scratch) {
  const int64_t lo = offset / kIoAlign * kIoAlign, skip = offset - lo;
  const int64_t len = std::min(n, scratch.size() - skip);
  return Piece{lo, skip, len, AlignUp(skip + len)};
}

}  // namespace

absl::Status ReadBytes(SwapEngine& engine, const FileRef& file, int64_t offset, int64_t n,
                       void* dst, const AlignedBuffer& scratch, BlockTraffic* traffic) {
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    const Piece p = PieceOf(offset, n, scratch);
    DT_RETURN_IF_ERROR(engine.Wait(engine.Read(file, p.lo, scratch.data(), p.bytes)));
    if (traffic != nullptr) traffic->read += p.bytes;
    std::memcpy(out, scratch.data() + p.skip, p.len);
    out += p.len;
    offset += p.len;
    n -= p.len;
  }
  return absl::OkStatus();
}

absl::Status WriteBytes(SwapEngine& engine, const FileRef& file, int64_t offset, int64_t n,
                        const void* src, const AlignedBuffer& scratch, BlockTraffic* traffic) {
  const char* in = static_cast<const char*>(src);
  while (n > 0) {
    const Piece p = PieceOf(offset, n, scratch);
    if (p.skip != 0 || p.len != p.bytes) {  // blocks covered in part keep their other bytes
      DT_RETURN_IF_ERROR(engine.Wait(engine.Read(file, p.lo, scratch.data(), p.bytes)));
      if (traffic != nullptr) traffic->read += p.bytes;
    }
    std::memcpy(scratch.data() + p.skip, in, p.len);
    DT_RETURN_IF_ERROR(engine.Wait(engine.Write(file, p.lo, scratch.data(), p.bytes)));
    if (traffic != nullptr) traffic->written += p.bytes;
    in += p.len;
    offset += p.len;
    n -= p.len;
  }
  return absl::OkStatus();
}

}  // namespace dstrain::offload
