#include "kernels/adamw/adamw.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/adamw/adamw_reference.h"
#include "kernels/adamw/adamw_testing.h"
#include "kernels/cast/cast.h"
#include "kernels/common/cpu_features.h"
#include "kernels/common/test_util.h"

namespace dstrain::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::RandomFloats;
using testing::ToDouble;

const int64_t kSizes[] = {0, 1, 7, 33, 1000, (int64_t{1} << 17) + 3};

AdamWArgs Args(bool adamw_mode, int step) {
  AdamWArgs a;
  a.lr = 3e-3;
  a.beta1 = 0.9;
  a.beta2 = 0.95;
  a.eps = 1e-8;
  a.weight_decay = 0.1;
  a.bias_correction1 = 1 - std::pow(0.9, step);
  a.bias_correction2 = 1 - std::pow(0.95, step);
  a.adamw_mode = adamw_mode;
  a.grad_scale = 0.5;  // e.g. clipping by a factor of 2
  return a;
}

// One step in float vs the same step in double from the same inputs. m and v are a multiply and
// a (fused) multiply-add: within ~1.5 ulp of the larger term. v's terms are both positive (1e-7
// relative); m's can cancel, so its error is bounded by ulps of the terms |beta1·m| <= 0.09 and
// |(1 − beta1)·g| <= 0.1, i.e. absolute ~1e-8 (3e-8 allowed). The parameter is p·(1 − lr·wd) minus
// a step of size <= ~lr/bc1 · |m/denom|: its error is ~1 ulp of p plus a few ulp of the step, so a
// relative tolerance on p plus an absolute 1e-8 (a few ulp of a 3e-2 step) covers it.
constexpr double kMomentRelTol = 3e-7, kMomentAbsTol = 3e-8;
constexpr double kParamRelTol = 2e-7, kParamAbsTol = 1e-8;

class AdamWTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

TEST_P(AdamWTest, OneStepMatchesReferenceInBothModes) {
  for (bool adamw_mode : {true, false}) {
    for (int64_t n : kSizes) {
      auto p = RandomFloats(n, 1), m = RandomFloats(n, 3, -0.1f, 0.1f);
      auto v = RandomFloats(n, 4, 0.f, 0.01f);
      const auto g = RandomFloats(n, 2);
      auto pd = ToDouble(p), md = ToDouble(m), vd = ToDouble(v);
      const AdamWArgs a = Args(adamw_mode, 3);
      p.push_back(-7.f);  // sentinel past the end
      AdamWUpdate(p.data(), g.data(), m.data(), v.data(), n, a);
      AdamWUpdateReference(pd.data(), ToDouble(g).data(), md.data(), vd.data(), n, a);
      EXPECT_TRUE(AllClose(p.data(), pd.data(), n, kParamAbsTol, kParamRelTol)) << n;
      EXPECT_TRUE(AllClose(m, md, kMomentAbsTol, kMomentRelTol)) << n;
      EXPECT_TRUE(AllClose(v, vd, 0, kMomentRelTol)) << n;
      EXPECT_EQ(p[n], -7.f);
    }
  }
}

TEST_P(AdamWTest, BitwiseIdenticalAcrossThreadCounts) {
  const int64_t n = (int64_t{1} << 20) + 5;
  const auto p0 = RandomFloats(n, 5), g = RandomFloats(n, 6);
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    testing::ScopedThreads scoped(threads);
    auto p = p0;
    std::vector<float> m(n, 0.f), v(n, 0.f);
    AdamWUpdate(p.data(), g.data(), m.data(), v.data(), n, Args(true, 1));
    if (first.empty()) {
      first = p;
    } else {
      EXPECT_TRUE(BitwiseEqual(p, first)) << threads;
    }
  }
}

// AdamWUpdateMixed is specified as a composition of tested kernels: widen the 16-bit gradients,
// AdamWUpdate on the fp32 master weights, round the result. It must equal that composition to the
// bit (on the same ISA), moments included, whether it writes the 16-bit copy with plain or with
// streaming stores (forced here; large updates pick streaming), and with the copy starting at
// every offset from the vector alignment streaming needs (the loop then starts with a partial
// vector).
TEST_P(AdamWTest, MixedIsBitwiseWidenThenUpdateThenRound) {
  for (bool stream : {false, true}) {
    ScopedMixedStreamThreshold threshold(stream ? 0 : int64_t{1} << 62);
    for (int offset : {0, 1, 5, 15}) {
      for (DType type : {DType::kBF16, DType::kF16}) {
        for (bool adamw_mode : {true, false}) {
          for (int64_t n :
               {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{1000}, (int64_t{1} << 17) + 3}) {
            const std::string where =
                std::string(type == DType::kBF16 ? "bf16" : "fp16") +
                (adamw_mode ? " adamw" : " adam") + " n=" + std::to_string(n) +
                (stream ? " streaming" : " plain") + " offset " + std::to_string(offset);
            auto master = RandomFloats(n, 21), m = RandomFloats(n, 22, -0.1f, 0.1f);
            auto v = RandomFloats(n, 23, 0.f, 0.01f);
            // Loss-scaled gradients, as fp16 training stores them; grad_scale unscales.
            const auto g32 = RandomFloats(n, 24, -512.f, 512.f);
            std::vector<uint16_t> g16(n);
            FloatToHalf(type, g16.data(), g32.data(), n);
            AdamWArgs a = Args(adamw_mode, 2);
            a.grad_scale = 1.0 / 1024;

            std::vector<float> widened(n);
            HalfToFloat(type, widened.data(), g16.data(), n);
            auto want_master = master, want_m = m, want_v = v;
            AdamWUpdate(want_master.data(), widened.data(), want_m.data(), want_v.data(), n, a);
            std::vector<uint16_t> want16(n);
            FloatToHalf(type, want16.data(), want_master.data(), n);

            // The copy starts `offset` elements past a 64-byte boundary, with sentinels before
            // and after it.
            std::vector<uint16_t> storage(n + offset + 3 + 32, 0x5555);
            const auto skew = reinterpret_cast<uintptr_t>(storage.data()) % 64 / 2;
            uint16_t* base = storage.data() + (skew == 0 ? 0 : 32 - skew);
            uint16_t* p16 = base + offset;
            master.push_back(-7.f);
            AdamWUpdateMixed(master.data(), g16.data(), m.data(), v.data(), p16, n, a, type);
            EXPECT_EQ(master[n], -7.f) << where;
            master.pop_back();
            EXPECT_TRUE(BitwiseEqual(master, want_master)) << where;
            EXPECT_TRUE(BitwiseEqual(m, want_m)) << where;
            EXPECT_TRUE(BitwiseEqual(v, want_v)) << where;
            for (int64_t i = 0; i < n; ++i) {
              ASSERT_EQ(p16[i], want16[i]) << where << " element " << i;
            }
            for (int i = 0; i < offset; ++i) ASSERT_EQ(base[i], 0x5555) << where << " before";
            for (int64_t i = n; i < n + 3; ++i) {
              ASSERT_EQ(p16[i], 0x5555) << where << " wrote past n";
            }
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, AdamWTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

// ---- Parity with PyTorch ----------------------------------------------------------------------
// testdata/adamw_torch_golden.txt holds torch.optim.AdamW / Adam trajectories (3 steps from m = v
// = 0) written by testdata/make_adamw_golden.py with torch 1.13.

struct GoldenCase {
  std::map<std::string, double> hparams;             // adamw, lr, beta1, beta2, eps, wd, n, steps
  std::map<std::string, std::vector<float>> arrays;  // p0, g1, p1, m1, v1, ...
};

std::vector<GoldenCase> ReadGolden(const std::string& path) {
  std::ifstream in(path);
  std::vector<GoldenCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string head;
    words >> head;
    if (head == "case") {
      cases.emplace_back();
      std::string kv;
      words >> kv;  // the case name
      while (words >> kv) {
        const auto eq = kv.find('=');
        cases.back().hparams[kv.substr(0, eq)] = std::stod(kv.substr(eq + 1));
      }
    } else if (!cases.empty()) {
      std::vector<float>& values = cases.back().arrays[head];
      double x;
      while (words >> x) values.push_back(static_cast<float>(x));
    }
  }
  return cases;
}

// Max difference in units in the last place of the PyTorch value.
double MaxUlps(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double ulp = std::nextafter(std::fabs(want[i]), INFINITY) - std::fabs(want[i]);
    const double u = std::fabs(static_cast<double>(got[i]) - want[i]) / ulp;
    worst = std::max(worst, u);
  }
  return worst;
}

class AdamWTorchParityTest : public ::testing::TestWithParam<Isa> {
 protected:
  ScopedMaxIsa isa_{GetParam()};
};

// AVX2 / AVX-512: same scalars, same operation order and the same fused multiply-adds as ATen, so
// the results agree to the ulp (1 ulp of slack covers ATen's scalar tail loop). The scalar build
// has no FMA instruction and rounds the products separately: m = β1·m + (1 − β1)·g then differs
// by ~1 ulp of the larger term, which can be hundreds of ulps of m where the terms cancel; check
// it with the tolerances of the float64 comparison above instead.
constexpr double kMaxUlps = 1;

TEST_P(AdamWTorchParityTest, MatchesTorchOptimTrajectories) {
  const auto cases = ReadGolden("kernels/adamw/testdata/adamw_torch_golden.txt");
  ASSERT_EQ(cases.size(), 3u);
  for (const GoldenCase& c : cases) {
    const auto& h = c.hparams;
    const int64_t n = static_cast<int64_t>(h.at("n"));
    std::vector<float> p = c.arrays.at("p0"), m(n, 0.f), v(n, 0.f);
    const std::string mode = h.at("adamw") != 0 ? "adamw" : "adam";
    for (int step = 1; step <= static_cast<int>(h.at("steps")); ++step) {
      AdamWArgs a;
      a.lr = h.at("lr");
      a.beta1 = h.at("beta1");
      a.beta2 = h.at("beta2");
      a.eps = h.at("eps");
      a.weight_decay = h.at("wd");
      a.bias_correction1 = 1 - std::pow(a.beta1, step);
      a.bias_correction2 = 1 - std::pow(a.beta2, step);
      a.adamw_mode = h.at("adamw") != 0;
      const std::string s = std::to_string(step);
      AdamWUpdate(p.data(), c.arrays.at("g" + s).data(), m.data(), v.data(), n, a);
      const std::string where = mode + " lr=" + std::to_string(a.lr) + " step " + s;
      if (GetParam() == Isa::kScalar) {
        const auto& want_p = c.arrays.at("p" + s);
        EXPECT_TRUE(AllClose(p, {want_p.begin(), want_p.end()}, kParamAbsTol, kParamRelTol));
        const auto& want_m = c.arrays.at("m" + s);
        EXPECT_TRUE(AllClose(m, {want_m.begin(), want_m.end()}, kMomentAbsTol, kMomentRelTol));
        const auto& want_v = c.arrays.at("v" + s);
        // In Adam (L2) mode g' = g + wd·p can cancel too; v = ... + (1 − β2)·g'² then inherits
        // an absolute error ~(1 − β2)·2|g'|·ulp(|g| + |wd·p|) < 1e-12.
        EXPECT_TRUE(AllClose(v, {want_v.begin(), want_v.end()}, 1e-12, kMomentRelTol));
        continue;
      }
      EXPECT_LE(MaxUlps(p, c.arrays.at("p" + s)), kMaxUlps) << where;
      EXPECT_LE(MaxUlps(m, c.arrays.at("m" + s)), kMaxUlps) << where;
      EXPECT_LE(MaxUlps(v, c.arrays.at("v" + s)), kMaxUlps) << where;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, AdamWTorchParityTest, ::testing::ValuesIn(testing::TestIsas()),
                         testing::IsaTestName);

}  // namespace
}  // namespace dstrain::kernels
