// A user's module for the library's tests (worker/api): an MLP classifier on a learnable
// synthetic task, written against the public interface as a user would write it.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/api/module.h"

namespace dstrain::api::testing {

inline constexpr int kIn = 8, kClasses = 4;

// x (B, 8) f32, y (B) i32 -> fc1 + GELU (`hidden`) -> fc2 -> softmax cross-entropy (mean over
// B). Modules "fc1" and "fc2".
class Mlp final : public Module {
 public:
  explicit Mlp(int hidden = 16) : hidden_(hidden) {}
  absl::Status Declare(Declarer& d) override;
  absl::StatusOr<float> Forward(Pass& pass, const Batch& batch) override;
  absl::Status Backward(Pass& pass) override;

 private:
  int hidden_;
};

// A learnable task: y = argmax of a fixed linear map of x, x uniform in [-1, 1); batch arrays
// "x" and "y".
struct Data {
  std::vector<float> x;
  std::vector<int32_t> y;
  model::Batch batch() const;
};

// B samples, deterministic from (step, rank).
Data MakeData(int step, int rank, int B);

}  // namespace dstrain::api::testing
