#include "worker/zero/optimizer_home.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::zero {

absl::StatusOr<std::unique_ptr<HostOptimizerState>> HostOptimizerState::Create(
    std::vector<int64_t> windows, int arrays, tensor::Allocator* host) {
  if (arrays < 1 || arrays > 3) {
    return absl::InvalidArgumentError(absl::StrCat("HostOptimizerState: ", arrays, " arrays"));
  }
  std::unique_ptr<HostOptimizerState> s(new HostOptimizerState(std::move(windows), host));
  for (int64_t n : s->windows_) s->total_ += n;
  for (int a = 0; a < arrays; ++a) {
    const size_t bytes = static_cast<size_t>(s->total_) * sizeof(float);
    DT_ASSIGN_OR_RETURN(void* p, host->Allocate(bytes, tensor::MemoryCategory::kOptimizerState));
    s->arrays_.push_back(static_cast<float*>(p));
    host->Zero(p, bytes);
  }
  return s;
}

HostOptimizerState::~HostOptimizerState() {
  for (float* p : arrays_) {
    host_->Free(p, static_cast<size_t>(total_) * sizeof(float),
                tensor::MemoryCategory::kOptimizerState);
  }
}

absl::Status HostOptimizerState::CheckRange(int a, int64_t at, int64_t n) const {
  if (a < 0 || a >= static_cast<int>(arrays_.size()) || at < 0 || n < 0 || at + n > total_) {
    return absl::InternalError(absl::StrCat("HostOptimizerState: array ", a, ", elements [", at,
                                            ", ", at + n, ") are outside the state"));
  }
  return absl::OkStatus();
}

absl::Status HostOptimizerState::Update(const WindowFn& fn) {
  int64_t at = 0;
  for (int w = 0; w < static_cast<int>(windows_.size()); ++w) {
    float* arrays[3] = {nullptr, nullptr, nullptr};
    for (size_t a = 0; a < arrays_.size(); ++a) arrays[a] = arrays_[a] + at;
    DT_RETURN_IF_ERROR(fn(w, arrays));
    at += windows_[w];
  }
  return absl::OkStatus();
}

absl::Status HostOptimizerState::ReadRange(int a, int64_t at, int64_t n, float* dst) {
  DT_RETURN_IF_ERROR(CheckRange(a, at, n));
  std::memcpy(dst, arrays_[a] + at, n * sizeof(float));
  return absl::OkStatus();
}

absl::Status HostOptimizerState::WriteRange(int a, int64_t at, int64_t n, const float* src) {
  DT_RETURN_IF_ERROR(CheckRange(a, at, n));
  std::memcpy(arrays_[a] + at, src, n * sizeof(float));
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> HostOptimizerState::ReadChunk(int a, int64_t at,
                                                                      int64_t max_n) {
  if (max_n < 1) return absl::InternalError("HostOptimizerState::ReadChunk: nothing asked for");
  DT_RETURN_IF_ERROR(CheckRange(a, at, 1));
  return absl::Span<const float>(arrays_[a] + at, std::min(max_n, total_ - at));
}

absl::Status HostOptimizerState::Zero() {
  for (float* p : arrays_) host_->Zero(p, static_cast<size_t>(total_) * sizeof(float));
  return absl::OkStatus();
}

}  // namespace dstrain::zero
