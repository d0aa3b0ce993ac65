#include "kernels/cuda_common/test_util.h"

#include <cmath>
#include <limits>
#include <random>

namespace dstrain::kernels::gpu::testing {

std::vector<float> RandomFloats(int64_t n, uint32_t seed, float lo, float hi) {
  // mt19937's output sequence is fully specified; build the floats from it directly (the
  // standard distributions are implementation-defined).
  std::mt19937 gen(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * static_cast<float>(gen() >> 8) * (1.0f / 16777216.0f);
  return v;
}

std::vector<int32_t> RandomInts(int64_t n, uint32_t seed, int32_t bound) {
  std::mt19937 gen(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(gen() % static_cast<uint32_t>(bound));
  return v;
}

std::vector<double> ToDouble(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

::testing::AssertionResult AllClose(const std::vector<float>& got, const std::vector<double>& want,
                                    double abs_tol, double rel_tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  int64_t bad = 0, worst = -1;
  double worst_ratio = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    const double tol = abs_tol + rel_tol * std::abs(want[i]);
    const double ratio = std::isnan(err) ? std::numeric_limits<double>::infinity() : err / tol;
    if (!(err <= tol)) ++bad;
    if (worst < 0 || ratio > worst_ratio) {
      worst = static_cast<int64_t>(i);
      worst_ratio = ratio;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << got.size() << " elements out of tolerance; worst [" << worst
         << "]: got " << got[worst] << ", want " << want[worst] << " (error "
         << std::abs(got[worst] - want[worst]) << ", tolerance "
         << abs_tol + rel_tol * std::abs(want[worst]) << ")";
}

double MaxAbsError(const std::vector<float>& got, const std::vector<double>& want) {
  double m = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    if (std::isnan(err)) return err;
    m = std::max(m, err);
  }
  return m;
}

}  // namespace dstrain::kernels::gpu::testing
