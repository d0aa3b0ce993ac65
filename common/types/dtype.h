// The element types and devices of the whole tree: one vocabulary for tensors, kernels (CPU and
// CUDA), communicators and checkpoints.
//
// Plain C++17 with no dependencies, so that nvcc-compiled `.cu` files include it as well.
#pragma once

#include <cstddef>

namespace dstrain {

// Element types. Floating point: fp32, bfloat16 (8 exponent bits, 7 mantissa bits) and IEEE
// binary16; integer: token ids (i32 in memory, u16 in llm.c's token files).
enum class DType { kF32, kBF16, kF16, kI32, kU16 };

constexpr size_t DTypeSize(DType d) { return d == DType::kF32 || d == DType::kI32 ? 4 : 2; }

// "f32", "bf16", "f16", "i32", "u16".
constexpr const char* DTypeName(DType d) {
  switch (d) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI32:
      return "i32";
    case DType::kU16:
      return "u16";
  }
  return "?";
}

// bf16 or f16: the 16-bit floating-point storage types of mixed precision.
constexpr bool IsHalf(DType d) { return d == DType::kBF16 || d == DType::kF16; }

enum class DeviceType { kCpu, kCuda };

// Where memory lives and kernels run: the host, or CUDA device `index` (an ordinal among the
// devices this process sees).
struct Device {
  DeviceType type = DeviceType::kCpu;
  int index = 0;

  static constexpr Device Cpu() { return Device{DeviceType::kCpu, 0}; }
  static constexpr Device Cuda(int index) { return Device{DeviceType::kCuda, index}; }
  constexpr bool is_cpu() const { return type == DeviceType::kCpu; }
  constexpr bool is_cuda() const { return type == DeviceType::kCuda; }
  friend constexpr bool operator==(const Device& a, const Device& b) {
    return a.type == b.type && (a.type == DeviceType::kCpu || a.index == b.index);
  }
  friend constexpr bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

}  // namespace dstrain
