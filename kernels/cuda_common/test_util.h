// Helpers for the CUDA kernel tests: skipping without a device, RAII device buffers, fixed-seed
// random data and a tolerance check against float64 references. The same test sources also build
// against the CPU simulator (`<name>_sim` tests, see sim.h), where "device" memory is host memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_common/device.h"

// At the top of every GPU test: skips (not fails) on a machine without a usable CUDA device.
#define DT_SKIP_WITHOUT_CUDA_DEVICE()                                                     \
  do {                                                                                    \
    const ::absl::Status dt_device_status_ = ::dstrain::kernels::gpu::CudaDeviceStatus(); \
    if (!dt_device_status_.ok()) GTEST_SKIP() << dt_device_status_.message();             \
  } while (0)

namespace dstrain::kernels::gpu::testing {

// n elements of device memory, zero-filled, freed on destruction. CUDA failures are test failures.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t n) : n_(n) {
    if (n_ > 0) {
      Expect(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes()), "cudaMalloc");
      Expect(cudaMemset(ptr_, 0, bytes()), "cudaMemset");
    }
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { Upload(host); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  int64_t size() const { return n_; }
  size_t bytes() const { return static_cast<size_t>(n_) * sizeof(T); }

  // Copies host data in (sizes must match). Waits for all earlier device work first.
  void Upload(const std::vector<T>& host) {
    ASSERT_EQ(static_cast<int64_t>(host.size()), n_);
    Expect(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    if (n_ > 0) Expect(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice), "upload");
  }

  // Waits for all device work, then copies the contents out.
  std::vector<T> ToHost() const {
    std::vector<T> host(n_);
    Expect(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    if (n_ > 0) Expect(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost), "download");
    return host;
  }

 private:
  static void Expect(cudaError_t e, const char* what) {
    EXPECT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorName(e) << " "
                              << cudaGetErrorString(e);
  }

  int64_t n_;
  T* ptr_ = nullptr;
};

// n floats uniform in [lo, hi) from a fixed-seed generator: the same values on every machine.
std::vector<float> RandomFloats(int64_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f);

// n integers uniform in [0, bound).
std::vector<int32_t> RandomInts(int64_t n, uint32_t seed, int32_t bound);

std::vector<double> ToDouble(const std::vector<float>& v);

// Passes when |got[i] - want[i]| <= abs_tol + rel_tol * |want[i]| for all i (NaN fails). The
// failure message names the worst element relative to its tolerance, its index and the count of
// violations.
::testing::AssertionResult AllClose(const std::vector<float>& got, const std::vector<double>& want,
                                    double abs_tol, double rel_tol);

// max_i |got[i] - want[i]| (NaN propagates as NaN).
double MaxAbsError(const std::vector<float>& got, const std::vector<double>& want);

}  // namespace dstrain::kernels::gpu::testing
