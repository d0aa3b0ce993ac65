#include <vector>

#include "worker/comm/cpu_reduce.h"
#include "worker/comm/shm/algorithms.h"

namespace dstrain::comm::shm_internal {

absl::Status RunReduceScatterShared(Steps& steps, const std::vector<char*>& at,
                                    const CommBuffer& input, const CommBuffer& output,
                                    ReduceOp op) {
  const int size = steps.size();
  const int rank = steps.rank();
  const int64_t esize = static_cast<int64_t>(DTypeSize(input.dtype));
  const int64_t m = output.count;  // elements per destination
  char* out = static_cast<char*>(output.data);
  // Piece `rank` of every rank's input, which only this rank reads. In place (output is this
  // rank's piece of its input) is safe: each element is read from every input before it is written.
  std::vector<const void*> inputs(size);
  for (int q = 0; q < size; ++q) inputs[q] = at[q] + rank * m * esize;
  ReduceBuffers(inputs.data(), size, out, m, input.dtype, op);
  return steps.Finish();
}

}  // namespace dstrain::comm::shm_internal
