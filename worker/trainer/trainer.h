// The single-process training loop behind `dstrain train` (and, per rank, `dstrain launch`).
//
// Reads as llm.c's main loop: load data → build the model and engine → for each optimizer step:
// gradient-accumulation micro-batches (forward, backward) → engine step → log and write metrics
// → periodically evaluate on the validation set → at the end sample text. Progress goes to
// `log` (stdout by default); per-step metrics to --metrics-out as JSONL.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/config/config.h"

namespace dstrain::trainer {

struct TrainOptions {
  std::string metrics_out;         // JSONL path; empty = none
  int threads = 0;                 // compute threads; 0 = every CPU this process may run on
  std::FILE* log = stdout;         // human-readable progress
  std::string save_model;          // if set, the final weights in llm.c's format
  std::string save_initial_model;  // if set, the weights before the first step (llm.c format)
  // Distributed runs (set by `dstrain launch` for each rank): this process's rank and the
  // rendezvous store HOST:PORT. world_size comes from the spec (job.world_size).
  int rank = 0;
  std::string store;
  absl::Duration comm_timeout = absl::Minutes(5);
  // Service mode (set by the worker agent): `store` is grpc://HOST:PORT (the coordinator's
  // StoreService), every key goes under `store_prefix` (one per job attempt), and rank 0 records
  // each committed checkpoint in the catalog at `catalog` (HOST:PORT) under `job_id`.
  std::string store_prefix;
  std::string job_id;
  int attempt = 0;
  std::string catalog;
  // Drain on SIGUSR1 (set under a worker agent): every rank learns at each step boundary whether
  // any rank was asked; if so all save a checkpoint there (when the job has a checkpoint_dir)
  // and return with TrainResult::drained.
  bool drain_on_sigusr1 = false;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0.0;
  double final_val_loss = -1.0;  // -1 when there is no validation set
  double tokens_per_s = 0.0;     // median over the steps after the first
  bool drained = false;          // stopped early on a drain request, after a checkpoint
};

absl::StatusOr<TrainResult> Train(const config::JobSpec& spec, const TrainOptions& options);

// Sets the OpenMP pool (used by our kernels and by oneDNN alike) to `threads`, or to the CPUs in
// this process's affinity mask when 0, so library and own threads never oversubscribe the cores.
// Returns the number chosen.
int ConfigureThreads(int threads);

}  // namespace dstrain::trainer
