// The training loop behind `dstrain train` (and, per rank, `dstrain launch` and the worker
// agent's trainer processes).
//
// Reads as llm.c's main loop, in named phases (training_run.h): set up the group → build the
// data and the engine → resume from the latest checkpoint → for each optimizer step:
// gradient-accumulation micro-batches (forward, backward) → engine step → metrics, evaluation,
// checkpoint, progress, sample, drain check → finish (sample, save). Progress goes to `log`
// (stdout by default); per-step metrics to --metrics-out as JSONL.
#pragma once

#include <cstdio>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/config/config.h"
#include "worker/trainer/rendezvous.h"

namespace dstrain::trainer {

// Set by the worker agent for a rank of a service-mode job.
struct ServiceOptions {
  std::string job_id;  // empty: not under an agent
  int attempt = 0;
  // Rank 0 records each committed checkpoint in the catalog of the coordinator at this HOST:PORT.
  std::string catalog;
  // Every path the job names (data.train, data.val, model.init_from, job.checkpoint_dir) must
  // resolve beneath this directory, symlinks followed (common/paths/beneath.h); empty: no check.
  // The worker agent's --data-root.
  std::string data_root;
};

struct TrainOptions {
  std::string metrics_out;         // JSONL path; empty = none
  int threads = 0;                 // compute threads; 0 = every CPU this process may run on
  std::FILE* log = stdout;         // human-readable progress
  std::string save_model;          // if set, the final weights in llm.c's format
  std::string save_initial_model;  // if set, the weights before the first step (llm.c format)
  // This process's rank of job.world_size, and where the ranks meet (kNone for one rank).
  int rank = 0;
  Rendezvous rendezvous;
  absl::Duration comm_timeout = absl::Minutes(5);
  ServiceOptions service;
  // Drain on SIGUSR1 (set under a worker agent): every rank learns at each step boundary whether
  // any rank was asked; if so all save a checkpoint there (when the job has a checkpoint_dir)
  // and return with TrainResult::drained.
  bool drain_on_sigusr1 = false;
  // The device: job.device unless set here (the worker agent's placement, --device). The local
  // rank picks the GPU (local rank mod the GPUs visible; `dstrain launch` sets it, default the
  // rank). device_memory_limit > 0 caps a GPU's allocator (bytes).
  std::optional<config::JobDevice> device;
  std::optional<int> local_rank;
  int64_t device_memory_limit = 0;
  // This host's address that the other hosts reach: the rank's Gloo groups listen there
  // (device::RankDeviceOptions::bind_address). The worker agent sets it.
  std::string bind_address = "127.0.0.1";
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
