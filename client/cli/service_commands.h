// The service commands of `dstrain` (docs/service.md): the CLI side of the coordinator's
// JobService, WorkerService.ListWorkers and CheckpointService.ListCheckpoints (docs/wire-api.md).
//
//   dstrain submit JOB.json [--id ID] [--priority P] [--world N] [--follow]
//   dstrain list [--state S ...] [--name SUBSTR] [--limit N] [-o json]
//   dstrain status JOB [-o json]
//   dstrain watch JOB
//   dstrain logs JOB [-f] [--rank R] [--tail N]
//   dstrain cancel JOB [--reason TEXT]
//   dstrain workers [-o json]
//   dstrain checkpoints JOB [-o json]
//
// Every command takes `--coordinator HOST:PORT` (else $DSTRAIN_COORDINATOR; there is no
// default). Unary RPCs get a deadline (ServiceContext::rpc_timeout); streams do not, and
// `watch`/`logs` reconnect from where they stopped when a stream breaks with a transient error
// (common/retry: UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED).
//
// Exit codes: 0 success; 1 the operation failed (a gRPC error such as NOT_FOUND or UNAVAILABLE,
// a watched job that ended FAILED or CANCELLED); 2 bad usage or invalid input (an invalid job
// file, a bad flag, no coordinator given, INVALID_ARGUMENT from the coordinator).
// A gRPC error prints `dstrain <command>: <CODE>: <message>` on the error stream.
//
// Thread-safety: RunServiceCommand is reentrant as long as each call has its own output streams.
#pragma once

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls/tls.h"
#include "proto/checkpoint.grpc.pb.h"
#include "proto/job.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace dstrain::cli {

// The coordinator's services, by interface: tests may hand in stubs of anything.
struct ServiceStubs {
  std::unique_ptr<v1::JobService::StubInterface> jobs;
  std::unique_ptr<v1::WorkerService::StubInterface> workers;
  std::unique_ptr<v1::CheckpointService::StubInterface> checkpoints;
};

// How the CLI proves itself to the coordinator (docs/security.md): TLS (the CA that signs the
// coordinator's certificate, or plaintext with insecure) and a bearer token.
struct ClientSecurity {
  tls::TlsConfig tls;
  std::string token;  // "" = none; never sent over plaintext
};

// Stubs over one channel to `address` (any gRPC target: HOST:PORT, unix:PATH, ...), TLS unless
// security.tls.insecure, carrying the token on every call. INVALID_ARGUMENT / NOT_FOUND when the
// TLS files cannot be read.
absl::StatusOr<ServiceStubs> ConnectToCoordinator(const std::string& address,
                                                  const ClientSecurity& security);

// Everything a command reads from or writes to its environment.
struct ServiceContext {
  FILE* out = stdout;  // results: tables, JSON, job ids, progress, log lines
  FILE* err = stderr;  // errors and notices
  // A terminal: the progress line is redrawn in place (carriage return) instead of one line per
  // update.
  bool out_is_tty = false;
  int terminal_columns = 0;     // bound of the progress line; 0 = none
  std::string env_coordinator;  // $DSTRAIN_COORDINATOR; "" = unset
  // DSTRAIN_TLS_CA, DSTRAIN_TLS_CERT, DSTRAIN_TLS_KEY, DSTRAIN_INSECURE, DSTRAIN_TOKEN and
  // DSTRAIN_TOKEN_FILE, where set; flags (--tls-ca ..., --insecure, --token-file) win.
  std::map<std::string, std::string> env_security;
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Stream reconnects: the delay doubles from reconnect_delay up to max_reconnect_delay (with
  // retry::Backoff's jitter, which only shortens it); after max_reconnects attempts in a row that
  // received nothing, the command gives up (exit 1).
  absl::Duration reconnect_delay = absl::Milliseconds(500);
  absl::Duration max_reconnect_delay = absl::Seconds(5);
  int max_reconnects = 30;
  absl::TimeZone time_zone = absl::UTCTimeZone();
  std::function<absl::Time()> now = [] { return absl::Now(); };
  std::function<absl::StatusOr<ServiceStubs>(const std::string& address,
                                             const ClientSecurity& security)>
      connect = ConnectToCoordinator;
  // The random part of a default job id: 6 characters of [a-z0-9]; unset = std::random_device.
  std::function<std::string()> random_suffix;
};

// The context of the `dstrain` process: stdout/stderr, isatty, the terminal's width,
// $DSTRAIN_COORDINATOR, the local time zone.
ServiceContext ProcessServiceContext();

// True for submit, list, status, watch, logs, cancel, workers, checkpoints.
bool IsServiceCommand(const std::string& command);

// Runs `dstrain <command> <args...>` and returns the exit code.
int RunServiceCommand(const std::string& command, const std::vector<std::string>& args,
                      const ServiceContext& context);

// Usage of the service commands, for `dstrain help`.
extern const char kServiceCommandsUsage[];

// Job ids: 1 to 63 characters of [a-z0-9-], starting with a letter (proto/job.proto Job.job_id).
bool IsValidJobId(const std::string& id);

// `name` made into an id prefix (lowercased, other characters as '-', runs of '-' merged, leading
// non-letters and trailing '-' dropped, "job" when nothing is left, at most 56 characters) +
// "-" + `suffix`.
std::string DefaultJobId(const std::string& name, const std::string& suffix);

// What `submit` sends: the job file made self-contained, so the coordinator and the workers can
// run it from any directory. The job is first validated as `dstrain validate` does (errors are
// those of config::LoadJobSpec: kInvalidArgument with the key path, kNotFound for a missing
// file), with job.device read ahead of the parser (common/jobspec/job_device.h), so a job can ask
// for its device before the parser knows the key (the key is sent as written). Then, in the job
// file's own JSON (comments dropped): a `deepspeed_config` file is inlined (its keys merged, the
// reference removed), the paths data.train, data.val, model.init_from and job.checkpoint_dir are
// replaced by their absolute forms (resolved against the job file's directory, as config.cc does),
// job.name is set when it was left to default to the file's stem, and job.world_size is set to
// `world` when given. The result is checked to validate, without a base directory, to the same
// effective configuration (kInternal otherwise).
struct SubmittedSpec {
  std::string spec_json;
  std::string name;  // job.name
  // The job's keys without effect (config::JobSpec::no_effect_notes), for stderr.
  std::vector<std::string> no_effect_notes;
};
absl::StatusOr<SubmittedSpec> MakeSelfContainedSpec(const std::string& job_path,
                                                    std::optional<int> world);

}  // namespace dstrain::cli
