// ParamCoordinator: ZeRO stage 3's record of which units the model acquires, in what order, and
// what that allows (DeepSpeed's PartitionedParameterCoordinator and its trace cache).
//
// The first training micro-batch records the order of acquisitions; later ones follow it, and
// while they do, the stage may gather the next units before the model asks (prefetch, within
// stage3_prefetch_bucket_size in flight and stage3_max_live_parameters gathered) and keep a
// released unit that is used again soon (stage3_max_reuse_distance). An acquisition off the
// recorded order stops both for the rest of the micro-batch, and the order seen becomes the new
// record (DeepSpeed logs "Invalidate trace cache" and records again). Evaluation passes neither
// record nor follow. Sizes are parameters counted as the padded space's floats, as DeepSpeed
// counts them in elements. This class only decides; Stage3 gathers.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "worker/config/config.h"
#include "worker/zero/partition.h"

namespace dstrain::zero {

class ParamCoordinator {
 public:
  ParamCoordinator(const Partition& partition, const config::ZeroConfig& config)
      : partition_(partition), config_(config) {}

  void set_training(bool training) { training_ = training; }
  void BeginMicroBatch();
  // The model acquires unit u (recorded in training; checked against the record).
  void Record(int unit);
  // The end of a training micro-batch's backward: the order seen becomes the record.
  void EndMicroBatch();

  // The units to start gathering now, in order: the next ones along the record that `gathered`
  // says are not, while `in_flight` (gathers not finished) and `live` (gathered or in flight)
  // stay within their limits as each is added. Empty unless following the record.
  std::vector<int> Prefetch(absl::FunctionRef<bool(int)> gathered, int64_t in_flight,
                            int64_t live) const;
  // Whether a unit whose last user just released it should stay gathered: it is used again in
  // this micro-batch within stage3_max_reuse_distance and `live` is within the limit.
  bool KeepForReuse(int unit, int64_t live) const;

  int64_t invalidations() const { return invalidations_; }
  bool complete() const { return complete_; }

 private:
  bool Following() const { return training_ && complete_ && !broken_; }

  const Partition& partition_;
  const config::ZeroConfig& config_;
  bool training_ = true;
  bool complete_ = false;       // a record exists
  std::vector<int> trace_;      // the record
  std::vector<int> recording_;  // this micro-batch's acquisitions
  size_t position_ = 0;         // acquisitions so far in this micro-batch
  bool broken_ = false;         // this micro-batch left the record
  int64_t invalidations_ = 0;
};

}  // namespace dstrain::zero
