#include "kernels/common/test_util.h"

#include <cmath>
#include <cstring>
#include <random>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace dstrain::kernels::testing {

std::vector<float> RandomFloats(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::vector<float> v(n);
  // Build from raw 24-bit integers rather than std::uniform_real_distribution, whose output is
  // implementation-defined: the same values on every standard library.
  for (auto& x : v) x = lo + (hi - lo) * static_cast<float>(gen() >> 8) * (1.f / 16777216.f);
  return v;
}

std::vector<int32_t> RandomTokens(int64_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 gen(seed);
  std::vector<int32_t> v(n);
  for (auto& t : v) t = static_cast<int32_t>(gen() % static_cast<uint32_t>(vocab));
  return v;
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

::testing::AssertionResult AllClose(const float* got, const double* want, int64_t n, double abs_tol,
                                    double rel_tol) {
  int64_t worst = -1;
  double worst_ratio = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = abs_tol + rel_tol * std::fabs(want[i]);
    const double ratio = std::isnan(err) ? INFINITY : err / tol;
    if (ratio > worst_ratio || worst < 0) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  if (n == 0 || worst_ratio <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << worst << " of " << n << ": got " << got[worst] << ", want " << want[worst]
         << " (error " << std::fabs(got[worst] - want[worst]) << " is " << worst_ratio
         << "x the tolerance " << abs_tol << " + " << rel_tol << "*|want|)";
}

::testing::AssertionResult BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "size mismatch";
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure()
             << "element " << i << " differs: " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<double> FiniteDifferenceGradient(
    const std::function<double(const std::vector<double>&)>& f, std::vector<double> x, double h) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f(x);
    x[i] = saved - h;
    const double down = f(x);
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

std::vector<Isa> TestIsas() { return AvailableIsas(); }

std::string IsaTestName(const ::testing::TestParamInfo<Isa>& info) { return IsaName(info.param); }

ScopedThreads::ScopedThreads(int threads) {
#ifdef _OPENMP
  saved_ = omp_get_max_threads();
  omp_set_num_threads(threads);
#else
  saved_ = threads;
#endif
}

ScopedThreads::~ScopedThreads() {
#ifdef _OPENMP
  omp_set_num_threads(saved_);
#endif
}

}  // namespace dstrain::kernels::testing
