#include "worker/trainer/trainer.h"

#include <omp.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/random/rng.h"
#include "common/status/status_macros.h"
#include "worker/checkpoint/commit.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/data/byte_tokenizer.h"
#include "worker/data/data_loader.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/engine/engine.h"
#include "worker/env/env.h"
#include "worker/model/gpt.h"
#include "worker/model/llmc_format.h"
#include "worker/store/grpc_store.h"
#include "worker/store/prefix_store.h"
#include "worker/store/tcp_store.h"
#include "worker/trainer/checkpoint_catalog.h"
#include "worker/trainer/metrics_writer.h"
#include "worker/trainer/sampler.h"

namespace dstrain::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

model::GptConfig ModelShape(const config::ModelConfig& m) {
  model::GptConfig c;
  c.n_layer = m.n_layer;
  c.n_head = m.n_head;
  c.n_embd = m.n_embd;
  c.vocab_size = m.vocab_size;
  c.padded_vocab_size = m.padded_vocab_size;
  c.block_size = m.block_size;
  return c;
}

// Mean loss over the first `batches` batches of the validation loader (always the same ones).
absl::StatusOr<double> Evaluate(model::Gpt& model, const float* params, data::DataLoader& loader,
                                int batches, std::vector<int32_t>& x, std::vector<int32_t>& y) {
  loader.Reset();
  const int B = static_cast<int>(loader.options().batch_size);
  const int T = static_cast<int>(loader.options().seq_len);
  const int n = static_cast<int>(std::min<uint64_t>(batches, loader.batches_per_epoch()));
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    loader.NextBatch(x.data(), y.data());
    DT_ASSIGN_OR_RETURN(float loss, model.Forward(params, x.data(), y.data(), B, T));
    sum += loss;
  }
  return n > 0 ? sum / n : 0.0;
}

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

std::string DescribeSample(const std::vector<int32_t>& ids) {
  // Byte-level vocabularies decode to text; others are shown as ids (no tokenizer is known).
  bool bytes = std::all_of(ids.begin(), ids.end(), [](int32_t t) { return t < 256; });
  if (bytes) {
    std::vector<uint16_t> t(ids.begin(), ids.end());
    return data::ByteTokenizer::Decode(t);
  }
  std::string s;
  for (int32_t t : ids) absl::StrAppend(&s, s.empty() ? "" : " ", t);
  return s;
}

// Set when SIGUSR1 (a drain request from the worker agent) arrived; read at step boundaries.
std::atomic<bool> g_drain_requested{false};

// SIGUSR1 is blocked in this thread, so in every thread started after it (Gloo's, gRPC's,
// OpenMP's), and taken by one thread waiting for it: a handler could run on any thread and
// interrupt a blocking call there (poll() and friends fail with EINTR even under SA_RESTART),
// failing a collective. Call before any other thread starts.
void StartDrainWatcher() {
  static std::once_flag once;
  std::call_once(once, [] {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
    std::thread([usr1] {
      int sig = 0;
      while (sigwait(&usr1, &sig) == 0) g_drain_requested = true;
    }).detach();
  });
}

bool DrainRequested() { return g_drain_requested.load(); }

// "grpc://HOST:PORT": the coordinator's StoreService; "HOST:PORT": a TCP store.
absl::StatusOr<std::unique_ptr<store::Store>> ConnectStore(const std::string& address,
                                                           absl::Duration timeout) {
  if (absl::StartsWith(address, "grpc://")) {
    return std::unique_ptr<store::Store>(store::GrpcStore::Connect(address.substr(7)));
  }
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--store: expected HOST:PORT or grpc://HOST:PORT, got '", address, "'"));
  }
  DT_ASSIGN_OR_RETURN(std::unique_ptr<store::TcpStoreClient> client,
                      store::TcpStoreClient::Connect(address.substr(0, colon), port, timeout));
  return std::unique_ptr<store::Store>(std::move(client));
}

}  // namespace

int ConfigureThreads(int threads) {
  if (threads <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    threads = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  omp_set_num_threads(std::max(1, threads));
  return std::max(1, threads);
}

absl::StatusOr<TrainResult> Train(const config::JobSpec& spec, const TrainOptions& options) {
  if (options.drain_on_sigusr1) StartDrainWatcher();  // before this process starts threads
  std::FILE* log = options.log;
  const int world = spec.job.world_size;
  const int rank = options.rank;
  if (rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is outside job.world_size ", world));
  }
  if (world > 1 && options.store.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("job.world_size: the job asks for ", world,
                                                   " ranks; run it with `dstrain launch --nproc ",
                                                   world, "` (or give --store)"));
  }
  if (spec.job.pipeline_stages != 1) {
    return absl::InvalidArgumentError("job.pipeline_stages: pipeline parallelism is not supported");
  }
  const bool leader = rank == 0;  // logs, evaluates, samples and writes metrics and models
  std::FILE* null_log = nullptr;
  if (!leader) {
    null_log = std::fopen("/dev/null", "w");
    log = null_log;
  }
  struct LogCloser {
    std::FILE* f;
    ~LogCloser() {
      if (f != nullptr) std::fclose(f);
    }
  } log_closer{null_log};
  const int threads = ConfigureThreads(options.threads);

  // Phase -1: the data-parallel group, meeting through the rendezvous store: a TCP store served
  // by the launcher (standalone mode) or the coordinator's (service mode, grpc://), scoped by the
  // attempt's prefix.
  std::unique_ptr<store::Store> store, scoped_store;
  std::unique_ptr<comm::Communicator> dp;
  if (world > 1) {
    DT_ASSIGN_OR_RETURN(store, ConnectStore(options.store, options.comm_timeout));
    store::Store* rendezvous = store.get();
    if (!options.store_prefix.empty()) {
      scoped_store = std::make_unique<store::PrefixStore>(options.store_prefix, store.get());
      rendezvous = scoped_store.get();
    }
    comm::GlooOptions gloo;
    gloo.timeout = options.comm_timeout;
    DT_ASSIGN_OR_RETURN(dp, comm::GlooCommunicator::Create(rendezvous, rank, world, "dp", gloo));
  }
  // Every rank says once that it is in its group, on the options' stream even where its progress
  // log is silenced: a supervisor (the worker agent) takes this line as "running".
  if (world > 1) {
    std::FILE* out = options.log != nullptr ? options.log : stdout;
    absl::FPrintF(out, "rank %d of %d: joined the data-parallel group\n", rank, world);
    std::fflush(out);
  }
  std::unique_ptr<CheckpointCatalog> catalog;
  if (!options.catalog.empty() && leader) {
    catalog = std::make_unique<CheckpointCatalog>(options.catalog, options.job_id, log);
  }
  const int B = static_cast<int>(spec.train_micro_batch_size_per_gpu);
  const int T = spec.data.seq_len;
  const int64_t gas = spec.gradient_accumulation_steps;

  // Phase 0: data.
  DT_ASSIGN_OR_RETURN(auto train_source, data::DataSource::Open(spec.data.train));
  DT_RETURN_IF_ERROR(train_source->CheckVocab(spec.model.vocab_size));
  data::DataLoaderOptions lo;
  lo.batch_size = B;
  lo.seq_len = T;
  lo.rank = rank;
  lo.world_size = spec.data_parallel_size;
  lo.seed = spec.data.seed;
  lo.shuffle = spec.data.shuffle;
  DT_ASSIGN_OR_RETURN(data::DataLoader train_loader, data::DataLoader::Create(train_source, lo));
  std::optional<data::DataLoader> val_loader;
  if (!spec.data.val.empty() && leader) {
    DT_ASSIGN_OR_RETURN(auto val_source, data::DataSource::Open(spec.data.val));
    DT_RETURN_IF_ERROR(val_source->CheckVocab(spec.model.vocab_size));
    data::DataLoaderOptions vo = lo;
    vo.shuffle = false;
    vo.world_size = 1;
    DT_ASSIGN_OR_RETURN(val_loader, data::DataLoader::Create(val_source, vo));
  }

  // Phase 1: model and engine.
  tensor::CpuAllocator allocator;
  DT_ASSIGN_OR_RETURN(auto gpt, model::Gpt::Create(ModelShape(spec.model), &allocator));
  const int64_t num_params = gpt->layout().num_parameters();
  DT_ASSIGN_OR_RETURN(auto engine,
                      engine::Engine::Initialize(std::move(gpt), spec, &allocator, dp.get(),
                                                 comm::CommOptions{options.comm_timeout}));
  DT_ASSIGN_OR_RETURN(MetricsWriter metrics,
                      MetricsWriter::Open(leader ? options.metrics_out : std::string()));
  // Evaluation, sampling and saving read the full parameters: GatherParams is collective under
  // ZeRO-3, so every rank calls it wherever rank 0 may need them, decided by the job alone (the
  // save flags are rank 0's), and only rank 0 keeps a copy and works on it.
  {
    DT_ASSIGN_OR_RETURN(std::vector<float> params, engine->GatherParams(leader));
    if (leader && !options.save_initial_model.empty()) {
      DT_RETURN_IF_ERROR(model::WriteLlmcModel(options.save_initial_model, engine->model().config(),
                                               engine->model().layout(), params.data()));
    }
  }
  absl::FPrintF(log,
                "dstrain train: %s | GPT L=%d H=%d C=%d V=%d T=%d | %.2fM parameters | "
                "micro-batch %d x %d tokens, accumulation %d, %d rank(s), %d threads each, "
                "ZeRO stage %d, %s\n",
                spec.job.name.empty() ? "job" : spec.job.name, spec.model.n_layer,
                spec.model.n_head, spec.model.n_embd, spec.model.vocab_size, T, num_params / 1e6, B,
                T, gas, spec.data_parallel_size, threads, spec.zero.stage,
                config::PrecisionName(spec));
  absl::FPrintF(log, "data: %s (%d tokens)%s\n", spec.data.train, train_source->num_tokens(),
                val_loader ? absl::StrCat(", val ", spec.data.val) : "");

  std::vector<int32_t> x(int64_t{B} * T), y(int64_t{B} * T);
  const int64_t print_every = std::max<int64_t>(1, spec.steps_per_print.value_or(10));
  TrainResult result;
  std::vector<double> tok_rates;
  const double tokens_per_step = double(B) * T * gas * spec.data_parallel_size;

  // Checkpoints: with job.checkpoint_dir set and job.resume, a run picks up from the newest
  // committed checkpoint there (engine state and each rank's data position), every rank
  // together; job.checkpoint_every saves one every that many steps.
  engine::CheckpointOptions ckpt;
  ckpt.env = env::PosixEnv::Default();
  ckpt.root = spec.job.checkpoint_dir;
  ckpt.keep_last = spec.job.keep_last;
  ckpt.comm = comm::CommOptions{options.comm_timeout};
  int64_t first_step = 1;
  if (!ckpt.root.empty() && spec.job.resume) {
    DT_ASSIGN_OR_RETURN(std::vector<checkpoint::CheckpointManifest> committed,
                        checkpoint::ListCommitted(ckpt.env, ckpt.root));
    if (!committed.empty()) {
      DT_ASSIGN_OR_RETURN(std::string rank_state,
                          engine::LoadCheckpoint(*engine, dp.get(), ckpt, "latest"));
      const nlohmann::json position =
          nlohmann::json::parse(rank_state, nullptr, /*allow_exceptions=*/false);
      if (!position.is_object()) {
        return absl::DataLossError(
            absl::StrCat(ckpt.root, ": bad data position in this rank's shard"));
      }
      DT_RETURN_IF_ERROR(train_loader.Restore(data::LoaderState{
          position.value("epoch", uint64_t{0}), position.value("index", uint64_t{0})}));
      first_step = engine->global_steps() + 1;
      absl::FPrintF(log, "resumed from %s at step %d\n", ckpt.root, engine->global_steps());
    }
  }

  // Saves checkpoint step_<step> on every rank together; rank 0 adds its duration and size to
  // `line` (when given) and records it in the catalog. Returns its directory.
  auto save_checkpoint = [&](int64_t step, JsonLine* line) -> absl::StatusOr<std::string> {
    const auto save_start = Clock::now();
    const data::LoaderState at = train_loader.State();
    const nlohmann::json position = {{"epoch", at.epoch}, {"index", at.index}};
    const std::string tag = absl::StrFormat("step_%08d", step);
    DT_RETURN_IF_ERROR(engine::SaveCheckpoint(*engine, dp.get(), ckpt, tag, position.dump()));
    if (line != nullptr) line->Add("checkpoint_s", Seconds(save_start, Clock::now()));
    if (leader) {
      DT_ASSIGN_OR_RETURN(auto reader,
                          checkpoint::CheckpointReader::Open(ckpt.env, ckpt.root, tag));
      int64_t bytes = 0;
      for (const checkpoint::ShardRecord& shard : reader->manifest().shards) bytes += shard.bytes;
      if (line != nullptr) line->Add("checkpoint_bytes", bytes);
      // The checkpoint is durable and loadable already; the catalog learns of it in the
      // background (retrying while the coordinator is away), so training goes on.
      if (catalog != nullptr) catalog->Record(reader->dir(), reader->manifest());
    }
    return absl::StrCat(ckpt.root, "/", tag);
  };

  // Phase 2: the training loop, one optimizer step per iteration.
  int64_t comm_bytes_before = engine->zero().traffic().total();
  double comm_wait_before = engine->zero().traffic().wait_seconds;
  for (int64_t step = first_step; step <= spec.job.train_steps; ++step) {
    const auto t0 = Clock::now();
    allocator.ResetPeaks();
    std::optional<engine::StepStats> stats;
    for (int64_t micro = 0; micro < gas; ++micro) {
      train_loader.NextBatch(x.data(), y.data());
      DT_RETURN_IF_ERROR(engine->Forward(x.data(), y.data()).status());
      DT_RETURN_IF_ERROR(engine->Backward());
      DT_ASSIGN_OR_RETURN(stats, engine->Step());
    }
    if (!stats) return absl::InternalError("no optimizer step at the accumulation boundary");
    const double secs = Seconds(t0, Clock::now());
    const double tok_s = tokens_per_step / secs;
    if (step > 1) tok_rates.push_back(tok_s);
    if (!std::isfinite(stats->loss)) {
      return absl::InternalError(absl::StrCat("loss became ", stats->loss, " at step ", step,
                                              "; lower the learning rate or enable clipping"));
    }

    // This rank's memory by category (now, and the peak within this step) and the bytes it sent
    // in collectives this step (ring-algorithm count, zero_state.h).
    const tensor::MemoryStats mem = allocator.Stats();
    const int64_t comm_bytes = engine->zero().traffic().total() - comm_bytes_before;
    comm_bytes_before = engine->zero().traffic().total();
    const double comm_wait = engine->zero().traffic().wait_seconds - comm_wait_before;
    comm_wait_before = engine->zero().traffic().wait_seconds;

    JsonLine line;
    line.Add("step", stats->step)
        .Add("loss", stats->loss)
        .Add("lr", stats->lr)
        .Add("grad_norm", stats->grad_norm)
        .Add("tokens_per_s", tok_s)
        .Add("step_ms", secs * 1e3)
        .Add("loss_scale", stats->loss_scale)
        .Add("skipped", stats->skipped)
        .AddRaw("mem_bytes", mem.CurrentJson())
        .AddRaw("mem_peak_bytes", mem.PeakJson())
        .Add("mem_peak_total_bytes", mem.total_peak)
        .Add("comm_bytes", comm_bytes)
        .Add("comm_s", comm_wait);

    const bool last = step == spec.job.train_steps;
    double val_loss = -1;
    if (!spec.data.val.empty() &&
        ((spec.job.eval_every > 0 && step % spec.job.eval_every == 0) || last)) {
      DT_ASSIGN_OR_RETURN(std::vector<float> params, engine->GatherParams(leader));
      if (val_loader) {
        DT_ASSIGN_OR_RETURN(val_loss, Evaluate(engine->model(), params.data(), *val_loader,
                                               spec.job.eval_batches, x, y));
        line.Add("val_loss", val_loss);
        result.final_val_loss = val_loss;
      }
    }
    // The checkpoint of this step is saved before its metrics line is written, so the line can
    // carry the save's duration and size.
    std::string saved;
    if (spec.job.checkpoint_every > 0 &&
        (step % spec.job.checkpoint_every == 0 || step == spec.job.train_steps)) {
      DT_ASSIGN_OR_RETURN(saved, save_checkpoint(step, &line));
    }

    DT_RETURN_IF_ERROR(metrics.Write(line));
    if (step % print_every == 0 || step == 1 || last || val_loss >= 0) {
      absl::FPrintF(log,
                    "step %*d/%d | loss %.4f | lr %.3e | norm %.3f | %.1f ms | %.0f tok/s | "
                    "mem %s, peak %.1f MB%s%s\n",
                    static_cast<int>(std::to_string(spec.job.train_steps).size()), step,
                    spec.job.train_steps, stats->loss, stats->lr, stats->grad_norm, secs * 1e3,
                    tok_s, DescribeMemory(mem), mem.total_peak / 1e6,
                    spec.fp16.enabled
                        ? absl::StrFormat(" | scale %g%s", stats->loss_scale,
                                          stats->skipped ? " (overflow: skipped)" : "")
                        : "",
                    val_loss >= 0 ? absl::StrFormat(" | val loss %.4f", val_loss) : "");
      std::fflush(log);
    }
    if (!saved.empty()) absl::FPrintF(log, "checkpoint %s\n", saved);
    result.steps = step;
    result.final_train_loss = stats->loss;

    if (spec.job.sample_every > 0 && step % spec.job.sample_every == 0 && !last &&
        spec.job.sample_tokens > 0) {
      DT_ASSIGN_OR_RETURN(std::vector<float> params, engine->GatherParams(leader));
      if (leader) {
        Rng rng(spec.data.seed + step);
        DT_ASSIGN_OR_RETURN(auto ids, Sample(engine->model(), params.data(), {'\n'},
                                             spec.job.sample_tokens, 1.0f, rng));
        absl::FPrintF(log, "--- sample at step %d ---\n%s\n---\n", step, DescribeSample(ids));
      }
    }

    // A drain request (SIGUSR1 from the agent: this worker is going away) on any rank stops
    // every rank here, at the same step, after a checkpoint: the job resumes elsewhere without
    // losing a step.
    if (options.drain_on_sigusr1 && !last) {
      float drain = DrainRequested() ? 1.f : 0.f;
      if (dp != nullptr) {
        DT_ASSIGN_OR_RETURN(
            auto work, dp->AllReduce(comm::CommBuffer{&drain, 1, DType::kF32}, comm::ReduceOp::kMax,
                                     comm::CommOptions{options.comm_timeout}));
        DT_RETURN_IF_ERROR(work->Wait());
      }
      if (drain != 0.f) {
        if (!ckpt.root.empty() && saved.empty()) {
          DT_ASSIGN_OR_RETURN(saved, save_checkpoint(step, nullptr));
          absl::FPrintF(log, "checkpoint %s\n", saved);
        }
        absl::FPrintF(
            log, "drain requested: leaving after step %d%s\n", step,
            ckpt.root.empty() ? " (no checkpoint_dir: the next attempt starts over)" : "");
        std::fflush(log);
        result.drained = true;
        break;
      }
    }
  }

  // The catalog's last records land before the process ends (a coordinator restart may be in
  // the way: bounded).
  if (catalog != nullptr && !catalog->Flush(absl::Seconds(60))) {
    absl::FPrintF(log,
                  "warning: the checkpoint catalog at %s was not reachable for 60 s; "
                  "`dstrain checkpoints` may miss the last checkpoints (they are on disk)\n",
                  options.catalog);
  }

  // Phase 3: results.
  if (!tok_rates.empty()) {
    std::nth_element(tok_rates.begin(), tok_rates.begin() + tok_rates.size() / 2, tok_rates.end());
    result.tokens_per_s = tok_rates[tok_rates.size() / 2];
  }
  {
    DT_ASSIGN_OR_RETURN(std::vector<float> params, engine->GatherParams(leader));
    if (leader && spec.job.sample_tokens > 0) {
      Rng rng(spec.data.seed);
      DT_ASSIGN_OR_RETURN(auto ids, Sample(engine->model(), params.data(), {'\n'},
                                           spec.job.sample_tokens, 1.0f, rng));
      absl::FPrintF(log, "--- sample ---\n%s\n---\n", DescribeSample(ids));
    }
    if (leader && !options.save_model.empty()) {
      DT_RETURN_IF_ERROR(model::WriteLlmcModel(options.save_model, engine->model().config(),
                                               engine->model().layout(), params.data()));
      absl::FPrintF(log, "model written to %s\n", options.save_model);
    }
  }
  absl::FPrintF(
      log, "done: %d steps, final loss %.4f%s, median %.0f tok/s\n", result.steps,
      result.final_train_loss,
      result.final_val_loss >= 0 ? absl::StrFormat(", val loss %.4f", result.final_val_loss) : "",
      result.tokens_per_s);
  return result;
}

}  // namespace dstrain::trainer
