// Executor: runs one pipeline stage's schedule (schedule.h) on its engine, instruction by
// instruction, moving activations and their gradients to the neighbouring stages with Send/Recv on
// the pipeline group.
//
//   LoadMicroBatch   the micro-batch's tokens (first stage) and targets (last stage), from the
//                    caller, into host buffers kept per activation buffer
//   RecvActivation   waits for the receive into the model's stage_input(b), posted ahead: as
//                    soon as buffer b is free (its last backward done), so the bytes can arrive
//                    while the stage computes
//   Forward          Engine::Forward into buffer b
//   SendActivation   copies stage_output(b) into a send buffer and sends it without waiting
//   RecvGrad         waits for the receive into stage_output_grad(), posted ahead likewise
//   Backward         Engine::Backward from buffer b
//   SendGrad         copies the input's gradient (left in stage_output_grad()) into a send buffer
//                    and sends it without waiting
//   ReduceTiedGrads,
//   ReduceGrads,
//   OptimizerStep    Engine::Step, which sums the tied embedding's gradients over the pipeline's
//                    ends, reduces over the stage's data-parallel group, and takes the step
//
// Sends never block the schedule: a send buffer is reused only once its send completed, and
// every send is waited for at the end of the step. With receives blocking, schedule.h's
// deadlock-freedom holds for the executor too. Send buffers live under kCommBuffers.
//
// Not thread-safe: the stage's own thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/engine/engine.h"
#include "worker/pipe/topology.h"
#include "worker/tensor/tensor.h"

namespace dstrain::pipe {

// The groups a rank of the data × pipeline grid takes part in. Built collectively over the whole
// job's group by BuildGroups; every member is null where the grid has no such group for the rank
// (tied: a one-stage pipeline).
struct GridGroups {
  std::unique_ptr<comm::Communicator> data;  // this stage's data-parallel ranks
  std::unique_ptr<comm::Communicator> pipe;  // this data rank's stages, in stage order
  std::unique_ptr<comm::Communicator> tied;  // the first and last stage of this pipeline
};

// Collective over `world` (every rank of it calls, with the same topology): Split for every
// stage's, every pipeline's and every tied pair's ranks, in that order.
absl::StatusOr<GridGroups> BuildGroups(comm::Communicator& world, const Topology& topology,
                                       const comm::CommOptions& options);

// Fills micro-batch `micro_batch`'s tokens (B·T each, host memory): inputs on the first stage,
// targets on the last; the pointer a stage does not need is null.
using MicroBatchLoader = std::function<void(int micro_batch, int32_t* inputs, int32_t* targets)>;

// What the point-to-point traffic and the waiting cost, summed over the steps run.
struct ExecutorStats {
  int64_t bytes_sent = 0;        // activations and gradients sent to the neighbours
  int64_t bytes_received = 0;    // likewise received
  double recv_wait_seconds = 0;  // blocked in receives: the stage's share of the bubble
  // Host time in the engine's forward and backward passes (on the CPU engine, which runs them
  // synchronously, the stage's busy time), and in the schedule up to the optimizer step. The
  // stage's bubble fraction is 1 − compute / schedule.
  double compute_seconds = 0;
  double schedule_seconds = 0;
};

class Executor {
 public:
  // `engine` runs stage `stage` of `stages` (its model the stage's slice, SetPipeline done,
  // its activation plan holding TrainBuffers(stages, gas, stage) buffers); `pipe` is the
  // pipeline group (its rank = the stage). Neither is owned; both outlive the executor.
  Executor(engine::Engine* engine, comm::Communicator* pipe, int stage, int stages,
           comm::CommOptions options);
  ~Executor();

  // One optimizer step: TrainSchedule over gradient_accumulation_steps micro-batches. Every
  // stage of the pipeline calls it. Errors: the engine's and the communicator's; after an error
  // the step is lost (the caller ends the run).
  absl::StatusOr<engine::StepStats> TrainBatch(const MicroBatchLoader& load);

  // Evaluation: forward passes only (InferenceSchedule) over `micro_batches` micro-batches on
  // `params`, the stage's flat fp32 parameters in its model's layout on its device (the trainer
  // evaluates on the fp32 weights, gathered). Every stage of the pipeline calls. Returns, on the
  // last stage, the sum of the micro-batches' mean losses (in micro-batch order, in double, as an
  // unsplit model's evaluation sums them); 0 elsewhere. Uses the model's activation buffers (up
  // to two, a receive landing in one while the other computes) and does not touch gradients or
  // the training statistics; its traffic is counted in eval_stats().
  absl::StatusOr<double> EvalBatches(const tensor::View& params, int micro_batches,
                                     const MicroBatchLoader& load);

  const ExecutorStats& stats() const { return stats_; }
  const ExecutorStats& eval_stats() const { return eval_stats_; }

 private:
  struct SendSlot {
    tensor::Tensor buffer;
    std::unique_ptr<comm::Work> work;
  };
  bool first() const { return stage_ == 0; }
  bool last() const { return stage_ == stages_ - 1; }
  // Copies `from` into a free send buffer and sends it to `peer`.
  absl::Status SendCopy(const tensor::View& from, int peer, int tag);
  absl::Status PostRecv(const tensor::View& into, int peer, int tag,
                        std::unique_ptr<comm::Work>& work);
  absl::Status WaitRecv(std::unique_ptr<comm::Work>& work, int64_t bytes);
  absl::Status WaitSends();
  // The model's activations for B × T micro-batches and host buffers (tokens, targets, posted
  // receives) for at least `buffers` activation buffers.
  absl::Status PrepareBuffers(int B, int T, int buffers);
  // Micro-batch `micro_batch` from `load` into buffer b's host buffers.
  void Load(const MicroBatchLoader& load, int micro_batch, int b);
  // Waits for the activation posted into buffer b.
  absl::Status WaitActivation(int b);

  engine::Engine& engine_;
  comm::Communicator& pipe_;
  const int stage_, stages_;
  const comm::CommOptions options_;
  std::vector<SendSlot> sends_;
  std::vector<std::unique_ptr<comm::Work>> act_recvs_;  // per activation buffer
  std::unique_ptr<comm::Work> grad_recv_;
  std::vector<std::vector<int32_t>> inputs_, targets_;  // per activation buffer
  ExecutorStats stats_, eval_stats_;
  ExecutorStats* counting_ = &stats_;  // where the traffic goes: training's or evaluation's
};

}  // namespace dstrain::pipe
