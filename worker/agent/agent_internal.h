// What the files implementing Agent share (agent.cc: start and shutdown; agent_session.cc:
// registration, heartbeats and the assignment stream; agent_supervisor.cc: assignments and the
// trainer processes; agent_reports.cc: output, metrics and status reports). Not part of the
// Agent's contract.
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/retry/retry.h"
#include "proto/worker.pb.h"
#include "worker/agent/agent.h"
#include "worker/agent/metrics_tail.h"
#include "worker/agent/trainer_process.h"

namespace dstrain::agent {
namespace internal {

// One line on stderr, "dstrain-worker: <message>".
void Log(const std::string& message);

// "SUCCEEDED" for RANK_STATE_SUCCEEDED.
std::string StateName(v1::RankState state);

// "job <job> attempt <attempt> rank <rank>", as log lines and report messages name a rank.
std::string KeyName(const std::string& job, int32_t attempt, int32_t rank);

// A gRPC deadline `d` from now.
std::chrono::system_clock::time_point Deadline(absl::Duration d);

// "UNAVAILABLE: <message>".
std::string Describe(const grpc::Status& status);

// The options' backoff for one retry loop.
retry::BackoffOptions BackoffFor(const AgentOptions& options);

}  // namespace internal

// One trainer process and what the supervisor knows about it.
struct Agent::Trainer {
  RankKey key;
  v1::Assignment assignment;
  std::string dir;
  std::unique_ptr<TrainerProcess> process;
  std::unique_ptr<MetricsTail> tail;  // rank 0 only
  std::unique_ptr<StepMetricsParser> parser;
  v1::RankState state = v1::RANK_STATE_STARTING;
  bool transition_pending = false;  // state changed; the next report carries it
  uint64_t table_generation = 0;
  std::vector<v1::LogLine> pending;  // output not yet reported
  std::deque<std::string> last_lines;
  absl::Time last_flush;
  bool bad_metrics_logged = false;
  bool stop_requested = false;
  std::string stop_reason;
  absl::Time kill_at = absl::InfiniteFuture();
  bool sigkilled = false;
};

}  // namespace dstrain::agent
