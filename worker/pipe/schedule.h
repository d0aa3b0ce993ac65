// Pipeline schedules as data: for one stage of a pipeline, the list of instructions it executes
// for one optimizer step, as DeepSpeed's TrainSchedule and InferenceSchedule describe them. A
// pure function of (stages, micro-batches, stage); an executor maps each instruction to an engine
// call.
//
// TrainSchedule is 1F1B (one forward, one backward): stage s first runs
// min(S − s − 1, M) forward passes (the warm-up), then alternates one forward and one backward
// until every micro-batch has gone forward, then runs the backward passes left (the cool-down),
// and ends with the reductions and the optimizer step. At most min(S − s, M) micro-batches are in
// flight on stage s (forward done, backward not yet), so that many activation buffers suffice;
// micro-batch m uses buffer m mod that count.
//
// Communication: a non-last stage sends each forward's output to the next stage, and a non-first
// stage sends each backward's input gradient to the previous one. Sends do not block (the
// executor keeps a send's buffer until it completed) and receives block: under these semantics
// every schedule here is free of deadlock (schedule_test checks every S <= 8, M <= 16).
#pragma once

#include <string>
#include <vector>

namespace dstrain::pipe {

enum class Op {
  kLoadMicroBatch,   // read micro-batch m's inputs (first stage) or targets (last stage)
  kRecvActivation,   // receive micro-batch m's input activation from the previous stage
  kForward,          // forward micro-batch m into buffer b
  kSendActivation,   // send buffer b's output activation to the next stage
  kRecvGrad,         // receive the gradient of buffer b's output from the next stage
  kBackward,         // backward micro-batch m from buffer b; frees the buffer
  kSendGrad,         // send buffer b's input gradient to the previous stage
  kReduceTiedGrads,  // sum the tied embedding's gradients over the stages holding it
  kReduceGrads,      // reduce the gradients over the data-parallel ranks of this stage
  kOptimizerStep,    // the optimizer step
};

struct Instruction {
  Op op;
  int micro_batch = -1;  // -1 for the step-level instructions
  int buffer = -1;       // activation buffer, where the instruction uses one
  bool operator==(const Instruction& o) const {
    return op == o.op && micro_batch == o.micro_batch && buffer == o.buffer;
  }
};

// Activation buffers stage `stage` needs: min(stages − stage, micro_batches) for training; for
// inference min(2, micro_batches) (one micro-batch runs while the next one's input arrives).
int TrainBuffers(int stages, int micro_batches, int stage);
int InferenceBuffers(int stages, int micro_batches, int stage);

// REQUIRES: stages >= 1, micro_batches >= 1, 0 <= stage < stages.
std::vector<Instruction> TrainSchedule(int stages, int micro_batches, int stage);
// Forward passes only (evaluation): load/receive, forward, send, for every micro-batch in order.
std::vector<Instruction> InferenceSchedule(int stages, int micro_batches, int stage);

// "ForwardPass(m=3, b=1)": for logs and test messages.
std::string ToString(const Instruction& instruction);

}  // namespace dstrain::pipe
