// GradientBuckets: ZeRO stage 2 and 3's gradient path. Each unit's gradients of a micro-batch fill
// a bucket (the unit's whole padded space, in communication_data_type) while backward runs; the
// moment the unit's last module releases its gradients the bucket is reduce-scattered, and this
// rank adds its averaged chunk into its partitioned gradients. DeepSpeed's reduce buckets with
// overlap_comm work the same way.
//
// Without overlap_comm a reduction finishes before backward goes on. With it, backward runs on
// while buckets reduce, but at most two stay in flight (DeepSpeed double-buffers its IPG bucket
// likewise): each holds a unit's full gradients, and letting them pile up would hold the whole
// model's gradients that stage 2 exists to avoid. Finished ones are collected as soon as seen.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/tensor/tensor.h"

namespace dstrain::zero {

class ZeroState;

class GradientBuckets {
 public:
  // `owner` (the stage 2 or 3 state) outlives this.
  explicit GradientBuckets(ZeroState* owner);
  // Waits for reductions in flight (their buffers are about to be freed).
  ~GradientBuckets();

  // Where module `module`'s gradients go in its unit's bucket, made on first use. An f32 bucket
  // is zeroed around its modules' matrix parameters only: a module's matrix parts are handed over
  // unwritten on its first call (*unwritten true; the model overwrites them), which must give
  // `unwritten`. A 16-bit bucket (the modules' fp32 scratches are added into it) is zeroed whole.
  absl::StatusOr<tensor::View> Target(int module, bool* unwritten);
  // Module `module`'s gradients are complete; a full bucket is reduced.
  absl::Status Done(int module);
  // The end of backward: every reduction collected. An error if a unit's bucket was filled but
  // not all its modules said Done.
  absl::Status Finish();
  // No reduction in flight, no bucket open.
  bool Idle() const;

 private:
  struct Bucket {
    tensor::Tensor buffer;  // the unit's full padded gradients of this micro-batch
    // Per module of the unit: its matrix parameters' part of `buffer` is not yet written.
    std::vector<bool> unwritten;
    int released = 0;  // modules of the unit whose gradients are complete
    std::unique_ptr<comm::Work> reduce;
    bool reduced = false;  // launched, not yet added into the gradients
  };
  absl::Status Launch(int unit);
  absl::Status Collect(int unit);  // waits and adds the unit's chunk into the gradients

  ZeroState& z_;
  std::vector<Bucket> buckets_;
  std::deque<int> reducing_;  // units whose reduce-scatter was launched, oldest first
};

}  // namespace dstrain::zero
