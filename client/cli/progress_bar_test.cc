#include "client/cli/progress_bar.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace dstrain::cli {
namespace {

TEST(FormatBar, FillsInProportionWithAHead) {
  EXPECT_EQ(FormatBar(0, 100, 10), "[>         ]");
  EXPECT_EQ(FormatBar(24, 100, 10), "[==>       ]");
  EXPECT_EQ(FormatBar(99, 100, 10), "[=========>]");
  EXPECT_EQ(FormatBar(100, 100, 10), "[==========]");
  EXPECT_EQ(FormatBar(250, 100, 10), "[==========]");  // clamped
  EXPECT_EQ(FormatBar(-5, 100, 4), "[>   ]");
  EXPECT_EQ(FormatBar(5, 0, 4), "[    ]");  // unknown total
  EXPECT_EQ(FormatBar(1, 2, 0), "[]");
}

TEST(FormatEta, Units) {
  EXPECT_EQ(FormatEta(absl::ZeroDuration()), "0s");
  EXPECT_EQ(FormatEta(absl::Seconds(-3)), "0s");
  EXPECT_EQ(FormatEta(absl::Seconds(45)), "45s");
  EXPECT_EQ(FormatEta(absl::Seconds(59.6)), "1m00s");
  EXPECT_EQ(FormatEta(absl::Seconds(185)), "3m05s");
  EXPECT_EQ(FormatEta(absl::Seconds(3600 + 125)), "1h02m");
  EXPECT_EQ(FormatEta(absl::Hours(51)), "2d03h");
  EXPECT_EQ(FormatEta(absl::InfiniteDuration()), "?");
}

TEST(FormatThousands, Groups) {
  EXPECT_EQ(FormatThousands(0), "0");
  EXPECT_EQ(FormatThousands(999), "999");
  EXPECT_EQ(FormatThousands(1234), "1,234");
  EXPECT_EQ(FormatThousands(123456), "123,456");
  EXPECT_EQ(FormatThousands(1234567), "1,234,567");
  EXPECT_EQ(FormatThousands(-1234), "-1,234");
}

TEST(FormatProgressLine, FullLine) {
  ProgressState s;
  s.step = 120;
  s.total = 500;
  s.loss = 2.3141;
  s.tokens_per_second = 1234.4;
  s.seconds_per_step = 185.0 / 380.0;  // 380 steps left -> 185 s
  EXPECT_EQ(FormatProgressLine(s),
            "step 120/500 [=======>                      ] 24% loss 2.314 1,234 tok/s ETA 3m05s");
}

TEST(FormatProgressLine, StepZeroAndNothingElseKnown) {
  ProgressState s;
  s.total = 500;
  EXPECT_EQ(FormatProgressLine(s), "step 0/500 [>                             ] 0%");
}

TEST(FormatProgressLine, UnknownTotalHasNoBarPercentOrEta) {
  ProgressState s;
  s.step = 42;
  s.loss = 3.5;
  s.seconds_per_step = 1.0;
  EXPECT_EQ(FormatProgressLine(s), "step 42 loss 3.5");
  EXPECT_EQ(FormatProgressLine(ProgressState()), "step 0");
}

TEST(FormatProgressLine, DoneShowsFullBarAndZeroEta) {
  ProgressState s;
  s.step = 500;
  s.total = 500;
  s.seconds_per_step = 0.5;
  EXPECT_EQ(FormatProgressLine(s, 40), "step 500/500 [=============] 100% ETA 0s");
}

TEST(FormatProgressLine, WidthShrinksTheBarThenDropsItThenCuts) {
  ProgressState s;
  s.step = 250;
  s.total = 1000;
  s.loss = 2.0;
  s.tokens_per_second = 1e6;
  s.seconds_per_step = 1.0;
  const std::string unbounded = FormatProgressLine(s);
  EXPECT_EQ(unbounded,
            "step 250/1000 [=======>                      ] 25% loss 2 1,000,000 tok/s ETA 12m30s");
  for (int columns : {200, 80, 60, 50, 45, 40, 20, 5}) {
    const std::string line = FormatProgressLine(s, columns);
    EXPECT_LE(static_cast<int>(line.size()), columns) << line;
  }
  // Room for a 10-cell bar: kept, shrunk.
  const int others = static_cast<int>(unbounded.size()) - 30;  // all but the bar's cells
  EXPECT_EQ(FormatProgressLine(s, others + 10),
            "step 250/1000 [==>       ] 25% loss 2 1,000,000 tok/s ETA 12m30s");
  // One column less: the bar goes, the rest stays whole.
  EXPECT_EQ(FormatProgressLine(s, others + 9),
            "step 250/1000 25% loss 2 1,000,000 tok/s ETA 12m30s");
  EXPECT_EQ(FormatProgressLine(s, 16), "step 250/1000 25");
}

TEST(FormatSparkline, ScalesFromTheLowestToTheHighestFiniteValue) {
  EXPECT_EQ(FormatSparkline({}), "");
  EXPECT_EQ(FormatSparkline({4, 3, 2, 1}), "\u2588\u2586\u2583\u2581");
  // 8 levels over [1, 8]: one per block.
  EXPECT_EQ(FormatSparkline({1, 2, 3, 4, 5, 6, 7, 8}),
            "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588");
  EXPECT_EQ(FormatSparkline({2.5, 2.5}), "\u2581\u2581");
  EXPECT_EQ(FormatSparkline({3, NAN, 1, INFINITY}), "\u2588!\u2581!");
}

TEST(FormatProgressLine, LossSparklineFirstToGoWhenNarrow) {
  ProgressState s;
  s.step = 4;
  s.total = 100;
  s.loss = 1.0;
  s.loss_history = {4, 3, 2, 1};
  const std::string wide = FormatProgressLine(s);
  EXPECT_EQ(wide, "step 4/100 [=>                            ] 4% loss 1 \u2588\u2586\u2583\u2581");
  // Columns, not bytes: the 4 cells are 12 bytes.
  const int columns = static_cast<int>(wide.size()) - 8;
  EXPECT_EQ(FormatProgressLine(s, columns), wide);
  EXPECT_EQ(FormatProgressLine(s, columns - 1),
            "step 4/100 [=>                            ] 4% loss 1");
  // Only the last kSparklineCells steps are drawn; one value draws nothing.
  s.loss_history.assign(kSparklineCells + 5, 1.0);
  s.loss_history.front() = 9;  // dropped, so every drawn cell is the lowest block
  std::string all_low;
  for (int i = 0; i < kSparklineCells; ++i) all_low += "\u2581";
  EXPECT_EQ(FormatProgressLine(s), absl::StrCat("step 4/100 [=>                            ] 4% "
                                                "loss 1 ",
                                                all_low));
  s.loss_history = {1.0};
  EXPECT_EQ(FormatProgressLine(s), "step 4/100 [=>                            ] 4% loss 1");
}

TEST(StepRateEstimator, AveragesOverTheWindowAndRestartsOnRerun) {
  StepRateEstimator rate(3);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_FALSE(rate.SecondsPerStep().has_value());
  rate.Add(10, t0);
  EXPECT_FALSE(rate.SecondsPerStep().has_value());
  rate.Add(12, t0 + absl::Seconds(4));
  EXPECT_DOUBLE_EQ(*rate.SecondsPerStep(), 2.0);
  rate.Add(13, t0 + absl::Seconds(5));
  rate.Add(14, t0 + absl::Seconds(6));  // window 3: (12, 4s) .. (14, 6s)
  EXPECT_DOUBLE_EQ(*rate.SecondsPerStep(), 1.0);
  // A restart re-runs steps from a checkpoint: start over.
  rate.Add(11, t0 + absl::Seconds(30));
  EXPECT_FALSE(rate.SecondsPerStep().has_value());
  rate.Add(12, t0 + absl::Seconds(30));  // same time: no rate
  EXPECT_FALSE(rate.SecondsPerStep().has_value());
}

}  // namespace
}  // namespace dstrain::cli
