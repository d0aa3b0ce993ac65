#include "worker/trainer/trainer.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>

#include "common/status/status_macros.h"
#include "worker/trainer/training_run.h"

namespace dstrain::trainer {

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
  TrainingRun run(spec, options);
  DT_RETURN_IF_ERROR(run.SetUpGroup());
  DT_RETURN_IF_ERROR(run.BuildData());
  DT_RETURN_IF_ERROR(run.BuildEngine());
  DT_RETURN_IF_ERROR(run.Resume());
  DT_RETURN_IF_ERROR(run.RunSteps());
  return run.Finish();
}

}  // namespace dstrain::trainer
