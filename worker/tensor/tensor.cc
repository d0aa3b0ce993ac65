#include "worker/tensor/tensor.h"

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dstrain::tensor {

Tensor::~Tensor() { Release(); }

Tensor::Tensor(Tensor&& other) noexcept { *this = std::move(other); }

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    Release();
    allocator_ = std::exchange(other.allocator_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    dtype_ = other.dtype_;
    shape_ = std::move(other.shape_);
    numel_ = std::exchange(other.numel_, 0);
    category_ = other.category_;
  }
  return *this;
}

void Tensor::Release() {
  if (data_ != nullptr && allocator_ != nullptr) allocator_->Free(data_, bytes(), category_);
  data_ = nullptr;
  numel_ = 0;
}

absl::StatusOr<Tensor> Tensor::Empty(Allocator* allocator, DType dtype, std::vector<int64_t> shape,
                                     MemoryCategory category) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension in shape [", absl::StrJoin(shape, ","), "]"));
    }
    if (d != 0 && numel > (int64_t{1} << 50) / d) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape [", absl::StrJoin(shape, ","), "] is too large"));
    }
    numel *= d;
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = numel;
  t.category_ = category;
  auto p = allocator->Allocate(t.bytes(), category);
  if (!p.ok()) {
    t.numel_ = 0;
    return p.status();
  }
  t.allocator_ = allocator;
  t.data_ = *p;
  return t;
}

absl::StatusOr<Tensor> Tensor::Zeros(Allocator* allocator, DType dtype, std::vector<int64_t> shape,
                                     MemoryCategory category) {
  auto t = Empty(allocator, dtype, std::move(shape), category);
  if (t.ok()) t->SetZero();
  return t;
}

void Tensor::SetZero() {
  if (data_ != nullptr) allocator_->Zero(data_, bytes());
}

View Tensor::view() const {
  if (data_ == nullptr) return View();
  return View(data_, dtype_, Shape(shape_.begin(), shape_.end()), device());
}

std::string Tensor::DebugString() const {
  return absl::StrCat(DTypeName(dtype_), "[", absl::StrJoin(shape_, ","), "]");
}

}  // namespace dstrain::tensor
