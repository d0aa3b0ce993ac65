#include "worker/pipe/executor.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_macros.h"
#include "worker/pipe/schedule.h"

namespace dstrain::pipe {

using tensor::Tensor;
using tensor::View;

namespace {

// Activations flow to the next stage, gradients to the previous one; the tags keep the two
// directions of one pair of ranks apart.
constexpr int kActivationTag = 1;
constexpr int kGradTag = 2;
constexpr int kEvalTag = 4;  // evaluation's activations (3: the trainer's model gather)

}  // namespace

absl::StatusOr<GridGroups> BuildGroups(comm::Communicator& world, const Topology& topology,
                                       const comm::CommOptions& options) {
  GridGroups groups;
  for (int s = 0; s < topology.stages(); ++s) {
    DT_ASSIGN_OR_RETURN(auto group,
                        world.Split(topology.StageRanks(s), absl::StrCat("data.", s), options));
    if (group != nullptr) groups.data = std::move(group);
  }
  for (int d = 0; d < topology.data_parallel_size(); ++d) {
    const std::vector<int> ranks = topology.PipelineRanks(d);
    DT_ASSIGN_OR_RETURN(auto group, world.Split(ranks, absl::StrCat("pipe.", d), options));
    if (group != nullptr) groups.pipe = std::move(group);
    if (topology.stages() == 1) continue;
    DT_ASSIGN_OR_RETURN(
        auto tied, world.Split({ranks.front(), ranks.back()}, absl::StrCat("tied.", d), options));
    if (tied != nullptr) groups.tied = std::move(tied);
  }
  return groups;
}

Executor::Executor(engine::Engine* engine, comm::Communicator* pipe, int stage, int stages,
                   comm::CommOptions options)
    : engine_(*engine), pipe_(*pipe), stage_(stage), stages_(stages), options_(options) {}

Executor::~Executor() {
  // Buffers are about to be freed: nothing may still read or write them.
  for (SendSlot& slot : sends_) {
    if (slot.work) (void)slot.work->Wait();
  }
  for (auto& work : act_recvs_) {
    if (work) (void)work->Wait();
  }
  if (grad_recv_) (void)grad_recv_->Wait();
}

absl::Status Executor::SendCopy(const View& from, int peer, int tag) {
  device::Ops& ops = engine_.ops();
  SendSlot* slot = nullptr;
  for (SendSlot& s : sends_) {
    if (s.work == nullptr || s.work->IsCompleted()) {
      slot = &s;
      break;
    }
  }
  if (slot == nullptr) slot = &sends_.emplace_back();
  if (slot->work != nullptr) {
    DT_RETURN_IF_ERROR(slot->work->Wait());
    slot->work.reset();
  }
  if (!slot->buffer.defined() || slot->buffer.numel() != from.numel() ||
      slot->buffer.dtype() != from.dtype()) {
    DT_ASSIGN_OR_RETURN(slot->buffer, Tensor::Empty(ops.allocator(), from.dtype(), {from.numel()},
                                                    tensor::MemoryCategory::kCommBuffers));
  }
  const View buffer = slot->buffer.view();
  ops.Copy(buffer, from);
  ops.WaitFor(device::Stream::kComm, device::Stream::kCompute);
  DT_RETURN_IF_ERROR(ops.status());
  DT_ASSIGN_OR_RETURN(
      slot->work,
      pipe_.Send(comm::CommBuffer{buffer.data(), buffer.numel(), buffer.dtype(), buffer.device(),
                                  ops.NativeStream(device::Stream::kComm)},
                 peer, tag, options_));
  counting_->bytes_sent += static_cast<int64_t>(buffer.bytes());
  return absl::OkStatus();
}

absl::Status Executor::PostRecv(const View& into, int peer, int tag,
                                std::unique_ptr<comm::Work>& work) {
  device::Ops& ops = engine_.ops();
  // The computation that last read `into` (a backward pass) comes first.
  ops.WaitFor(device::Stream::kComm, device::Stream::kCompute);
  DT_RETURN_IF_ERROR(ops.status());
  DT_ASSIGN_OR_RETURN(
      work, pipe_.Recv(comm::CommBuffer{into.data(), into.numel(), into.dtype(), into.device(),
                                        ops.NativeStream(device::Stream::kComm)},
                       peer, tag, options_));
  return absl::OkStatus();
}

absl::Status Executor::WaitRecv(std::unique_ptr<comm::Work>& work, int64_t bytes) {
  if (work == nullptr) return absl::InternalError("pipeline: a receive was not posted");
  const absl::Time start = absl::Now();
  const absl::Status status = work->Wait();
  counting_->recv_wait_seconds += absl::ToDoubleSeconds(absl::Now() - start);
  work.reset();
  DT_RETURN_IF_ERROR(status);
  counting_->bytes_received += bytes;
  engine_.ops().WaitFor(device::Stream::kCompute, device::Stream::kComm);
  return engine_.ops().status();
}

absl::Status Executor::WaitSends() {
  for (SendSlot& slot : sends_) {
    if (slot.work == nullptr) continue;
    DT_RETURN_IF_ERROR(slot.work->Wait());
    slot.work.reset();
  }
  return absl::OkStatus();
}

absl::Status Executor::PrepareBuffers(int B, int T, int buffers) {
  DT_RETURN_IF_ERROR(engine_.gpt().Prepare(B, T));
  if (static_cast<int>(inputs_.size()) < buffers) {
    inputs_.resize(buffers);
    targets_.resize(buffers);
    act_recvs_.resize(buffers);
  }
  for (int b = 0; b < buffers; ++b) {
    inputs_[b].resize(static_cast<size_t>(B) * T);
    targets_[b].resize(static_cast<size_t>(B) * T);
  }
  return absl::OkStatus();
}

void Executor::Load(const MicroBatchLoader& load, int micro_batch, int b) {
  load(micro_batch, first() ? inputs_[b].data() : nullptr, last() ? targets_[b].data() : nullptr);
}

absl::Status Executor::WaitActivation(int b) {
  return WaitRecv(act_recvs_[b], engine_.gpt().stage_input(b).bytes());
}

absl::StatusOr<engine::StepStats> Executor::TrainBatch(const MicroBatchLoader& load) {
  const config::JobSpec& spec = engine_.spec();
  const int B = static_cast<int>(spec.train_micro_batch_size_per_gpu);
  const int T = spec.data.seq_len;
  const int M = static_cast<int>(spec.gradient_accumulation_steps);
  const int buffers = TrainBuffers(stages_, M, stage_);
  model::Gpt& model = engine_.gpt();
  if (model.activation_plan().buffers < buffers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pipeline stage ", stage_, ": the model holds ", model.activation_plan().buffers,
        " activation buffers, the schedule needs ", buffers));
  }
  DT_RETURN_IF_ERROR(PrepareBuffers(B, T, buffers));

  // Receives go up as soon as their buffer is free: for the first micro-batches now, for later
  // ones when a backward pass frees the buffer.
  int next_activation = 0, next_grad = 0;  // the next micro-batch whose receive is not posted
  auto post_activation = [&]() -> absl::Status {
    if (first() || next_activation >= M) return absl::OkStatus();
    const int b = next_activation % buffers;
    DT_RETURN_IF_ERROR(PostRecv(model.stage_input(b), stage_ - 1, kActivationTag, act_recvs_[b]));
    ++next_activation;
    return absl::OkStatus();
  };
  auto post_grad = [&]() -> absl::Status {
    if (last() || next_grad >= M) return absl::OkStatus();
    DT_RETURN_IF_ERROR(PostRecv(model.stage_output_grad(), stage_ + 1, kGradTag, grad_recv_));
    ++next_grad;
    return absl::OkStatus();
  };
  for (int b = 0; b < buffers; ++b) DT_RETURN_IF_ERROR(post_activation());
  DT_RETURN_IF_ERROR(post_grad());

  std::optional<engine::StepStats> stats;
  const absl::Time start = absl::Now();
  // Host time in a forward or backward pass.
  auto timed = [this](auto&& pass) {
    const absl::Time t0 = absl::Now();
    auto result = pass();
    stats_.compute_seconds += absl::ToDoubleSeconds(absl::Now() - t0);
    return result;
  };
  for (const Instruction& in : TrainSchedule(stages_, M, stage_)) {
    const int b = in.buffer;
    switch (in.op) {
      case Op::kLoadMicroBatch:
        Load(load, in.micro_batch, b);
        break;
      case Op::kRecvActivation:
        DT_RETURN_IF_ERROR(WaitActivation(b));
        break;
      case Op::kForward:
        DT_RETURN_IF_ERROR(timed([&] {
                             return engine_.Forward(first() ? inputs_[b].data() : nullptr,
                                                    last() ? targets_[b].data() : nullptr, b);
                           }).status());
        break;
      case Op::kSendActivation:
        DT_RETURN_IF_ERROR(SendCopy(model.stage_output(b), stage_ + 1, kActivationTag));
        break;
      case Op::kRecvGrad:
        DT_RETURN_IF_ERROR(WaitRecv(grad_recv_, model.stage_output_grad().bytes()));
        break;
      case Op::kBackward:
        DT_RETURN_IF_ERROR(timed([&] { return engine_.Backward(b); }));
        DT_RETURN_IF_ERROR(post_activation());         // buffer b is free again
        if (first()) DT_RETURN_IF_ERROR(post_grad());  // nothing to send from it
        break;
      case Op::kSendGrad:
        DT_RETURN_IF_ERROR(SendCopy(model.stage_output_grad(), stage_ - 1, kGradTag));
        DT_RETURN_IF_ERROR(post_grad());
        break;
      case Op::kReduceTiedGrads:
      case Op::kReduceGrads:
        break;  // inside Engine::Step, in this order
      case Op::kOptimizerStep: {
        DT_RETURN_IF_ERROR(WaitSends());
        stats_.schedule_seconds += absl::ToDoubleSeconds(absl::Now() - start);
        DT_ASSIGN_OR_RETURN(stats, engine_.Step());
        break;
      }
    }
  }
  if (!stats.has_value()) {
    return absl::InternalError(absl::StrCat("pipeline stage ", stage_, ": ", M,
                                            " micro-batches did not complete an optimizer step"));
  }
  return *stats;
}

absl::StatusOr<double> Executor::EvalBatches(const View& params, int micro_batches,
                                             const MicroBatchLoader& load) {
  if (micro_batches <= 0) return 0.0;
  const config::JobSpec& spec = engine_.spec();
  const int B = static_cast<int>(spec.train_micro_batch_size_per_gpu);
  const int T = spec.data.seq_len;
  const int M = micro_batches;
  model::Gpt& model = engine_.gpt();
  // No backward pass holds a buffer here: a buffer is free again once its forward pass ran and
  // its output was copied out, so two (or the one a last stage keeps) suffice.
  const int buffers =
      std::max(1, std::min(InferenceBuffers(stages_, M, stage_), model.activation_plan().buffers));
  DT_RETURN_IF_ERROR(PrepareBuffers(B, T, buffers));
  counting_ = &eval_stats_;
  const absl::StatusOr<double> sum = [&]() -> absl::StatusOr<double> {
    int next = 0;  // the next micro-batch whose receive is not posted
    auto post = [&]() -> absl::Status {
      if (first() || next >= M) return absl::OkStatus();
      const int b = next % buffers;
      DT_RETURN_IF_ERROR(PostRecv(model.stage_input(b), stage_ - 1, kEvalTag, act_recvs_[b]));
      ++next;
      return absl::OkStatus();
    };
    for (int b = 0; b < buffers; ++b) DT_RETURN_IF_ERROR(post());
    double total = 0;
    for (const Instruction& in : InferenceSchedule(stages_, M, stage_)) {
      const int b = in.micro_batch % buffers;
      switch (in.op) {
        case Op::kLoadMicroBatch:
          Load(load, in.micro_batch, b);
          break;
        case Op::kRecvActivation:
          DT_RETURN_IF_ERROR(WaitActivation(b));
          break;
        case Op::kForward: {
          DT_ASSIGN_OR_RETURN(const float loss,
                              model.Forward(params, first() ? inputs_[b].data() : nullptr,
                                            last() ? targets_[b].data() : nullptr, B, T,
                                            /*dloss=*/0.f, b));
          if (last()) {
            total += loss;
            DT_RETURN_IF_ERROR(post());
          }
          break;
        }
        case Op::kSendActivation:
          DT_RETURN_IF_ERROR(SendCopy(model.stage_output(b), stage_ + 1, kEvalTag));
          DT_RETURN_IF_ERROR(post());  // the input was read and the output copied out
          break;
        default:
          return absl::InternalError(
              absl::StrCat("pipeline stage ", stage_, ": ", ToString(in), " in an evaluation"));
      }
    }
    DT_RETURN_IF_ERROR(WaitSends());
    return total;
  }();
  counting_ = &stats_;
  return sum;
}

}  // namespace dstrain::pipe
