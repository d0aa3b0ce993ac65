#include "worker/model/model.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dstrain::model {

int64_t BatchTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Batch& Batch::Add(std::string name, BatchTensor tensor) {
  tensors_[std::move(name)] = std::move(tensor);
  return *this;
}

absl::StatusOr<BatchTensor> Batch::Get(absl::string_view name, DType dtype, int rank) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, t] : tensors_) names.push_back(n);
    return absl::InvalidArgumentError(
        absl::StrCat("batch: no array '", name,
                     "' (it has: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
  }
  const BatchTensor& t = it->second;
  if (t.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat("batch: '", name, "' is ", DTypeName(t.dtype),
                                                   ", expected ", DTypeName(dtype)));
  }
  if (static_cast<int>(t.shape.size()) != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch: '", name, "' has ", t.shape.size(), " dimensions, expected ", rank));
  }
  for (int64_t d : t.shape) {
    if (d <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("batch: '", name, "' has shape [",
                                                     absl::StrJoin(t.shape, ", "), "]: empty"));
    }
  }
  if (t.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("batch: '", name, "' has no data"));
  }
  return t;
}

}  // namespace dstrain::model
