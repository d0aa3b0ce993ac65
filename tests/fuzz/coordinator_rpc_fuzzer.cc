// Fuzzes the coordinator's request handlers (coordinator/server/coordinator.h): every JobService,
// WorkerService and CheckpointService call, and the store's scope check, as the gRPC services
// make them after the Authorizer let the caller in. An input is one byte choosing the method, one
// choosing the caller (trusted, a submitter who owns the job, another submitter, a viewer, the
// worker holding the job's rank, another worker, no one), and the serialized request. Each input
// runs against a fresh coordinator over an in-memory database holding one worker and one
// scheduled job. Properties besides no crash:
//   - no call ends with INTERNAL, UNKNOWN or DATA_LOSS (the database never fails here, so such a
//     code is a bug in the handler);
//   - a refused call changes nothing: the stored job and worker are as they were.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/clock/clock.h"
#include "coordinator/auth/caller.h"
#include "coordinator/server/coordinator.h"
#include "coordinator/state/mem_kv_db.h"
#include "coordinator/state/state.h"
#include "google/protobuf/stubs/logging.h"

namespace {

namespace v1 = dstrain::v1;
using dstrain::coordinator::Caller;
using dstrain::coordinator::Coordinator;

constexpr char kSpec[] = R"({"train_micro_batch_size_per_gpu": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 16,
              "block_size": 8},
    "data": {"train": "/data/train.bin"}, "job": {"world_size": 1, "train_steps": 3}})";

Caller CallerFor(uint8_t byte) {
  Caller caller;
  switch (byte % 7) {
    case 0:
      return Caller::Trusted();
    case 1:
      caller.principal = "alice";  // the job's owner
      caller.roles = dstrain::coordinator::kSubmitter;
      break;
    case 2:
      caller.principal = "bob";
      caller.roles = dstrain::coordinator::kSubmitter;
      break;
    case 3:
      caller.principal = "vera";
      caller.roles = dstrain::coordinator::kViewer;
      break;
    case 4:
      caller.worker = "w1";  // holds the job's rank
      break;
    case 5:
      caller.worker = "w2";
      break;
    default:
      break;  // no one
  }
  return caller;
}

// The stored job and workers, to compare before and after a refused call.
std::string Snapshot(dstrain::coordinator::CoordinatorState& state) {
  std::string out;
  auto job = state.GetJob("job");
  if (job.ok() && job->has_value()) out += (*job)->SerializeAsString();
  auto workers = state.ListWorkers();
  if (workers.ok()) {
    for (const v1::Worker& w : *workers) out += w.SerializeAsString();
  }
  return out;
}

void Fail(const char* what, uint8_t method, const absl::Status& status) {
  std::fprintf(stderr, "%s: method %d: %s\n", what, method, status.ToString().c_str());
  std::abort();
}

template <typename Request>
bool Parse(const uint8_t* data, size_t size, Request* request) {
  return request->ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; mutated inputs hold many.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t method = data[0] % 15;
  const Caller caller = CallerFor(data[1]);
  data += 2;
  size -= 2;

  dstrain::coordinator::MemKvDb db;
  dstrain::coordinator::CoordinatorState state(&db);
  dstrain::FakeClock clock;
  dstrain::coordinator::CoordinatorOptions options;
  options.limits.data_root = "/data";
  options.stream_poll = absl::ZeroDuration();
  auto made = Coordinator::Create(&state, &clock, options);
  if (!made.ok()) Fail("cannot create the coordinator", method, made.status());
  Coordinator& c = **made;
  v1::RegisterWorkerRequest worker;
  worker.set_worker_id("w1");
  worker.set_hostname("host");
  worker.set_cpu_slots(1);
  v1::SubmitJobRequest job;
  job.set_job_id("job");
  job.set_spec_json(kSpec);
  Caller alice;
  alice.principal = "alice";
  alice.roles = dstrain::coordinator::kSubmitter;
  if (!c.RegisterWorker(worker).ok() || !c.SubmitJob(job, alice).ok()) {
    Fail("cannot set up", method, absl::InternalError("setup"));
  }
  const std::string before = Snapshot(state);

  auto sends = [](const auto&) { return true; };
  auto at_once = [] { return true; };
  absl::Status status;
  switch (method) {
#define DT_UNARY(index, Request, call)          \
  case index: {                                 \
    v1::Request request;                        \
    if (!Parse(data, size, &request)) return 0; \
    status = c.call(request, caller).status();  \
    break;                                      \
  }
    DT_UNARY(0, SubmitJobRequest, SubmitJob)
    DT_UNARY(1, GetJobRequest, GetJob)
    DT_UNARY(2, ListJobsRequest, ListJobs)
    DT_UNARY(3, CancelJobRequest, CancelJob)
    DT_UNARY(4, RegisterWorkerRequest, RegisterWorker)
    DT_UNARY(5, HeartbeatRequest, Heartbeat)
    DT_UNARY(6, CommitCheckpointRequest, CommitCheckpoint)
    DT_UNARY(7, ListCheckpointsRequest, ListCheckpoints)
#undef DT_UNARY
    case 8: {
      v1::DeleteJobRequest request;
      if (!Parse(data, size, &request)) return 0;
      status = c.DeleteJob(request, caller);
      break;
    }
    case 9: {
      v1::ReportStatusRequest request;
      if (!Parse(data, size, &request)) return 0;
      status = c.ReportStatus(request, caller);
      break;
    }
    case 10: {
      v1::RegisterShardRequest request;
      if (!Parse(data, size, &request)) return 0;
      status = c.RegisterShard(request, caller);
      break;
    }
    case 11: {
      v1::WatchJobRequest request;
      if (!Parse(data, size, &request)) return 0;
      status = c.WatchJob(request, sends, at_once, caller);
      break;
    }
    case 12: {
      v1::GetJobLogsRequest request;
      if (!Parse(data, size, &request)) return 0;
      status = c.GetJobLogs(request, sends, at_once, caller);
      break;
    }
    case 13: {
      v1::StreamAssignmentsRequest request;
      if (!Parse(data, size, &request)) return 0;
      status = c.StreamAssignments(request, sends, at_once, caller);
      break;
    }
    default:
      status = c.MayUseStoreScope(caller, std::string(reinterpret_cast<const char*>(data), size));
      break;
  }
  const absl::StatusCode code = status.code();
  if (code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown ||
      code == absl::StatusCode::kDataLoss) {
    Fail("a handler failed with a code for bugs", method, status);
  }
  // Streams end by the client going away (CANCELLED) after what they sent: not a refusal.
  if (!status.ok() && code != absl::StatusCode::kCancelled && Snapshot(state) != before) {
    Fail("a refused call changed the stored job or workers", method, status);
  }
  c.Shutdown();
  return 0;
}
