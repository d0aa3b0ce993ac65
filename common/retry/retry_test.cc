#include "common/retry/retry.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/clock/clock.h"
#include "gtest/gtest.h"

namespace dstrain::retry {
namespace {

// Sleeps by moving a FakeClock, and remembers every wait; stops (returns false) at wait number
// `stop_at` when set.
class FakeSleeper final : public Sleeper {
 public:
  explicit FakeSleeper(FakeClock* clock) : clock_(clock) {}
  bool Sleep(absl::Duration d) override {
    waits.push_back(d);
    if (stop_at > 0 && static_cast<int>(waits.size()) == stop_at) return false;
    clock_->Advance(d);
    return true;
  }
  std::vector<absl::Duration> waits;
  int stop_at = 0;

 private:
  FakeClock* clock_;
};

TEST(Classify, EveryCanonicalCodeHasItsClass) {
  using absl::StatusCode;
  const std::vector<std::pair<StatusCode, ErrorClass>> table = {
      {StatusCode::kOk, ErrorClass::kPermanent},
      {StatusCode::kCancelled, ErrorClass::kTransient},
      {StatusCode::kUnknown, ErrorClass::kStateful},
      {StatusCode::kInvalidArgument, ErrorClass::kPermanent},
      {StatusCode::kDeadlineExceeded, ErrorClass::kTransient},
      {StatusCode::kNotFound, ErrorClass::kStateful},
      {StatusCode::kAlreadyExists, ErrorClass::kPermanent},
      {StatusCode::kPermissionDenied, ErrorClass::kPermanent},
      {StatusCode::kResourceExhausted, ErrorClass::kStateful},
      {StatusCode::kFailedPrecondition, ErrorClass::kStateful},
      {StatusCode::kAborted, ErrorClass::kTransient},
      {StatusCode::kOutOfRange, ErrorClass::kPermanent},
      {StatusCode::kUnimplemented, ErrorClass::kPermanent},
      {StatusCode::kInternal, ErrorClass::kStateful},
      {StatusCode::kUnavailable, ErrorClass::kTransient},
      {StatusCode::kDataLoss, ErrorClass::kStateful},
      {StatusCode::kUnauthenticated, ErrorClass::kPermanent},
  };
  ASSERT_EQ(table.size(), 17u);  // every canonical code, 0 to 16
  for (const auto& [code, expected] : table) {
    EXPECT_EQ(Classify(code), expected) << absl::StatusCodeToString(code);
    EXPECT_EQ(IsTransient(code), expected == ErrorClass::kTransient);
    EXPECT_EQ(IsPermanent(code), expected == ErrorClass::kPermanent);
  }
  // A code a newer peer might send is not retried as if transient.
  EXPECT_EQ(Classify(static_cast<StatusCode>(42)), ErrorClass::kStateful);
  EXPECT_TRUE(IsTransient(absl::UnavailableError("coordinator restarting")));
  EXPECT_FALSE(IsTransient(absl::OkStatus()));
}

TEST(Backoff, DoublesUpToTheCapWithoutJitter) {
  Backoff backoff({absl::Milliseconds(100), absl::Milliseconds(1000), 2.0, 0.0}, 1);
  std::vector<absl::Duration> waits;
  for (int i = 0; i < 7; ++i) waits.push_back(backoff.Next());
  const std::vector<absl::Duration> want = {absl::Milliseconds(100),  absl::Milliseconds(200),
                                            absl::Milliseconds(400),  absl::Milliseconds(800),
                                            absl::Milliseconds(1000), absl::Milliseconds(1000),
                                            absl::Milliseconds(1000)};
  EXPECT_EQ(waits, want);
  EXPECT_EQ(backoff.retries(), 7);
  backoff.Reset();
  EXPECT_EQ(backoff.retries(), 0);
  EXPECT_EQ(backoff.Next(), absl::Milliseconds(100));
}

TEST(Backoff, JitterOnlyShortensAndNeverPassesTheCap) {
  const BackoffOptions options{absl::Milliseconds(100), absl::Seconds(2), 2.0, 0.5};
  Backoff backoff(options, 7);
  absl::Duration base = options.initial;
  bool some_shortened = false;
  for (int i = 0; i < 200; ++i) {
    const absl::Duration wait = backoff.Next();
    EXPECT_LE(wait, base) << i;
    EXPECT_GT(wait, base * (1 - options.jitter)) << i;
    EXPECT_LE(wait, options.max);
    some_shortened |= wait < base;
    base = std::min(base * 2, options.max);
  }
  EXPECT_TRUE(some_shortened);
}

TEST(Backoff, SameSeedSameWaitsOtherSeedOtherWaits) {
  const BackoffOptions options;
  Backoff a(options, 3), b(options, 3), c(options, 4);
  std::vector<absl::Duration> wa, wb, wc;
  for (int i = 0; i < 10; ++i) {
    wa.push_back(a.Next());
    wb.push_back(b.Next());
    wc.push_back(c.Next());
  }
  EXPECT_EQ(wa, wb);
  EXPECT_NE(wa, wc);
}

TEST(Backoff, OutOfRangeOptionsAreBroughtIntoRange) {
  Backoff backoff({absl::Seconds(1), absl::Milliseconds(10), 0.5, 3.0}, 1);
  EXPECT_EQ(backoff.options().max, absl::Seconds(1));
  EXPECT_EQ(backoff.options().multiplier, 1.0);
  EXPECT_EQ(backoff.options().jitter, 1.0);
  for (int i = 0; i < 20; ++i) {
    const absl::Duration wait = backoff.Next();
    EXPECT_GE(wait, absl::ZeroDuration());
    EXPECT_LE(wait, absl::Seconds(1));
  }
  Backoff negative({-absl::Seconds(1), absl::Seconds(1), 2.0, 0.0}, 1);
  EXPECT_EQ(negative.Next(), absl::ZeroDuration());
}

TEST(Retry, RetriesTransientErrorsUntilSuccess) {
  FakeClock clock;
  FakeSleeper sleeper(&clock);
  int calls = 0;
  const absl::Status s =
      Retry({{absl::Milliseconds(10), absl::Milliseconds(30), 2.0, 0.0}}, clock, sleeper,
            [&] { return ++calls < 5 ? absl::UnavailableError("down") : absl::OkStatus(); });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(calls, 5);
  const std::vector<absl::Duration> want = {absl::Milliseconds(10), absl::Milliseconds(20),
                                            absl::Milliseconds(30), absl::Milliseconds(30)};
  EXPECT_EQ(sleeper.waits, want);
}

TEST(Retry, OtherErrorsEndAtOnce) {
  FakeClock clock;
  FakeSleeper sleeper(&clock);
  for (absl::Status error : {absl::InvalidArgumentError("bad"), absl::NotFoundError("gone"),
                             absl::InternalError("bug"), absl::ResourceExhaustedError("full")}) {
    int calls = 0;
    EXPECT_EQ(Retry({}, clock, sleeper,
                    [&] {
                      ++calls;
                      return error;
                    }),
              error);
    EXPECT_EQ(calls, 1) << error;
  }
  EXPECT_TRUE(sleeper.waits.empty());
}

TEST(Retry, RespectsTheDeadline) {
  FakeClock clock;
  FakeSleeper sleeper(&clock);
  const absl::Time start = clock.Now();
  RetryOptions options;
  options.backoff = {absl::Milliseconds(100), absl::Seconds(10), 2.0, 0.0};
  options.deadline = start + absl::Milliseconds(1000);
  std::vector<absl::Time> attempts;
  const absl::Status s = Retry(options, clock, sleeper, [&] {
    attempts.push_back(clock.Now());
    return absl::DeadlineExceededError(absl::StrCat("try ", attempts.size()));
  });
  // Waits 100, 200, 400, then the 800 is cut to the 300 left: the last try starts at the
  // deadline, none after it, and the last error comes back.
  const std::vector<absl::Duration> want = {absl::Milliseconds(100), absl::Milliseconds(200),
                                            absl::Milliseconds(400), absl::Milliseconds(300)};
  EXPECT_EQ(sleeper.waits, want);
  ASSERT_EQ(attempts.size(), 5u);
  EXPECT_EQ(attempts.back(), options.deadline);
  for (absl::Time t : attempts) EXPECT_LE(t, options.deadline);
  EXPECT_EQ(s, absl::DeadlineExceededError("try 5"));
}

TEST(Retry, APassedDeadlineStillGetsOneAttempt) {
  FakeClock clock;
  FakeSleeper sleeper(&clock);
  RetryOptions options;
  options.deadline = clock.Now() - absl::Seconds(1);
  int calls = 0;
  EXPECT_EQ(Retry(options, clock, sleeper,
                  [&] {
                    ++calls;
                    return absl::UnavailableError("down");
                  })
                .code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(sleeper.waits.empty());
}

TEST(Retry, AStoppingSleeperEndsTheRetries) {
  FakeClock clock;
  FakeSleeper sleeper(&clock);
  sleeper.stop_at = 2;
  int calls = 0;
  EXPECT_EQ(Retry({}, clock, sleeper,
                  [&] {
                    ++calls;
                    return absl::AbortedError("conflict");
                  })
                .code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(sleeper.waits.size(), 2u);
}

TEST(RealSleeper, Sleeps) {
  const absl::Time before = absl::Now();
  EXPECT_TRUE(RealSleeper::Default()->Sleep(absl::Milliseconds(5)));
  EXPECT_GE(absl::Now() - before, absl::Milliseconds(5));
}

}  // namespace
}  // namespace dstrain::retry
