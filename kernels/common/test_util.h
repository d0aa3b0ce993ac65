// Helpers shared by the kernel tests: deterministic random data, float64 copies, an element-wise
// tolerance check that names the worst element, and central finite differences.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cpu_features.h"

namespace dstrain::kernels::testing {

// n values uniform in [lo, hi), from a fixed-seed generator (same values on every machine).
std::vector<float> RandomFloats(int64_t n, uint32_t seed, float lo = -1.f, float hi = 1.f);

// n token ids uniform in [0, vocab).
std::vector<int32_t> RandomTokens(int64_t n, uint32_t seed, int32_t vocab);

std::vector<double> ToDouble(const std::vector<float>& v);

// Passes when |got[i] - want[i]| <= abs_tol + rel_tol * |want[i]| for every i (NaN fails); the
// failure message names the worst element relative to its tolerance.
::testing::AssertionResult AllClose(const float* got, const double* want, int64_t n, double abs_tol,
                                    double rel_tol);
inline ::testing::AssertionResult AllClose(const std::vector<float>& got,
                                           const std::vector<double>& want, double abs_tol,
                                           double rel_tol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size mismatch";
  return AllClose(got.data(), want.data(), static_cast<int64_t>(got.size()), abs_tol, rel_tol);
}

// Passes when the two float arrays are bitwise identical.
::testing::AssertionResult BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b);

// Central differences (f(x + h e_i) - f(x - h e_i)) / 2h for every i, in double.
std::vector<double> FiniteDifferenceGradient(
    const std::function<double(const std::vector<double>&)>& f, std::vector<double> x,
    double h = 1e-6);

// Every ISA this machine can run, for INSTANTIATE_TEST_SUITE_P, and a readable test name.
std::vector<Isa> TestIsas();
std::string IsaTestName(const ::testing::TestParamInfo<Isa>& info);

// Sets the OpenMP thread count for the lifetime of the object.
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads);
  ~ScopedThreads();

 private:
  int saved_;
};

}  // namespace dstrain::kernels::testing
