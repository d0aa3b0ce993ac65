// Helpers shared by the files that implement Coordinator (coordinator.cc for construction,
// recovery and the job-life transitions; coordinator_jobs.cc, coordinator_workers.cc and
// coordinator_catalog.cc for the three services). Not part of the Coordinator's contract.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/job.pb.h"

namespace dstrain::coordinator::internal {

// An attempt placed on workers: its ranks' reports count.
bool IsActive(v1::JobState s);

// NOT_FOUND for a request naming a job the coordinator does not know.
absl::Status NoSuchJob(absl::string_view job_id);

// Whether `worker` (a certificate's worker id; "" for none) holds a rank of the job's current
// attempt.
bool HoldsARank(const v1::Job& job, absl::string_view worker);

// UNAVAILABLE for a stream open since `since` for `max` or longer (the client reconnects and
// goes on where it was: streams are resumable by design), else OK.
absl::Status StreamWithinMaximum(absl::Time now, absl::Time since, absl::Duration max);

}  // namespace dstrain::coordinator::internal
