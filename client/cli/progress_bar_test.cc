#include "client/cli/progress_bar.h"

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
