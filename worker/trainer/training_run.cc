#include "worker/trainer/training_run.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/paths/beneath.h"
#include "common/random/rng.h"
#include "common/status/status_macros.h"
#include "common/tls/tls.h"
#include "worker/checkpoint/commit.h"
#include "worker/data/byte_tokenizer.h"
#include "worker/data/prepare.h"
#include "worker/env/env.h"
#include "worker/model/gpt.h"
#include "worker/model/llmc_format.h"
#include "worker/model/param_access.h"
#include "worker/trainer/drain.h"
#include "worker/trainer/job_model.h"
#include "worker/trainer/sampler.h"
#include "worker/zero/estimate.h"
#include "worker/zero/zero_state.h"

namespace dstrain::trainer {
namespace {

// "params 1.2 + grads 1.2 + optimizer_state 2.4 MB": the categories holding memory now.
std::string DescribeMemory(const tensor::MemoryStats& mem) {
  std::string out;
  for (int i = 0; i < tensor::kNumMemoryCategories; ++i) {
    if (mem.current[i] == 0) continue;
    absl::StrAppend(&out, out.empty() ? "" : " + ",
                    tensor::MemoryCategoryName(static_cast<tensor::MemoryCategory>(i)), " ",
                    absl::StrFormat("%.1f", mem.current[i] / 1e6));
  }
  return out + " MB";
}

std::string DescribeSample(const std::vector<int32_t>& ids, bool bpe) {
  // Byte-level vocabularies decode to text; BPE ids (whose first 256 are not bytes) and others are
  // shown as ids (the trainer has no tokenizer files).
  const bool bytes = !bpe && std::all_of(ids.begin(), ids.end(), [](int32_t t) { return t < 256; });
  if (bytes) return data::ByteTokenizer::Decode(std::vector<uint16_t>(ids.begin(), ids.end()));
  std::string s;
  for (int32_t t : ids) absl::StrAppend(&s, s.empty() ? "" : " ", t);
  return s;
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

TrainingRun::TrainingRun(const config::JobSpec& spec, const TrainOptions& options)
    : spec_(spec),
      options_(options),
      rank_(options.rank),
      world_(spec.job.world_size),
      leader_(options.rank == 0),
      log_(options.log),
      B_(static_cast<int>(spec.train_micro_batch_size_per_gpu)),
      T_(spec.data.seq_len),
      gas_(spec.gradient_accumulation_steps) {
  if (!leader_) {
    null_log_ = std::fopen("/dev/null", "w");
    log_ = null_log_;
  }
}

TrainingRun::~TrainingRun() {
  // The engine's buffers (and any collective in flight on them) go before the groups do, and
  // the groups split from the job's before it.
  executor_.reset();
  engine_.reset();
  tied_.reset();
  pipe_.reset();
  dp_.reset();
  world_group_.reset();
  if (null_log_ != nullptr) std::fclose(null_log_);
}

// Phase 1: the data-parallel group, meeting through the rendezvous store: a TCP store served by
// the launcher (standalone mode) or the coordinator's (service mode), scoped by the attempt's
// prefix.
absl::Status TrainingRun::SetUpGroup() {
  if (options_.drain_on_sigusr1) StartDrainWatcher();  // before this process starts threads
  // Under an agent, nothing outside --data-root is read or written: every path the job names
  // must resolve beneath it, before any is opened. No root under an agent confines nothing, so
  // it is refused (docs/security.md, "Paths").
  if (!options_.service.job_id.empty() && options_.service.data_root.empty()) {
    return absl::FailedPreconditionError(
        "--job-id without --data-root: a trainer under a worker agent reads and writes only "
        "beneath a data root");
  }
  if (!options_.service.data_root.empty()) {
    const std::pair<const std::string*, const char*> paths[] = {
        {&spec_.data.train, "data.train"},
        {&spec_.data.val, "data.val"},
        {&spec_.model.init_from, "model.init_from"},
        {&spec_.job.checkpoint_dir, "job.checkpoint_dir"},
        {&spec_.zero.offload_optimizer.nvme_path, "zero_optimization.offload_optimizer.nvme_path"},
        {&spec_.zero.offload_param.nvme_path, "zero_optimization.offload_param.nvme_path"}};
    for (const auto& [path, field] : paths) {
      if (path->empty()) continue;
      DT_RETURN_IF_ERROR(paths::CheckBeneath(options_.service.data_root, *path, field));
    }
  }
  if (rank_ < 0 || rank_ >= world_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, " is outside job.world_size ", world_));
  }
  if (world_ > 1 && options_.rendezvous.kind == Rendezvous::Kind::kNone) {
    return absl::InvalidArgumentError(absl::StrCat("job.world_size: the job asks for ", world_,
                                                   " ranks; run it with `dstrain launch --nproc ",
                                                   world_, "` (or give --store)"));
  }
  threads_ = ConfigureThreads(options_.threads);
  auto device = device::RankDevice::Open(DeviceOptions());
  if (!device.ok()) {
    // The job (or the placement) asks for a device this process does not have: bad input.
    const bool flag = options_.device.has_value();
    return absl::InvalidArgumentError(
        absl::StrCat(flag ? "--device " : "job.device: \"",
                     config::JobDeviceName(options_.device.value_or(spec_.job.device)),
                     flag ? ": " : "\": ", device.status().message()));
  }
  device_ = std::move(*device);
  if (world_ > 1) {
    DT_ASSIGN_OR_RETURN(store_, ConnectStore(options_.rendezvous, options_.comm_timeout));
    std::string where;
    if (pipelined()) {
      DT_ASSIGN_OR_RETURN(world_group_, device_->JoinGroup(store_.get(), rank_, world_, "world",
                                                           options_.comm_timeout));
      DT_ASSIGN_OR_RETURN(const pipe::Topology grid,
                          pipe::Topology::Create(world_, spec_.pipeline.stages));
      DT_ASSIGN_OR_RETURN(
          pipe::GridGroups groups,
          pipe::BuildGroups(*world_group_, grid, comm::CommOptions{options_.comm_timeout}));
      dp_ = std::move(groups.data);
      pipe_ = std::move(groups.pipe);
      tied_ = std::move(groups.tied);
      stage_ = grid.StageOf(rank_);
      data_rank_ = grid.DataRankOf(rank_);
      where = absl::StrCat(", pipeline stage ", stage_, " of ", grid.stages(), ", data rank ",
                           data_rank_);
    } else {
      DT_ASSIGN_OR_RETURN(
          dp_, device_->JoinGroup(store_.get(), rank_, world_, "dp", options_.comm_timeout));
      data_rank_ = rank_;
    }
    // Every rank says once that it is in its group, on the options' stream even where its
    // progress log is silenced: a supervisor (the worker agent) takes this line as "running".
    std::FILE* out = options_.log != nullptr ? options_.log : stdout;
    absl::FPrintF(out, "rank %d of %d: joined the data-parallel group (%s, %s%s)\n", rank_, world_,
                  device_->ops().Describe(), dp_->backend(), where);
    std::fflush(out);
  }
  if (!options_.service.catalog.empty() && leader_) {
    // As the worker that started this trainer (its certificate, from the environment).
    DT_ASSIGN_OR_RETURN(tls::TlsConfig tls, tls::ConfigFromProcessEnvironment(tls::Role::kClient));
    DT_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                        tls::ChannelCredentials(tls));
    catalog_ = std::make_unique<CheckpointCatalog>(options_.service.catalog, std::move(credentials),
                                                   options_.service.job_id, log_);
  }
  return absl::OkStatus();
}

device::RankDeviceOptions TrainingRun::DeviceOptions() const {
  device::RankDeviceOptions o;
  // The agent's placement (--device) wins over the job's wish: it has chosen the slot already.
  const config::JobDevice want = options_.device.value_or(spec_.job.device);
  o.choice = want == config::JobDevice::kCpu    ? device::DeviceChoice::kCpu
             : want == config::JobDevice::kCuda ? device::DeviceChoice::kCuda
                                                : device::DeviceChoice::kAuto;
  o.local_rank = options_.local_rank.value_or(rank_);
  o.memory_limit_bytes = options_.device_memory_limit;
  o.bind_address = options_.bind_address;
  return o;
}

// Phase 2: the loaders. Each rank reads its own share of every batch; rank 0 also evaluates.
absl::Status TrainingRun::BuildData() {
  DT_ASSIGN_OR_RETURN(auto source, data::DataSource::Open(spec_.data.train));
  // Shards made by `dstrain prepare` name their tokenizer beside them (tokenizer.txt): a model
  // smaller than its vocabulary could never emit some of its tokens, even if these shards hold
  // none of them.
  const std::string shard_dir = env::Dirname(spec_.data.train);
  absl::StatusOr<data::TokenizerInfo> tokenizer = data::ReadTokenizerInfo(shard_dir);
  if (tokenizer.ok()) {
    bpe_data_ = tokenizer->kind == "bpe";
    if (tokenizer->vocab_size > spec_.model.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.vocab_size: ", spec_.model.vocab_size,
          " is smaller than the vocabulary of the tokenizer that made data.train (",
          tokenizer->vocab_size, " tokens, ", env::JoinPath(shard_dir, "tokenizer.txt"), ")"));
    }
  } else if (tokenizer.status().code() != absl::StatusCode::kNotFound) {
    return tokenizer.status();
  }
  DT_RETURN_IF_ERROR(source->CheckVocab(spec_.model.vocab_size));
  data::DataLoaderOptions lo;
  lo.batch_size = B_;
  lo.seq_len = T_;
  // Every stage of a pipeline reads its data rank's batches: the first its inputs, the last its
  // targets.
  lo.rank = data_rank_;
  lo.world_size = spec_.data_parallel_size;
  lo.seed = spec_.data.seed;
  lo.shuffle = spec_.data.shuffle;
  DT_ASSIGN_OR_RETURN(train_loader_, data::DataLoader::Create(source, lo));
  // Pipelined, every stage of data rank 0's pipeline evaluates: the first reads the inputs, the
  // last the targets, and all of them count the batches.
  if (!spec_.data.val.empty() && (leader_ || (pipelined() && data_rank_ == 0))) {
    DT_ASSIGN_OR_RETURN(auto val_source, data::DataSource::Open(spec_.data.val));
    DT_RETURN_IF_ERROR(val_source->CheckVocab(spec_.model.vocab_size));
    data::DataLoaderOptions vo = lo;
    vo.shuffle = false;
    vo.world_size = 1;
    DT_ASSIGN_OR_RETURN(val_loader_, data::DataLoader::Create(val_source, vo));
  }
  train_tokens_ = source->num_tokens();
  x_.resize(int64_t{B_} * T_);
  y_.resize(int64_t{B_} * T_);
  return absl::OkStatus();
}

// Phase 3: the model and its engine on this rank's device.
absl::StatusOr<std::unique_ptr<model::Model>> TrainingRun::BuildModel() {
  const model::ActivationPlan plan = pipe::StagePlan(
      spec_,
      pipelined() ? pipe::TrainBuffers(spec_.pipeline.stages, static_cast<int>(gas_), stage_) : 1);
  if (!pipelined()) return BuildJobModel(spec_, &ops(), {}, plan);
  DT_ASSIGN_OR_RETURN(partition_,
                      pipe::PartitionLayers(config::ModelShape(spec_.model), spec_.pipeline.stages,
                                            spec_.pipeline.partition_method));
  return BuildJobModel(spec_, &ops(), partition_[stage_].blocks, plan);
}

model::Batch TrainingRun::TokenBatch() const {
  model::Batch batch;
  batch.Add("tokens", {DType::kI32, {B_, T_}, x_.data()})
      .Add("targets", {DType::kI32, {B_, T_}, y_.data()});
  return batch;
}

absl::Status TrainingRun::BuildEngine() {
  if (spec_.pipeline.cpu_checkpointing && device_->is_cuda()) {
    return absl::InvalidArgumentError(
        "activation_checkpointing.cpu_checkpointing: keeping activation checkpoints in host "
        "memory is not supported on CUDA devices yet");
  }
  for (const std::string* path : {&options_.save_model, &options_.save_initial_model}) {
    // Known before training rather than found out at its end.
    if (spec_.model.type == "llama" && !path->empty() && !absl::EndsWith(*path, ".safetensors")) {
      return absl::InvalidArgumentError(absl::StrCat(
          *path, ": the Llama's weights are written as safetensors (name the file *.safetensors)"));
    }
  }
  DT_ASSIGN_OR_RETURN(auto gpt, BuildModel());
  DT_ASSIGN_OR_RETURN(const model::ParamLayout whole, JobModelLayout(spec_));
  const int64_t num_params = whole.num_parameters();
  // dstrain estimate's figures for this rank's stage, as an out-of-memory error quotes them.
  DT_ASSIGN_OR_RETURN(const std::string expected, Expectation());
  device_->SetMemoryExpectation(expected);
  // An offloaded optimizer's files: <nvme_path>/dstrain-<job>/rank<rank>, removed at the end.
  zero::OffloadContext offload;
  offload.job = !options_.service.job_id.empty() ? options_.service.job_id
                : !spec_.job.name.empty()        ? spec_.job.name
                                                 : "job";
  offload.rank = rank_;
  offload.log = [log = log_](const std::string& line) { absl::FPrintF(log, "%s\n", line); };
  DT_ASSIGN_OR_RETURN(engine_, engine::Engine::Initialize(std::move(gpt), spec_, dp_.get(),
                                                          comm::CommOptions{options_.comm_timeout},
                                                          std::move(offload)));
  if (pipelined()) {
    engine_->SetPipeline({pipe_.get(), tied_.get(), stage_, spec_.pipeline.stages});
    executor_ =
        std::make_unique<pipe::Executor>(engine_.get(), pipe_.get(), stage_, spec_.pipeline.stages,
                                         comm::CommOptions{options_.comm_timeout});
    absl::FPrintF(log_, "pipeline: %d stages x %d data-parallel ranks, partition \"%s\": %s\n",
                  spec_.pipeline.stages, spec_.data_parallel_size, spec_.pipeline.partition_method,
                  pipe::DescribePartition(partition_, spec_.model.n_layer));
  }
  DT_ASSIGN_OR_RETURN(MetricsWriter metrics,
                      MetricsWriter::Open(leader_ ? options_.metrics_out : ""));
  metrics_.emplace(std::move(metrics));
  // Evaluation, sampling and saving read the full parameters: gathering them is collective under
  // ZeRO-3, so every rank takes part wherever rank 0 may need them, and only rank 0 keeps a copy
  // and works on it. The save flags are rank 0's: one all-reduce tells every rank whether a model
  // file is written at the start and at the end, so that without one nobody gathers a whole fp32
  // copy of the model (on a memory budget, the largest allocation of the run).
  float saves = !leader_ ? 0.f
                         : (options_.save_initial_model.empty() ? 0.f : 1.f) +
                               (options_.save_model.empty() ? 0.f : 2.f);
  if (job_group() != nullptr) {
    DT_RETURN_IF_ERROR(zero::AllReduceScalar(*job_group(), ops(), &null_scalar_, &saves,
                                             comm::ReduceOp::kMax,
                                             comm::CommOptions{options_.comm_timeout}));
  }
  const int save_flags = static_cast<int>(saves);
  saves_final_model_ = (save_flags & 2) != 0;
  if ((save_flags & 1) != 0) {
    DT_ASSIGN_OR_RETURN(std::vector<float> params, GatherModel());
    if (leader_) {
      DT_RETURN_IF_ERROR(
          WriteModelFile(options_.save_initial_model, spec_.model, whole, params.data()));
    }
  }
  const std::string shape =
      spec_.model.type == "llama"
          ? absl::StrFormat("Llama L=%d H=%d KV=%d C=%d I=%d V=%d T=%d", spec_.model.n_layer,
                            spec_.model.n_head, spec_.model.n_kv_head, spec_.model.n_embd,
                            spec_.model.intermediate_size, spec_.model.vocab_size, T_)
          : absl::StrFormat("GPT L=%d H=%d C=%d V=%d T=%d", spec_.model.n_layer, spec_.model.n_head,
                            spec_.model.n_embd, spec_.model.vocab_size, T_);
  absl::FPrintF(log_,
                "dstrain train: %s | %s | %.2fM parameters | "
                "micro-batch %d x %d tokens, accumulation %d, %d rank(s), %d threads each, "
                "ZeRO stage %d, %s | %s\n",
                spec_.job.name.empty() ? "job" : spec_.job.name, shape, num_params / 1e6, B_, T_,
                gas_, spec_.data_parallel_size, threads_, spec_.zero.stage,
                config::PrecisionName(spec_), ops().Describe());
  absl::FPrintF(log_, "data: %s (%d tokens)%s\n", spec_.data.train, train_tokens_,
                val_loader_ ? absl::StrCat(", val ", spec_.data.val) : "");
  checkpoints_.env = env::PosixEnv::Default();
  checkpoints_.root = spec_.job.checkpoint_dir;
  checkpoints_.keep_last = spec_.job.keep_last;
  checkpoints_.comm = comm::CommOptions{options_.comm_timeout};
  checkpoints_.warn = [log = log_](const std::string& m) {
    absl::FPrintF(log, "warning: %s\n", m);
  };
  if (pipelined()) {
    // One checkpoint for the whole grid: a shard per rank, each its stage's slice.
    for (const pipe::StagePartition& s : partition_) checkpoints_.pipeline.push_back(s.blocks);
    checkpoints_.gather_model = [this] { return GatherModel(); };
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> TrainingRun::Expectation() const {
  DT_ASSIGN_OR_RETURN(const std::vector<pipe::StageEstimate> stages,
                      EstimateJobStages(spec_, device_->ops()));
  const zero::MemoryEstimate& e = stages[stage_].memory;
  const int64_t total =
      e.model_states() + e.activations + e.comm_buffers_peak + e.gathered_params_peak;
  return absl::StrFormat(
      "%.1f MB for this rank (params %.1f, grads %.1f, "
      "optimizer_state %.1f, activations %.1f, comm_buffers up to %.1f, gathered_params up to "
      "%.1f MB)",
      total / 1e6, e.params / 1e6, e.grads / 1e6, e.optimizer_state / 1e6, e.activations / 1e6,
      e.comm_buffers_peak / 1e6, e.gathered_params_peak / 1e6);
}

// Phase 4: with job.checkpoint_dir set and job.resume, a run picks up from the newest committed
// checkpoint there (engine state and each rank's data position), every rank together.
absl::Status TrainingRun::Resume() {
  if (checkpoints_.root.empty() || !spec_.job.resume) return absl::OkStatus();
  DT_ASSIGN_OR_RETURN(std::vector<checkpoint::CheckpointManifest> committed,
                      checkpoint::ListCommitted(checkpoints_.env, checkpoints_.root));
  if (committed.empty()) return absl::OkStatus();
  DT_ASSIGN_OR_RETURN(std::string rank_state,
                      engine::LoadCheckpoint(*engine_, job_group(), checkpoints_, "latest"));
  const nlohmann::json position =
      nlohmann::json::parse(rank_state, nullptr, /*allow_exceptions=*/false);
  if (!position.is_object()) {
    return absl::DataLossError(
        absl::StrCat(checkpoints_.root, ": bad data position in this rank's shard"));
  }
  DT_RETURN_IF_ERROR(train_loader_->Restore(data::LoaderState{
      position.value("epoch", uint64_t{0}), position.value("index", uint64_t{0})}));
  first_step_ = engine_->global_steps() + 1;
  absl::FPrintF(log_, "resumed from %s at step %d\n", checkpoints_.root, engine_->global_steps());
  return absl::OkStatus();
}

// Phase 5: the training loop, one optimizer step per iteration.
absl::Status TrainingRun::RunSteps() {
  comm_bytes_before_ = engine_->zero().traffic().total();
  comm_wait_before_ = engine_->zero().traffic().wait_seconds;
  const double tokens_per_step = double(B_) * T_ * gas_ * spec_.data_parallel_size;
  for (int64_t step = first_step_; step <= spec_.job.train_steps; ++step) {
    const auto t0 = Clock::now();
    device_->allocator().ResetPeaks();
    DT_ASSIGN_OR_RETURN(const engine::StepStats stats, TrainStep());
    const double secs = Seconds(t0, Clock::now());
    if (step > 1) tok_rates_.push_back(tokens_per_step / secs);
    if (!std::isfinite(stats.loss)) {
      return absl::InternalError(absl::StrCat("loss became ", stats.loss, " at step ", step,
                                              "; lower the learning rate or enable clipping"));
    }
    result_.steps = step;
    result_.final_train_loss = stats.loss;
    DT_ASSIGN_OR_RETURN(const bool go_on, AfterStep(step, stats, secs));
    if (!go_on) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<engine::StepStats> TrainingRun::TrainStep() {
  if (executor_ != nullptr) {
    // Every stage draws the same micro-batches in the same order (one loader per data rank).
    return executor_->TrainBatch([this](int, int32_t* inputs, int32_t* targets) {
      train_loader_->NextBatch(x_.data(), y_.data());
      if (inputs != nullptr) std::copy(x_.begin(), x_.end(), inputs);
      if (targets != nullptr) std::copy(y_.begin(), y_.end(), targets);
    });
  }
  std::optional<engine::StepStats> stats;
  for (int64_t micro = 0; micro < gas_; ++micro) {
    train_loader_->NextBatch(x_.data(), y_.data());
    if (engine_->is_gpt()) {
      DT_RETURN_IF_ERROR(engine_->Forward(x_.data(), y_.data()).status());
    } else {
      DT_RETURN_IF_ERROR(engine_->Forward(TokenBatch()).status());
    }
    DT_RETURN_IF_ERROR(engine_->Backward());
    DT_ASSIGN_OR_RETURN(stats, engine_->Step());
  }
  if (!stats) return absl::InternalError("no optimizer step at the accumulation boundary");
  return *stats;
}

absl::StatusOr<bool> TrainingRun::AfterStep(int64_t step, const engine::StepStats& stats,
                                            double seconds) {
  JsonLine line = MetricsLine(stats, seconds);
  if (executor_ != nullptr) {
    // Every stage's step (collective over the pipeline, on every data rank).
    DT_ASSIGN_OR_RETURN(const nlohmann::json stages, StageMetrics(seconds));
    line.AddRaw("stages", stages.dump());
  }
  const bool last = step == spec_.job.train_steps;
  double val_loss = -1;
  if (!spec_.data.val.empty() &&
      ((spec_.job.eval_every > 0 && step % spec_.job.eval_every == 0) || last)) {
    DT_ASSIGN_OR_RETURN(val_loss, Evaluate());
    if (val_loader_) {
      line.Add("val_loss", val_loss);
      result_.final_val_loss = val_loss;
    } else {
      val_loss = -1;
    }
  }
  // The checkpoint of this step is saved before its metrics line is written, so the line can
  // carry the save's duration and size.
  std::string saved;
  if (spec_.job.checkpoint_every > 0 && (step % spec_.job.checkpoint_every == 0 || last)) {
    absl::StatusOr<std::string> result = SaveCheckpoint(step, &line);
    if (!result.ok()) {
      // The step's line says the save failed (the agent counts it for the checkpoint alert),
      // then the run fails with the error and the job resumes from its last committed one.
      line.AddRaw("checkpoint_error",
                  nlohmann::json(std::string(result.status().message())).dump());
      metrics_->Write(line).IgnoreError();
      return result.status();
    }
    saved = *std::move(result);
  }
  DT_RETURN_IF_ERROR(metrics_->Write(line));
  if (step % std::max<int64_t>(1, spec_.steps_per_print.value_or(10)) == 0 || step == 1 || last ||
      val_loss >= 0) {
    PrintProgress(step, stats, seconds, val_loss);
  }
  if (!saved.empty()) absl::FPrintF(log_, "checkpoint %s\n", saved);
  if (spec_.job.sample_every > 0 && step % spec_.job.sample_every == 0 && !last &&
      spec_.job.sample_tokens > 0) {
    DT_RETURN_IF_ERROR(
        PrintSample(spec_.data.seed + step, absl::StrFormat("sample at step %d", step)));
  }
  // A drain request (SIGUSR1 from the agent: this worker is going away) on any rank stops every
  // rank here, at the same step, after a checkpoint: the job resumes elsewhere without losing a
  // step.
  if (options_.drain_on_sigusr1 && !last) {
    DT_ASSIGN_OR_RETURN(const bool drained, Drain(step, !saved.empty()));
    if (drained) return false;
  }
  return true;
}

JsonLine TrainingRun::MetricsLine(const engine::StepStats& stats, double seconds) {
  // This rank's memory by category (now, and the peak within this step) and the bytes it sent in
  // collectives this step (ring-algorithm count, zero/zero_state.h).
  const tensor::MemoryStats mem = device_->allocator().Stats();
  const zero::TrafficStats& traffic = engine_->zero().traffic();
  const int64_t comm_bytes = traffic.total() - comm_bytes_before_;
  const double comm_wait = traffic.wait_seconds - comm_wait_before_;
  comm_bytes_before_ = traffic.total();
  comm_wait_before_ = traffic.wait_seconds;
  const double tokens = double(B_) * T_ * gas_ * spec_.data_parallel_size;
  JsonLine line;
  line.Add("step", stats.step)
      .Add("loss", stats.loss)
      .Add("lr", stats.lr)
      .Add("grad_norm", stats.grad_norm)
      .Add("tokens_per_s", tokens / seconds)
      .Add("step_ms", seconds * 1e3)
      .Add("loss_scale", stats.loss_scale)
      .Add("skipped", stats.skipped)
      .AddRaw("mem_bytes", mem.CurrentJson())
      .AddRaw("mem_peak_bytes", mem.PeakJson())
      .Add("mem_peak_total_bytes", mem.total_peak)
      .Add("comm_bytes", comm_bytes)
      .Add("comm_s", comm_wait);
  if (const int64_t nvme = engine_->zero().swap_file_bytes() + engine_->zero().param_file_bytes();
      nvme > 0) {
    // NVMe offload: the swap files, and the seconds the step waited for their I/O (the update's
    // and, with parameters on NVMe, the gathers'), and the bytes it moved.
    const zero::ZeroState::ParamSwapTraffic params = engine_->zero().TakeParamSwapTraffic();
    line.Add("nvme_bytes", nvme)
        .Add("swap_wait_s", engine_->zero().swap_wait_seconds() + params.wait_seconds)
        .Add("swap_update_s", engine_->zero().swap_update_seconds())
        .Add("swap_bytes", engine_->zero().swap_update_bytes() + params.bytes);
  }
  if (const tensor::Allocator* host = engine_->zero().host_allocator(); host != nullptr) {
    // A GPU rank's offloaded optimizer: what it keeps in host memory, by category.
    line.AddRaw("host_mem_bytes", host->Stats().CurrentJson());
  }
  if (device_->is_cuda()) {
    // The worker agent exports these as dstrain_worker_device_memory_bytes.
    line.Add("device_mem_bytes", mem.total_current()).Add("device_mem_peak_bytes", mem.total_peak);
  }
  if (spec_.pipeline.profile_checkpoints) {
    // activation_checkpointing.profile: this step's recomputation (the leader's stage).
    const double recompute = engine_->gpt().recompute_seconds();
    line.Add("recompute_s", recompute - recompute_before_);
    recompute_before_ = recompute;
  }
  if (executor_ != nullptr) {
    // The leader's stage (stage 0): what it sent to its neighbour and waited for from it, so far.
    const pipe::ExecutorStats& p2p = executor_->stats();
    line.Add("pipe_stage", int64_t{stage_})
        .Add("p2p_bytes_sent", p2p.bytes_sent)
        .Add("p2p_wait_s", p2p.recv_wait_seconds);
  }
  return line;
}

absl::StatusOr<double> TrainingRun::Evaluate() {
  if (executor_ != nullptr) return EvaluatePipelined();
  DT_ASSIGN_OR_RETURN(tensor::Tensor params, engine_->GatherParamsOnDevice(leader_));
  if (!val_loader_) return -1.0;
  data::DataLoader& loader = *val_loader_;
  loader.Reset();
  const int n = EvalBatchCount();
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    loader.NextBatch(x_.data(), y_.data());
    float loss = 0;
    if (engine_->is_gpt()) {
      DT_ASSIGN_OR_RETURN(loss,
                          engine_->gpt().Forward(params.view(), x_.data(), y_.data(), B_, T_));
    } else {
      // The gathered parameters as the model's flat buffer: no gradients, no ZeRO collectives.
      model::FlatParamAccess access(engine_->model().layout(), params.view());
      DT_ASSIGN_OR_RETURN(loss, engine_->model().Forward(access, TokenBatch(), std::nullopt));
    }
    sum += loss;
  }
  return n > 0 ? sum / n : 0.0;
}

int TrainingRun::EvalBatchCount() const {
  return static_cast<int>(
      std::min<uint64_t>(spec_.job.eval_batches, val_loader_->batches_per_epoch()));
}

absl::StatusOr<std::string> TrainingRun::SaveCheckpoint(int64_t step, JsonLine* line) {
  const auto start = Clock::now();
  const data::LoaderState at = train_loader_->State();
  const nlohmann::json position = {{"epoch", at.epoch}, {"index", at.index}};
  const std::string tag = absl::StrFormat("step_%08d", step);
  DT_RETURN_IF_ERROR(engine::SaveCheckpoint(*engine_, job_group(), checkpoints_, tag,
                                            position.dump(), {{"job_model", ModelMeta(spec_)}}));
  if (line != nullptr) line->Add("checkpoint_s", Seconds(start, Clock::now()));
  if (leader_) {
    DT_ASSIGN_OR_RETURN(
        auto reader, checkpoint::CheckpointReader::Open(checkpoints_.env, checkpoints_.root, tag));
    int64_t bytes = 0;
    for (const checkpoint::ShardRecord& shard : reader->manifest().shards) bytes += shard.bytes;
    if (line != nullptr) line->Add("checkpoint_bytes", bytes);
    // The checkpoint is durable and loadable already; the catalog learns of it in the background
    // (retrying while the coordinator is away), so training goes on.
    if (catalog_ != nullptr) catalog_->Record(reader->dir(), reader->manifest());
  }
  return absl::StrCat(checkpoints_.root, "/", tag);
}

void TrainingRun::PrintProgress(int64_t step, const engine::StepStats& stats, double seconds,
                                double val_loss) {
  const tensor::MemoryStats mem = device_->allocator().Stats();
  const double tokens = double(B_) * T_ * gas_ * spec_.data_parallel_size;
  absl::FPrintF(log_,
                "step %*d/%d | loss %.4f | lr %.3e | norm %.3f | %.1f ms | %.0f tok/s | "
                "mem %s, peak %.1f MB%s%s\n",
                static_cast<int>(std::to_string(spec_.job.train_steps).size()), step,
                spec_.job.train_steps, stats.loss, stats.lr, stats.grad_norm, seconds * 1e3,
                tokens / seconds, DescribeMemory(mem), mem.total_peak / 1e6,
                spec_.fp16.enabled ? absl::StrFormat(" | scale %g%s", stats.loss_scale,
                                                     stats.skipped ? " (overflow: skipped)" : "")
                                   : "",
                val_loss >= 0 ? absl::StrFormat(" | val loss %.4f", val_loss) : "");
  std::fflush(log_);
}

absl::Status TrainingRun::PrintSample(uint64_t seed, const std::string& title) {
  Rng rng(seed);
  std::vector<int32_t> ids;
  if (pipelined()) {
    // Sampling runs the whole model: the leader puts it together from every stage (GatherModel)
    // and samples with a model of all the blocks, built once.
    DT_ASSIGN_OR_RETURN(const std::vector<float> whole, GatherModel());
    if (!leader_) return absl::OkStatus();
    if (whole_model_ == nullptr) {
      DT_ASSIGN_OR_RETURN(whole_model_,
                          model::Gpt::Create(config::ModelShape(spec_.model), &ops()));
    }
    DT_ASSIGN_OR_RETURN(tensor::Tensor params,
                        tensor::Tensor::Empty(&device_->allocator(), DType::kF32,
                                              {static_cast<int64_t>(whole.size())},
                                              tensor::MemoryCategory::kOther));
    ops().CopyFromHost(params.view(), whole.data());
    DT_RETURN_IF_ERROR(ops().status());
    DT_ASSIGN_OR_RETURN(
        ids, Sample(*whole_model_, params.view(), {'\n'}, spec_.job.sample_tokens, 1.0f, rng));
  } else {
    DT_ASSIGN_OR_RETURN(tensor::Tensor params, engine_->GatherParamsOnDevice(leader_));
    if (!leader_) return absl::OkStatus();
    DT_ASSIGN_OR_RETURN(
        ids, Sample(engine_->gpt(), params.view(), {'\n'}, spec_.job.sample_tokens, 1.0f, rng));
  }
  absl::FPrintF(log_, "--- %s ---\n%s\n---\n", title, DescribeSample(ids, bpe_data_));
  return absl::OkStatus();
}

absl::StatusOr<bool> TrainingRun::Drain(int64_t step, bool saved) {
  float drain = DrainRequested() ? 1.f : 0.f;
  // Every rank of the job leaves at the same step: a pipeline's stages agree too.
  comm::Communicator* all = job_group();
  if (all != nullptr) {
    DT_RETURN_IF_ERROR(zero::AllReduceScalar(*all, ops(), &null_scalar_, &drain,
                                             comm::ReduceOp::kMax,
                                             comm::CommOptions{options_.comm_timeout}));
  }
  if (drain == 0.f) return false;
  if (!checkpoints_.root.empty() && !saved) {
    DT_ASSIGN_OR_RETURN(const std::string dir, SaveCheckpoint(step, nullptr));
    absl::FPrintF(log_, "checkpoint %s\n", dir);
  }
  absl::FPrintF(
      log_, "drain requested: leaving after step %d%s\n", step,
      checkpoints_.root.empty() ? " (no checkpoint_dir: the next attempt starts over)" : "");
  std::fflush(log_);
  result_.drained = true;
  return true;
}

// Phase 6: results.
absl::StatusOr<TrainResult> TrainingRun::Finish() {
  // The catalog's last records land before the process ends (a coordinator restart may be in the
  // way: bounded).
  if (catalog_ != nullptr && !catalog_->Flush(absl::Seconds(60))) {
    absl::FPrintF(log_,
                  "warning: the checkpoint catalog at %s was not reachable for 60 s; "
                  "`dstrain checkpoints` may miss the last checkpoints (they are on disk)\n",
                  options_.service.catalog);
  }
  if (!tok_rates_.empty()) {
    std::nth_element(tok_rates_.begin(), tok_rates_.begin() + tok_rates_.size() / 2,
                     tok_rates_.end());
    result_.tokens_per_s = tok_rates_[tok_rates_.size() / 2];
  }
  if (spec_.job.sample_tokens > 0) DT_RETURN_IF_ERROR(PrintSample(spec_.data.seed, "sample"));
  if (saves_final_model_) {
    DT_ASSIGN_OR_RETURN(std::vector<float> params, GatherModel());
    DT_ASSIGN_OR_RETURN(const model::ParamLayout whole, JobModelLayout(spec_));
    if (leader_) {
      DT_RETURN_IF_ERROR(WriteModelFile(options_.save_model, spec_.model, whole, params.data()));
      absl::FPrintF(log_, "model written to %s\n", options_.save_model);
    }
  }
  absl::FPrintF(
      log_, "done: %d steps, final loss %.4f%s, median %.0f tok/s\n", result_.steps,
      result_.final_train_loss,
      result_.final_val_loss >= 0 ? absl::StrFormat(", val loss %.4f", result_.final_val_loss) : "",
      result_.tokens_per_s);
  return result_;
}

}  // namespace dstrain::trainer
