// Every schedule for every stages <= 8 and micro-batches <= 16, executed together with
// non-blocking sends and blocking receives: nothing deadlocks, every send meets exactly one
// receive in the same order on each channel, each micro-batch goes forward before it goes
// backward on every stage, and the activations in flight never exceed the stage's buffers (1F1B:
// stages − stage) nor reuse a buffer still in flight.
#include "worker/pipe/schedule.h"

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace dstrain::pipe {
namespace {

// A message channel: (from, to, is_grad).
using Channel = std::tuple<int, int, bool>;

// Runs every stage's list, each as far as it can, until all finish or none can move. Returns ""
// or what went wrong.
std::string Execute(const std::vector<std::vector<Instruction>>& programs, int S) {
  std::vector<size_t> pc(S, 0);
  std::map<Channel, std::vector<int>> sent;  // micro-batches sent, in order
  std::map<Channel, size_t> received;        // how many of them were received
  for (bool moved = true; moved;) {
    moved = false;
    for (int s = 0; s < S; ++s) {
      while (pc[s] < programs[s].size()) {
        const Instruction& in = programs[s][pc[s]];
        if (in.op == Op::kSendActivation) sent[{s, s + 1, false}].push_back(in.micro_batch);
        if (in.op == Op::kSendGrad) sent[{s, s - 1, true}].push_back(in.micro_batch);
        if (in.op == Op::kRecvActivation || in.op == Op::kRecvGrad) {
          const bool grad = in.op == Op::kRecvGrad;
          const Channel c{grad ? s + 1 : s - 1, s, grad};
          const size_t k = received[c];
          if (k >= sent[c].size()) break;  // blocks until the peer sends
          if (sent[c][k] != in.micro_batch) {
            return absl::StrCat("stage ", s, " receives m=", in.micro_batch, " but the ", k,
                                "th message on its channel carries m=", sent[c][k]);
          }
          ++received[c];
        }
        ++pc[s];
        moved = true;
      }
    }
  }
  for (int s = 0; s < S; ++s) {
    if (pc[s] < programs[s].size()) {
      return absl::StrCat("deadlock: stage ", s, " stuck at ", ToString(programs[s][pc[s]]));
    }
  }
  for (const auto& [c, ms] : sent) {
    if (received[c] != ms.size()) return "a message was sent and never received";
  }
  return "";
}

TEST(TrainSchedule, EveryShapeRunsWithoutDeadlockAndWithinItsBuffers) {
  for (int S = 1; S <= 8; ++S) {
    for (int M = 1; M <= 16; ++M) {
      SCOPED_TRACE(absl::StrCat("stages ", S, ", micro-batches ", M));
      std::vector<std::vector<Instruction>> programs;
      for (int s = 0; s < S; ++s) {
        programs.push_back(TrainSchedule(S, M, s));
        const std::vector<Instruction>& p = programs.back();
        const int buffers = TrainBuffers(S, M, s);
        ASSERT_LE(buffers, S - s);
        std::set<int> forwarded, backwarded;
        std::map<int, int> in_flight;  // buffer -> micro-batch
        for (const Instruction& in : p) {
          if (in.op == Op::kForward) {
            ASSERT_TRUE(forwarded.insert(in.micro_batch).second) << "two forwards";
            ASSERT_GE(in.buffer, 0);
            ASSERT_LT(in.buffer, buffers);
            ASSERT_EQ(in_flight.count(in.buffer), 0u) << "buffer " << in.buffer << " still in use";
            in_flight[in.buffer] = in.micro_batch;
            ASSERT_LE(static_cast<int>(in_flight.size()), S - s);
          }
          if (in.op == Op::kBackward) {
            ASSERT_TRUE(forwarded.count(in.micro_batch)) << "backward before forward";
            ASSERT_TRUE(backwarded.insert(in.micro_batch).second) << "two backwards";
            ASSERT_EQ(in_flight[in.buffer], in.micro_batch);
            in_flight.erase(in.buffer);
          }
        }
        ASSERT_EQ(static_cast<int>(forwarded.size()), M);
        ASSERT_EQ(static_cast<int>(backwarded.size()), M);
        // The step ends with the reductions and the update, in that order.
        ASSERT_GE(p.size(), 3u);
        EXPECT_EQ(p[p.size() - 3].op, Op::kReduceTiedGrads);
        EXPECT_EQ(p[p.size() - 2].op, Op::kReduceGrads);
        EXPECT_EQ(p.back().op, Op::kOptimizerStep);
      }
      EXPECT_EQ(Execute(programs, S), "");
    }
  }
}

TEST(TrainSchedule, OneFOneBShape) {
  // Stage 0 of 4 with 6 micro-batches: 3 warm-up forwards, then alternating, then 3 backwards.
  std::vector<std::string> ops;
  for (const Instruction& in : TrainSchedule(4, 6, 0)) {
    if (in.op == Op::kForward) ops.push_back(absl::StrCat("F", in.micro_batch));
    if (in.op == Op::kBackward) ops.push_back(absl::StrCat("B", in.micro_batch));
  }
  EXPECT_EQ(ops, (std::vector<std::string>{"F0", "F1", "F2", "F3", "B0", "F4", "B1", "F5", "B2",
                                           "B3", "B4", "B5"}));
  // The last stage alternates from the start; a single stage needs no communication.
  const auto last = TrainSchedule(4, 2, 3);
  EXPECT_EQ(ToString(last[0]), "LoadMicroBatch(m=0, b=0)");
  EXPECT_EQ(ToString(last[1]), "RecvActivation(m=0, b=0)");
  EXPECT_EQ(ToString(last[2]), "ForwardPass(m=0, b=0)");
  EXPECT_EQ(ToString(last[3]), "BackwardPass(m=0, b=0)");
  EXPECT_EQ(ToString(last[4]), "SendGrad(m=0, b=0)");
  for (const Instruction& in : TrainSchedule(1, 3, 0)) {
    EXPECT_NE(in.op, Op::kSendActivation);
    EXPECT_NE(in.op, Op::kRecvGrad);
  }
}

TEST(InferenceSchedule, EveryShapeRunsInOrderWithoutDeadlock) {
  for (int S = 1; S <= 8; ++S) {
    for (int M = 1; M <= 16; ++M) {
      SCOPED_TRACE(absl::StrCat("stages ", S, ", micro-batches ", M));
      std::vector<std::vector<Instruction>> programs;
      for (int s = 0; s < S; ++s) {
        programs.push_back(InferenceSchedule(S, M, s));
        int expect = 0;
        for (const Instruction& in : programs.back()) {
          ASSERT_NE(in.op, Op::kBackward);
          if (in.op == Op::kForward) {
            ASSERT_EQ(in.micro_batch, expect++);
            ASSERT_LT(in.buffer, InferenceBuffers(S, M, s));
          }
        }
        ASSERT_EQ(expect, M);
      }
      EXPECT_EQ(Execute(programs, S), "");
    }
  }
}

}  // namespace
}  // namespace dstrain::pipe
