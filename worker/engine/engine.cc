#include "worker/engine/engine.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/model/llmc_format.h"
#include "worker/precision/loss_scaler.h"

namespace dstrain::engine {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Initialize(std::unique_ptr<model::Model> model,
                                                           const config::JobSpec& spec,
                                                           comm::Communicator* dp,
                                                           comm::CommOptions comm_options,
                                                           zero::OffloadContext offload) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<LrSchedule> schedule,
                      LrSchedule::Create(spec.scheduler, spec.optimizer));
  std::unique_ptr<Engine> e(new Engine(std::move(model), spec, dp, std::move(schedule)));
  e->comm_options_ = comm_options;
  // Mixed precision: 16-bit parameters and gradients, fp32 master weights; bf16 runs its
  // matrix products in bf16, fp16 widens to fp32 for them (no fp16 GEMM on most CPUs).
  const zero::StatePrecision precision = zero::StatePrecision::Of(spec);
  e->model_->set_matmul_precision(precision.Matmul());
  e->scaler_ = std::make_unique<precision::LossScaler>(
      spec.fp16.enabled ? precision::LossScalerOptions::FromConfig(spec.fp16)
                        : precision::LossScalerOptions::Static(1.0));
  offload.aio = spec.aio;
  zero::GradientReduction reduction;
  reduction.dtype = precision.communication;
  reduction.prescale = spec.prescale_gradients;
  reduction.predivide = spec.gradient_predivide_factor;
  reduction.accumulate = spec.grad_accum_dtype;
  DT_ASSIGN_OR_RETURN(
      e->zero_, zero::ZeroState::Create(e->model_->layout(), spec.zero, dp, comm_options, &e->ops(),
                                        precision.storage, reduction, std::move(offload)));
  // The initial parameters pass through one full flat buffer on every rank; ZeroState keeps
  // what its stage keeps (stage 3: this rank's chunks only) and the buffer is freed. Every rank
  // initialised the same way, but DeepSpeed broadcasts rank 0's parameters anyway: it makes "all
  // ranks start equal" a fact rather than an assumption (e.g. a rank whose init_from file
  // differs). SetParams does that.
  DT_ASSIGN_OR_RETURN(tensor::Tensor initial, e->InitialParams());
  DT_RETURN_IF_ERROR(e->zero_->SetParams(initial.view()));
  return e;
}

absl::StatusOr<tensor::Tensor> Engine::InitialParams() {
  const int64_t total = model_->layout().total();
  std::vector<float> host;
  DT_ASSIGN_OR_RETURN(
      tensor::Tensor initial,
      tensor::Tensor::Empty(allocator(), DType::kF32, {total}, tensor::MemoryCategory::kOther));
  // On the CPU the tensor itself is host memory; elsewhere the values go through `host`.
  float* values =
      ops().host_accessible() ? initial.data<float>() : (host.resize(total), host.data());
  if (!spec_.model.init_from.empty()) {
    DT_RETURN_IF_ERROR(model_->ImportParams(spec_.model.init_from, values));
  } else {
    model_->InitParams(values, spec_.model.init_seed);
  }
  if (!host.empty()) ops().CopyFromHost(initial.view(), host.data());
  DT_RETURN_IF_ERROR(ops().status());
  return initial;
}

Engine::Engine(std::unique_ptr<model::Model> model, const config::JobSpec& spec,
               comm::Communicator* dp, std::unique_ptr<LrSchedule> schedule)
    : model_(std::move(model)), spec_(spec), dp_(dp), schedule_(std::move(schedule)) {
  gpt_ = model_->AsGpt();
}

absl::StatusOr<tensor::Tensor> Engine::GatherParamsOnDevice(bool keep) {
  tensor::Tensor flat;
  if (keep) {
    DT_ASSIGN_OR_RETURN(flat,
                        tensor::Tensor::Empty(allocator(), DType::kF32, {model_->layout().total()},
                                              tensor::MemoryCategory::kOther));
  }
  DT_RETURN_IF_ERROR(zero_->GetParams(flat.view()));
  return flat;
}

absl::StatusOr<std::vector<float>> Engine::GatherParams(bool keep) {
  std::vector<float> flat(keep ? model_->layout().total() : 0);
  if (ops().host_accessible() || !keep) {
    const tensor::View view =
        keep ? tensor::View::Flat(flat.data(), DType::kF32, flat.size()) : tensor::View();
    DT_RETURN_IF_ERROR(zero_->GetParams(view));
    return flat;
  }
  DT_ASSIGN_OR_RETURN(tensor::Tensor on_device, GatherParamsOnDevice(true));
  ops().CopyToHost(flat.data(), on_device.view());
  DT_RETURN_IF_ERROR(ops().status());
  return flat;
}

void Engine::SetPipeline(const PipelineGroups& groups) {
  pipeline_ = groups;
  if (gpt_ == nullptr) return;  // only the GPT is split into stages (worker/pipe)
  // A last stage that does not embed holds a copy of the tied embedding that the first stage's
  // norm counts already.
  const model::BlockRange range = gpt_->range();
  if (!range.Embeds() && range.HasHead(gpt_->config().n_layer)) zero_->ExcludeFromNorm(0);
}

absl::StatusOr<float> Engine::Forward(const int32_t* inputs, const int32_t* targets, int buffer) {
  if (gpt_ == nullptr) {
    return absl::FailedPreconditionError("Forward(tokens): the model is not the GPT; pass a Batch");
  }
  const int B = static_cast<int>(spec_.train_micro_batch_size_per_gpu);
  const int T = spec_.data.seq_len;
  // DeepSpeed divides the loss by gradient_accumulation_steps before backward and multiplies it
  // by the loss scale (fp16); the fused cross-entropy backward takes those factors together
  // with the 1/(B·T) of the mean.
  const float dloss = static_cast<float>(
      scaler_->scale() /
      (static_cast<double>(B) * T * static_cast<double>(spec_.gradient_accumulation_steps)));
  zero_->BeginMicroBatch();
  DT_ASSIGN_OR_RETURN(float loss, gpt_->Forward(*zero_, inputs, targets, B, T, dloss, buffer));
  ++pending_forwards_;
  loss_sum_ += loss;
  return loss;
}

absl::StatusOr<float> Engine::Forward(const model::Batch& batch, int buffer) {
  zero_->BeginMicroBatch();
  DT_ASSIGN_OR_RETURN(
      float loss,
      model_->Forward(*zero_, batch,
                      model::LossGrad{scaler_->scale(), spec_.gradient_accumulation_steps},
                      buffer));
  ++pending_forwards_;
  loss_sum_ += loss;
  return loss;
}

absl::Status Engine::Backward(int buffer) {
  if (pending_forwards_ == 0) {
    return absl::FailedPreconditionError("Backward() called without a preceding Forward()");
  }
  --pending_forwards_;
  zero_->SetBoundaryBackward(micro_step_ + 1 >= spec_.gradient_accumulation_steps);
  DT_RETURN_IF_ERROR(model_->Backward(*zero_, buffer));
  DT_RETURN_IF_ERROR(zero_->FinishBackward());
  ++micro_step_;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StepStats>> Engine::Step() {
  if (pending_forwards_ != 0) {
    return absl::FailedPreconditionError("Step() called between Forward() and Backward()");
  }
  if (micro_step_ < spec_.gradient_accumulation_steps) return std::optional<StepStats>();

  // Phase 0 (pipeline): the tied embedding's two copies get the sum of both stages' gradients
  // (DeepSpeed's ReduceTiedGrads), so they stay equal.
  if (gpt_ != nullptr && pipeline_.tied != nullptr &&
      (gpt_->range().Embeds() || gpt_->range().HasHead(gpt_->config().n_layer))) {
    DT_RETURN_IF_ERROR(zero_->ReduceParamGrads(*gpt_->layout().Find("wte"), *pipeline_.tied));
  }
  // Phase 1: average the gradients over the data-parallel ranks (stage 0: one all-reduce; stage
  // 1: reduce-scatter to the owning ranks; stages 2-3 reduced during backward).
  DT_RETURN_IF_ERROR(zero_->ReduceGradients());

  // Phase 2: global gradient norm, overflow check and clipping factor. The sum of squares is of
  // the loss-scaled gradients, agreed over all ranks; an inf or NaN anywhere is an overflow
  // (fp16: expected now and then; bf16: a real problem, but DeepSpeed skips it too). Clipping is
  // torch.nn.utils.clip_grad_norm_'s rule, coef = max_norm / (norm + 1e-6) when below 1, on the
  // unscaled norm.
  StepStats stats;
  stats.loss_scale = scaler_->scale();
  DT_ASSIGN_OR_RETURN(double squared_norm, zero_->GradSquaredNorm());
  if (pipeline_.pipe != nullptr && pipeline_.pipe->size() > 1) {
    // Each stage's sum covers its own parameters; the norm is over the whole model.
    float sum = static_cast<float>(squared_norm);
    DT_RETURN_IF_ERROR(zero::AllReduceScalar(*pipeline_.pipe, ops(), &loss_scalar_, &sum,
                                             comm::ReduceOp::kSum, comm_options_));
    squared_norm = sum;
  }
  // fp32 training applies a step with an inf or NaN gradient as DeepSpeed does (its norm says
  // so), unless job.skip_nonfinite_steps asks to skip it like a 16-bit overflow.
  const bool nonfinite = !std::isfinite(squared_norm);
  const bool overflow = nonfinite && (zero_->mixed() || spec_.job.skip_nonfinite_steps);
  // A skipped step reports an infinite norm, as DeepSpeed does; an applied one its own (inf or
  // NaN included).
  stats.grad_norm = overflow ? std::numeric_limits<double>::infinity()
                             : std::sqrt(squared_norm) / stats.loss_scale;
  if (spec_.gradient_clipping > 0.0 && !nonfinite) {
    const double coef = spec_.gradient_clipping / (stats.grad_norm + 1e-6);
    if (coef < 1.0) stats.clip_coef = coef;
  }
  if (overflow) {
    // DeepSpeed's skipped step: no update, no scheduler step, gradients dropped; the scaler
    // backs off (or fails the job at its floor; fp32's static scale of 1 does not move).
    DT_RETURN_IF_ERROR(scaler_->Update(/*overflow=*/true));
    zero_->SkipStep();
    stats.skipped = true;
    ++skipped_steps_;
    stats.lr = schedule_->Lr(applied_steps_);
    return FinishStepStats(stats);
  }

  // Phase 3: the optimizer update, with the clip factor fused into the gradient read.
  const config::OptimizerConfig& opt = spec_.optimizer;
  const int64_t t = applied_steps_ + 1;  // Adam's step count, 1-based: skipped steps not counted
  stats.lr = schedule_->Lr(applied_steps_);
  // OneCycle cycles beta1 (and pins beta2 to 0.99) as DeepSpeed's scheduler does.
  const double beta1 = schedule_->Beta1(applied_steps_).value_or(opt.beta1);
  const double beta2 = schedule_->Beta2(applied_steps_).value_or(opt.beta2);
  device::AdamWArgs args;
  args.lr = stats.lr;
  args.beta1 = beta1;
  args.beta2 = beta2;
  args.eps = opt.eps;
  args.weight_decay = opt.weight_decay;
  args.bias_correction1 = opt.bias_correction ? 1.0 - std::pow(beta1, double(t)) : 1.0;
  args.bias_correction2 = opt.bias_correction ? 1.0 - std::pow(beta2, double(t)) : 1.0;
  args.adamw_mode = opt.adam_w_mode;
  args.grad_scale = stats.clip_coef / stats.loss_scale;
  DT_RETURN_IF_ERROR(zero_->AdamW(args));

  // Phase 4: bring every rank's parameters up to date (stages 1-2 all-gather the updated chunks),
  // zero the gradients, let the loss scaler grow after its window.
  DT_RETURN_IF_ERROR(zero_->FinishStep());
  DT_RETURN_IF_ERROR(scaler_->Update(/*overflow=*/false));
  ++applied_steps_;
  return FinishStepStats(stats);
}

absl::StatusOr<std::optional<StepStats>> Engine::FinishStepStats(StepStats stats) {
  // The reported loss is the mean over the micro-batches and all ranks.
  stats.loss = loss_sum_ / micro_step_;
  if (dp_ != nullptr && dp_->size() > 1) {
    float loss = static_cast<float>(stats.loss);
    DT_RETURN_IF_ERROR(zero::AllReduceScalar(*dp_, ops(), &loss_scalar_, &loss,
                                             comm::ReduceOp::kAvg, comm_options_));
    stats.loss = loss;
  }
  if (pipeline_.pipe != nullptr && pipeline_.pipe->size() > 1) {
    // Only the last stage computes the loss (the others hold 0): every stage reports it.
    float loss = static_cast<float>(stats.loss);
    DT_RETURN_IF_ERROR(zero::AllReduceScalar(*pipeline_.pipe, ops(), &loss_scalar_, &loss,
                                             comm::ReduceOp::kSum, comm_options_));
    stats.loss = loss;
  }
  loss_sum_ = 0.0;
  micro_step_ = 0;
  stats.step = ++global_steps_;
  return std::optional<StepStats>(stats);
}

absl::StatusOr<env::ChunkSource> Engine::SaveStateChunks(std::string* head) {
  if (pending_forwards_ != 0 || micro_step_ != 0) {
    return absl::FailedPreconditionError("SaveState: only between optimizer steps");
  }
  const precision::LossScaler::State scaler = scaler_->state();
  const nlohmann::json counters = {
      {"global_steps", global_steps_},        {"applied_steps", applied_steps_},
      {"skipped_steps", skipped_steps_},      {"loss_scale", scaler.cur_scale},
      {"scaler_iter", scaler.cur_iter},       {"scaler_last_overflow", scaler.last_overflow_iter},
      {"scaler_overflows", scaler.overflows}, {"scaler_hysteresis", scaler.cur_hysteresis}};
  const std::string json = counters.dump();
  // [8-byte length][counters JSON][ZeroState shard: its header, then its buffers].
  const uint64_t n = json.size();
  head->assign(reinterpret_cast<const char*>(&n), sizeof(n));
  *head += json;
  DT_ASSIGN_OR_RETURN(env::ChunkSource shard, zero_->ShardChunks(head));
  auto head_sent = std::make_shared<bool>(false);
  return [head, head_sent, shard = std::move(shard)]() -> absl::StatusOr<absl::string_view> {
    if (!*head_sent) {
      *head_sent = true;
      return absl::string_view(*head);
    }
    return shard();
  };
}

absl::StatusOr<std::string> Engine::SaveState() {
  std::string head;
  DT_ASSIGN_OR_RETURN(const env::ChunkSource chunks, SaveStateChunks(&head));
  std::string out;
  while (true) {
    DT_ASSIGN_OR_RETURN(const absl::string_view chunk, chunks());
    if (chunk.empty()) return out;
    out.append(chunk.data(), chunk.size());
  }
}

absl::Status Engine::BeginResharded() {
  if (pending_forwards_ != 0 || micro_step_ != 0) {
    return absl::FailedPreconditionError("loading a checkpoint: only between optimizer steps");
  }
  return zero_->BeginStoreOwned();
}

absl::Status Engine::FinishResharded(const nlohmann::json& counters, bool same_precision) {
  DT_RETURN_IF_ERROR(zero_->FinishStoreOwned());
  RestoreCounters(counters, same_precision);
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> Engine::ReadCounters(env::ByteSource& state) {
  // The counters are a small JSON object; a length beyond 1 MiB means a damaged shard.
  constexpr uint64_t kMaxCounterBytes = 1 << 20;
  uint64_t n = 0;
  DT_RETURN_IF_ERROR(state.Read(&n, sizeof(n)));
  if (n > kMaxCounterBytes || n > state.remaining()) {
    return absl::DataLossError(absl::StrCat("engine state: bad counters length ", n));
  }
  std::string json(n, '\0');
  DT_RETURN_IF_ERROR(state.Read(json.data(), n));
  nlohmann::json counters = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!counters.is_object()) return absl::DataLossError("engine state: bad counters");
  return counters;
}

absl::Status Engine::LoadState(absl::string_view state) {
  env::StringSource source(state);
  DT_RETURN_IF_ERROR(LoadState(source));
  if (source.remaining() != 0) {
    return absl::DataLossError(absl::StrCat("engine state: ", source.remaining(), " extra bytes"));
  }
  return FinishLoad();
}

absl::Status Engine::LoadState(env::ByteSource& state) {
  if (pending_forwards_ != 0 || micro_step_ != 0) {
    return absl::FailedPreconditionError("LoadState: only between optimizer steps");
  }
  DT_ASSIGN_OR_RETURN(const nlohmann::json counters, ReadCounters(state));
  DT_RETURN_IF_ERROR(zero_->LoadShard(state));
  RestoreCounters(counters, /*restore_scaler=*/true);
  return absl::OkStatus();
}

absl::Status Engine::FinishLoad() { return zero_->GatherAfterLoad(); }

void Engine::RestoreCounters(const nlohmann::json& counters, bool restore_scaler) {
  global_steps_ = counters.value("global_steps", int64_t{0});
  applied_steps_ = counters.value("applied_steps", int64_t{0});
  skipped_steps_ = counters.value("skipped_steps", int64_t{0});
  if (restore_scaler) {
    precision::LossScaler::State scaler;
    scaler.cur_scale = counters.value("loss_scale", 1.0);
    scaler.cur_iter = counters.value("scaler_iter", int64_t{0});
    scaler.last_overflow_iter = counters.value("scaler_last_overflow", int64_t{-1});
    scaler.overflows = counters.value("scaler_overflows", int64_t{0});
    scaler.cur_hysteresis = counters.value("scaler_hysteresis", 1);
    scaler_->Restore(scaler);
  }
  loss_sum_ = 0.0;
}

absl::StatusOr<float> Engine::EvalLoss(const int32_t* inputs, const int32_t* targets, int B,
                                       int T) {
  if (gpt_ == nullptr) {
    return absl::FailedPreconditionError(
        "EvalLoss(tokens): the model is not the GPT; pass a Batch");
  }
  zero_->SetTraining(false);
  absl::StatusOr<float> loss = gpt_->Forward(*zero_, inputs, targets, B, T, /*dloss=*/0.f);
  zero_->SetTraining(true);
  return loss;
}

absl::StatusOr<float> Engine::EvalLoss(const model::Batch& batch) {
  zero_->SetTraining(false);
  absl::StatusOr<float> loss = model_->Forward(*zero_, batch, std::nullopt);
  zero_->SetTraining(true);
  return loss;
}

}  // namespace dstrain::engine
