#include "worker/tensor/view.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"

namespace dstrain::tensor {

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string DeviceName(Device device) {
  return device.is_cpu() ? "cpu" : absl::StrCat("cuda:", device.index);
}

View::View(void* data, DType dtype, Shape shape, Device device)
    : data_(data),
      dtype_(dtype),
      shape_(std::move(shape)),
      numel_(NumElements(shape_)),
      device_(device) {}

View View::operator[](int64_t i) const {
  DT_CHECK(!shape_.empty() && i >= 0 && i < shape_[0]);
  Shape rest(shape_.begin() + 1, shape_.end());
  const int64_t row = NumElements(rest);
  return View(static_cast<char*>(data_) + i * row * DTypeSize(dtype_), dtype_, std::move(rest),
              device_);
}

View View::Sub(int64_t offset, int64_t count) const {
  DT_CHECK(offset >= 0 && count >= 0 && offset + count <= numel_);
  return View(static_cast<char*>(data_) + offset * DTypeSize(dtype_), dtype_, Shape{count},
              device_);
}

View View::Reshape(Shape shape) const {
  DT_CHECK(NumElements(shape) == numel_);
  return View(data_, dtype_, std::move(shape), device_);
}

View View::As(DType dtype) const {
  DT_CHECK(DTypeSize(dtype) == DTypeSize(dtype_));
  return View(data_, dtype, shape_, device_);
}

std::string View::DebugString() const {
  return absl::StrCat(DTypeName(dtype_), "[", absl::StrJoin(shape_, ","), "]@",
                      DeviceName(device_));
}

}  // namespace dstrain::tensor
