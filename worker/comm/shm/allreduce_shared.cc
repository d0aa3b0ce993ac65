#include <algorithm>
#include <cstring>
#include <vector>

#include "worker/comm/cpu_reduce.h"
#include "worker/comm/shm/algorithms.h"

namespace dstrain::comm::shm_internal {

absl::Status RunAllReduceShared(Steps& steps, const std::vector<char*>& at,
                                const CommBuffer& buffer, ReduceOp op) {
  const int size = steps.size();
  const int rank = steps.rank();
  const size_t esize = DTypeSize(buffer.dtype);
  // Only this rank reads or writes its share of anyone's buffer until Finish.
  const Share mine = ShareOf(buffer.count, size, rank, LineElements(esize));
  const int64_t block = SharedBlockElements(esize);
  std::vector<const void*> inputs(size);
  for (int64_t i = mine.begin; i < mine.end; i += block) {
    const int64_t n = std::min(block, mine.end - i);
    const int64_t at_byte = i * static_cast<int64_t>(esize);
    for (int q = 0; q < size; ++q) inputs[q] = at[q] + at_byte;
    char* result = at[rank] + at_byte;
    ReduceBuffers(inputs.data(), size, result, n, buffer.dtype, op);
    for (int q = 0; q < size; ++q) {
      if (q != rank) std::memcpy(at[q] + at_byte, result, n * esize);
    }
  }
  return steps.Finish();
}

}  // namespace dstrain::comm::shm_internal
