// Tensor: an owning, move-only, typed n-dimensional buffer on one device.
//
// Storage comes from an Allocator under a MemoryCategory, so every byte the trainer holds is
// accounted. Row-major, contiguous. Not thread-safe; share read-only views across threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/types/dtype.h"
#include "worker/tensor/allocator.h"
#include "worker/tensor/view.h"

namespace dstrain::tensor {

class Tensor {
 public:
  Tensor() = default;
  ~Tensor();
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // Uninitialised storage; kResourceExhausted when the allocator refuses.
  static absl::StatusOr<Tensor> Empty(Allocator* allocator, DType dtype, std::vector<int64_t> shape,
                                      MemoryCategory category);
  // Zero-filled storage.
  static absl::StatusOr<Tensor> Zeros(Allocator* allocator, DType dtype, std::vector<int64_t> shape,
                                      MemoryCategory category);

  template <typename T>
  T* data() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(data_);
  }
  void* raw() { return data_; }

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return numel_ * DTypeSize(dtype_); }
  MemoryCategory category() const { return category_; }
  bool defined() const { return data_ != nullptr; }
  // The device the storage lives on (the allocator's; the CPU for an undefined tensor).
  Device device() const { return allocator_ != nullptr ? allocator_->device() : Device::Cpu(); }
  // The whole tensor as a View (empty for an undefined tensor).
  View view() const;
  std::string DebugString() const;  // "f32[8,256,768]"

  void SetZero();

 private:
  void Release();

  Allocator* allocator_ = nullptr;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  MemoryCategory category_ = MemoryCategory::kOther;
};

}  // namespace dstrain::tensor
