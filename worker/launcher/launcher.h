// The standalone launcher behind `dstrain launch --nproc N JOB.json` (like torchrun/deepspeed).
//
// Spawns N trainer processes on this machine, each told its rank, the world size and where the
// rendezvous store is; relays their stdout and stderr line by line with a "[rank r] " prefix;
// and supervises them as a gang:
//   - when a rank exits non-zero or is killed by a signal, the others are stopped (SIGTERM, then
//     SIGKILL after a grace period) and the launcher fails naming the first failing rank;
//   - SIGINT/SIGTERM to the launcher (Ctrl-C) stops every rank the same way;
//   - when every rank exits 0, so does the launcher.
// Each rank gets an equal share of this process's CPUs as its compute threads, so N ranks never
// oversubscribe the cores. Not thread-safe; one launch per process.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dstrain::launcher {

struct LaunchOptions {
  int nproc = 1;
  // The trainer command line for one rank, before the per-rank arguments the launcher appends
  // (--rank R --world N --store HOST:PORT --threads T). argv[0] is the program to run (a path).
  std::vector<std::string> trainer_argv;
  // Extra arguments for rank 0 only (e.g. --metrics-out FILE).
  std::vector<std::string> rank0_extra_args;
  // A user's own program (dstrain::Initialize, worker/api/engine.h) instead of the trainer:
  // nothing is appended to trainer_argv; each rank learns its place from the environment, as
  // under torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, DSTRAIN_STORE (HOST:PORT),
  // DSTRAIN_THREADS and OMP_NUM_THREADS. argv[0] may then be a name found on $PATH.
  bool rank_env = false;
  std::string store_host = "127.0.0.1";
  int store_port = 0;  // 0: pick a free port
  absl::Duration stop_grace = absl::Seconds(5);
};

struct LaunchResult {
  int exit_code = 0;     // 0 when every rank succeeded
  int failed_rank = -1;  // the first rank that failed, or -1
  std::string reason;    // "rank 1 exited with status 3", "rank 0 killed by signal 9", ...
};

// Runs the ranks to completion. REQUIRES: no other thread of this process may receive SIGINT,
// SIGTERM or SIGCHLD (call it before starting threads, or block those signals in them): the
// launcher takes them through a signalfd. Errors (kInternal) only when the launch itself is
// impossible (no fork, no store); a failing rank is a LaunchResult with a non-zero exit_code.
absl::StatusOr<LaunchResult> Launch(const LaunchOptions& options);

}  // namespace dstrain::launcher
