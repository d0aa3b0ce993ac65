// Element types of the tensors the CUDA kernels read and write. Plain C++ (no CUDA headers), so
// `.cu` files and host code share it.
#pragma once

#include <cstddef>

namespace dstrain::kernels::gpu {

enum class DataType {
  kFloat32,
  kBFloat16,  // bfloat16: 8 exponent bits, 7 mantissa bits
  kFloat16,   // IEEE binary16
};

inline const char* DataTypeName(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kBFloat16:
      return "bfloat16";
    case DataType::kFloat16:
      return "float16";
  }
  return "unknown";
}

inline size_t DataTypeSize(DataType t) { return t == DataType::kFloat32 ? 4 : 2; }

}  // namespace dstrain::kernels::gpu
