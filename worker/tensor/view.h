// View: a non-owning window on typed device memory — pointer, element type, shape and device —
// that the model, ZeRO and the engine hand to the device operations (worker/device/ops.h).
//
// A View is what an operation needs to check its arguments (shapes that fit, dtypes it handles,
// memory on its device) without knowing who owns the bytes: a Tensor, a ZeRO buffer, a slice of
// a flat parameter space. Row-major and contiguous. Cheap to copy; it never frees anything, so
// it must not outlive the memory it points to. The pointer may be a device address: never
// dereference data() on the host unless device().is_cpu() (or the allocator says the memory is
// host-accessible).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/types/span.h"
#include "common/types/dtype.h"

namespace dstrain::tensor {

using Shape = absl::InlinedVector<int64_t, 4>;

class View {
 public:
  View() = default;  // empty: data() is null, numel() is 0
  View(void* data, DType dtype, Shape shape, Device device = Device::Cpu());
  View(const void* data, DType dtype, Shape shape, Device device = Device::Cpu())
      : View(const_cast<void*>(data), dtype, std::move(shape), device) {}
  // A 1-D view of n elements.
  static View Flat(const void* data, DType dtype, int64_t n, Device device = Device::Cpu()) {
    return View(data, dtype, Shape{n}, device);
  }

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return static_cast<size_t>(numel_) * DTypeSize(dtype_); }
  Device device() const { return device_; }
  bool empty() const { return data_ == nullptr; }

  // Row i of the first dimension: shape [d1, ...]. REQUIRES: rank() >= 1, 0 <= i < dim(0).
  View operator[](int64_t i) const;
  // Elements [offset, offset + count) of the flattened view, as a 1-D view.
  // REQUIRES: 0 <= offset, offset + count <= numel().
  View Sub(int64_t offset, int64_t count) const;
  // The same elements under another shape. REQUIRES: the element counts agree.
  View Reshape(Shape shape) const;
  // The same bytes read as another dtype of the same size (bf16 bits as u16, ...).
  View As(DType dtype) const;

  // "bf16[4,256]@cuda:0".
  std::string DebugString() const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
  int64_t numel_ = 0;
  Device device_;
};

// Product of the dimensions.
int64_t NumElements(absl::Span<const int64_t> shape);
// "cpu" or "cuda:1".
std::string DeviceName(Device device);

}  // namespace dstrain::tensor
