#include "worker/pipe/schedule.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dstrain::pipe {
namespace {

// Appends the instructions of micro-batch m's forward pass on `stage` into buffer b.
void Forward(std::vector<Instruction>& out, int stages, int stage, int m, int b) {
  const bool first = stage == 0, last = stage == stages - 1;
  if (first || last) out.push_back({Op::kLoadMicroBatch, m, b});
  if (!first) out.push_back({Op::kRecvActivation, m, b});
  out.push_back({Op::kForward, m, b});
  if (!last) out.push_back({Op::kSendActivation, m, b});
}

// Appends the instructions of micro-batch m's backward pass on `stage` from buffer b.
void Backward(std::vector<Instruction>& out, int stages, int stage, int m, int b) {
  const bool first = stage == 0, last = stage == stages - 1;
  if (!last) out.push_back({Op::kRecvGrad, m, b});
  out.push_back({Op::kBackward, m, b});
  if (!first) out.push_back({Op::kSendGrad, m, b});
}

void CheckArgs(int stages, int micro_batches, int stage) {
  DT_CHECK(stages >= 1 && micro_batches >= 1 && stage >= 0 && stage < stages);
}

}  // namespace

int TrainBuffers(int stages, int micro_batches, int stage) {
  return std::min(stages - stage, micro_batches);
}

int InferenceBuffers(int stages, int micro_batches, int stage) {
  (void)stages, (void)stage;
  return std::min(2, micro_batches);
}

std::vector<Instruction> TrainSchedule(int stages, int micro_batches, int stage) {
  CheckArgs(stages, micro_batches, stage);
  const int buffers = TrainBuffers(stages, micro_batches, stage);
  const int warmup = std::min(stages - stage - 1, micro_batches);
  std::vector<Instruction> out;
  int forward = 0, backward = 0;
  for (int i = 0; i < warmup; ++i, ++forward) {
    Forward(out, stages, stage, forward, forward % buffers);
  }
  for (; forward < micro_batches; ++forward, ++backward) {  // steady state: one each
    Forward(out, stages, stage, forward, forward % buffers);
    Backward(out, stages, stage, backward, backward % buffers);
  }
  for (; backward < micro_batches; ++backward) {  // cool-down
    Backward(out, stages, stage, backward, backward % buffers);
  }
  out.push_back({Op::kReduceTiedGrads});
  out.push_back({Op::kReduceGrads});
  out.push_back({Op::kOptimizerStep});
  return out;
}

std::vector<Instruction> InferenceSchedule(int stages, int micro_batches, int stage) {
  CheckArgs(stages, micro_batches, stage);
  const int buffers = InferenceBuffers(stages, micro_batches, stage);
  std::vector<Instruction> out;
  for (int m = 0; m < micro_batches; ++m) Forward(out, stages, stage, m, m % buffers);
  return out;
}

std::string ToString(const Instruction& i) {
  const char* name = "?";
  switch (i.op) {
    case Op::kLoadMicroBatch:
      name = "LoadMicroBatch";
      break;
    case Op::kRecvActivation:
      name = "RecvActivation";
      break;
    case Op::kForward:
      name = "ForwardPass";
      break;
    case Op::kSendActivation:
      name = "SendActivation";
      break;
    case Op::kRecvGrad:
      name = "RecvGrad";
      break;
    case Op::kBackward:
      name = "BackwardPass";
      break;
    case Op::kSendGrad:
      name = "SendGrad";
      break;
    case Op::kReduceTiedGrads:
      name = "ReduceTiedGrads";
      break;
    case Op::kReduceGrads:
      name = "ReduceGrads";
      break;
    case Op::kOptimizerStep:
      name = "OptimizerStep";
      break;
  }
  if (i.micro_batch < 0) return name;
  return absl::StrCat(name, "(m=", i.micro_batch, ", b=", i.buffer, ")");
}

}  // namespace dstrain::pipe
