#include "client/cli/service_commands.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/cli/output.h"
#include "client/cli/plot.h"
#include "client/cli/progress_bar.h"
#include "common/flags/flags.h"
#include "common/grpc/grpc_status.h"
#include "common/jobspec/job_device.h"
#include "common/retry/retry.h"
#include "common/status/status_macros.h"
#include "worker/config/config.h"

namespace dstrain::cli {

const char kServiceCommandsUsage[] =
    R"(service commands (talk to a dstrain-coordinator given by --coordinator HOST:PORT or
$DSTRAIN_COORDINATOR, over TLS verified against --tls-ca or $DSTRAIN_TLS_CA (the system's roots
when neither is set; --insecure or DSTRAIN_INSECURE=1 for a plaintext coordinator), with the
bearer token in $DSTRAIN_TOKEN or the file --token-file or $DSTRAIN_TOKEN_FILE names; -o json
prints the coordinator's answer as one JSON document):
  submit JOB.json [--id ID] [--priority P] [--world N] [--follow]
      Validate the job as `validate` does (exit 2 on an error, nothing is sent), make it
      self-contained (paths absolute, a deepspeed_config file inlined) and submit it. Prints the
      job id (default: the job name plus 6 random characters). --follow then watches the job
      and exits 0 if it SUCCEEDED, 1 if it FAILED or was CANCELLED.
  list [--state S ...] [--name SUBSTR] [--limit N] [-o json]
      Jobs, newest first: ID, NAME, STATE, WORLD, STEP/TOTAL, AGE, REASON.
  status JOB [-o json]
      The job (its device, and while queued what it waits for), its rank assignments (worker,
      slot, gpu or cpu), its event history and its last metrics.
  watch JOB
      Follow the job's progress and state changes until it ends; exit 0 if it SUCCEEDED,
      1 otherwise.
  logs JOB [-f] [--rank R] [--tail N]
      The trainers' output, each line prefixed with `[rank R]`; -f keeps following until the
      job has ended.
  cancel JOB [--reason TEXT]
      Stop every rank and mark the job CANCELLED.
  delete JOB
      Remove an ended job with its events, metrics, logs and checkpoint records (the
      checkpoint files stay where the job wrote them).
  workers [-o json]
      The workers the coordinator knows: ID, STATE, GPUS (count, model and memory), CPU SLOTS,
      USED, HEARTBEAT AGE, HOST.
  checkpoints JOB [-o json]
      The job's checkpoints: TAG, STEP, STATE, BYTES, SHARDS, COMMITTED AT, PATH.
  plot JOB [--out FILE.png|.svg|.pdf] [--metrics loss,val_loss,...]
  plot --metrics-file METRICS.jsonl [--out FILE] [--metrics ...]
      Draw the run's curves against the step (one panel per metric, val_loss beside loss)
      from the coordinator's stored metrics, or from a `train`/`launch` --metrics-out file (no
      coordinator needed). Metrics: loss, val_loss, lr, grad_norm, loss_scale, tokens_per_s,
      step_s, comm_wait_s, comm_bytes, checkpoint_s (default loss,val_loss,lr,grad_norm,
      tokens_per_s). --out defaults to JOB.png (METRICS.png for a file). Needs /usr/bin/python3
      with matplotlib (Debian: python3-matplotlib).
)";

// The bearer token a --token-file names (defined below).
absl::StatusOr<std::string> ReadToken(const std::string& path);

namespace {

using json = nlohmann::json;

constexpr int kMaxIdPrefix = 56;  // 63 - "-" - 6 random characters
constexpr int kStatusMetrics = 5;
constexpr int kMaxListPages = 100000;

// --------------------------------------------------------------------------------------------
// Arguments.

// The flags a command takes. "output" stands for -o/--output, "follow" for -f/--follow.
struct FlagSpec {
  std::set<std::string> value_flags;
  std::set<std::string> bool_flags;
  bool repeated_state = false;  // --state may repeat (list)
};

struct CommandArgs {
  flags::ParsedArgs parsed;
  std::vector<std::string> states;
};

// Maps the short forms (-o VALUE, -oVALUE, -o=VALUE, -f) to long flags, collects repeated
// --state values, and hands the rest to ParseArgs. A value is never taken for a flag.
absl::StatusOr<CommandArgs> ParseCommandArgs(const std::vector<std::string>& args, FlagSpec spec) {
  spec.value_flags.insert("coordinator");
  // How to reach it (Session::Connect).
  for (const std::string& flag : tls::ValueFlags()) spec.value_flags.insert(flag);
  spec.value_flags.insert("token-file");
  spec.bool_flags.insert(tls::kInsecureFlag);
  CommandArgs out;
  std::vector<std::string> rewritten;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (absl::StartsWith(a, "--")) {
      std::string name = a.substr(2);
      const size_t eq = name.find('=');
      const bool inline_value = eq != std::string::npos;
      if (inline_value) name = name.substr(0, eq);
      if (spec.repeated_state && name == "state") {
        std::string value;
        if (inline_value) {
          value = a.substr(2 + eq + 1);
        } else if (i + 1 < args.size()) {
          value = args[++i];
        } else {
          return absl::InvalidArgumentError("--state needs a value");
        }
        for (absl::string_view s : absl::StrSplit(value, ',', absl::SkipEmpty())) {
          out.states.emplace_back(s);
        }
        continue;
      }
      rewritten.push_back(a);
      if (!inline_value && spec.value_flags.count(name) && i + 1 < args.size()) {
        rewritten.push_back(args[++i]);  // the value, verbatim even if it starts with '-'
      }
      continue;
    }
    if (a.size() >= 2 && a[0] == '-') {
      if (a[1] == 'o' && spec.value_flags.count("output")) {
        if (a.size() == 2) {
          rewritten.push_back("--output");
        } else {
          rewritten.push_back(absl::StrCat("--output=", a.substr(a[2] == '=' ? 3 : 2)));
        }
        continue;
      }
      if (a == "-f" && spec.bool_flags.count("follow")) {
        rewritten.push_back("--follow");
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a));
    }
    rewritten.push_back(a);
  }
  auto parsed = flags::ParseArgs(rewritten, spec.value_flags, spec.bool_flags);
  if (!parsed.ok()) return parsed.status();
  out.parsed = std::move(*parsed);
  return out;
}

// An integer flag of at least `min`: nullopt when it is absent; INVALID_ARGUMENT when it is not
// an integer or below `min` (`note` says what the bound means).
absl::StatusOr<std::optional<int>> BoundedIntFlag(const flags::ParsedArgs& parsed,
                                                  const std::string& name, int min,
                                                  absl::string_view note = "") {
  if (!parsed.Has(name)) return std::optional<int>();
  absl::StatusOr<int> value = parsed.GetInt(name, min);
  if (!value.ok()) return value.status();
  if (*value < min) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be >= ", min, note));
  }
  return std::optional<int>(*value);
}

absl::StatusOr<bool> JsonOutput(const flags::ParsedArgs& parsed) {
  const std::string format = parsed.Get("output", "table");
  if (format == "json") return true;
  if (format == "table") return false;
  return absl::InvalidArgumentError(
      absl::StrCat("-o: unknown output format '", format, "' (json or table)"));
}

std::string RandomSuffix() {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::mt19937_64 rng((static_cast<uint64_t>(device()) << 32) ^ device() ^
                      static_cast<uint64_t>(absl::GetCurrentTimeNanos()));
  std::uniform_int_distribution<int> pick(0, 35);
  std::string s;
  for (int i = 0; i < 6; ++i) s.push_back(kChars[pick(rng)]);
  return s;
}

// A broken stream worth reconnecting (common/retry's transient codes).
bool Retryable(grpc::StatusCode code) { return retry::IsTransient(FromGrpcCode(code)); }

std::string CodeName(grpc::StatusCode code) { return absl::StatusCodeToString(FromGrpcCode(code)); }

std::string StepTotal(int64_t step, int64_t total) {
  return total > 0 ? absl::StrCat(step, "/", total) : absl::StrCat(step);
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

std::string Number(double v) { return absl::StrFormat("%.6g", v); }

// A worker's GPUs in a few words: "-", or runs of the same model and memory, e.g.
// "2 x NVIDIA H200 (140.0 GiB)".
std::string DescribeGpus(const google::protobuf::RepeatedPtrField<v1::GpuInfo>& gpus) {
  std::vector<std::string> runs;
  for (int i = 0; i < gpus.size();) {
    int j = i + 1;
    while (j < gpus.size() && gpus[j].name() == gpus[i].name() &&
           gpus[j].memory_bytes() == gpus[i].memory_bytes()) {
      ++j;
    }
    runs.push_back(absl::StrCat(j - i, " x ", gpus[i].name().empty() ? "GPU" : gpus[i].name(), " (",
                                FormatBytes(gpus[i].memory_bytes()), ")"));
    i = j;
  }
  return runs.empty() ? "-" : absl::StrJoin(runs, ", ");
}

// --------------------------------------------------------------------------------------------
// One command run: the context, the coordinator's stubs and the output helpers.

class Session {
 public:
  Session(const std::string& command, const ServiceContext& context)
      : command_(command), ctx_(context) {}

  int Run(const std::vector<std::string>& args);

 private:
  int Submit(const std::vector<std::string>& args);
  int List(const std::vector<std::string>& args);
  int Status(const std::vector<std::string>& args);
  int Watch(const std::vector<std::string>& args);
  int Logs(const std::vector<std::string>& args);
  int Cancel(const std::vector<std::string>& args);
  int Delete(const std::vector<std::string>& args);
  int Workers(const std::vector<std::string>& args);
  int Checkpoints(const std::vector<std::string>& args);
  int Plot(const std::vector<std::string>& args);
  // The job's stored metrics in (attempt, step) order, through its last reported step.
  absl::StatusOr<std::vector<v1::StepMetrics>> StoredMetrics(const std::string& job_id);

  // Parses the command's arguments and connects; a usage error is printed and returned as the
  // exit code (2). `positionals` is how many positional arguments the command takes.
  std::optional<int> Prepare(const std::vector<std::string>& args, const FlagSpec& flags,
                             size_t positionals, const std::string& usage, CommandArgs* out);
  // Resolves the coordinator's address and security (flags, then environment) and creates the
  // stubs.
  absl::Status Connect(const flags::ParsedArgs& parsed);
  absl::StatusOr<ClientSecurity> Security(const flags::ParsedArgs& parsed) const;

  // Follows the job's WatchJob stream until it ends; the exit code (0 = SUCCEEDED).
  int WatchUntilDone(const std::string& job_id, int64_t from_step);
  int Finished(const std::string& job_id, v1::JobState state, const std::string& reason,
               const std::string& message);

  int UsageError(const absl::Status& status);
  int Error(const std::string& message, int code = 1);
  int RpcError(const grpc::Status& status, const std::string& hint = "");
  int PrintJson(const google::protobuf::Message& message);
  void SetDeadline(grpc::ClientContext* context) const {
    context->set_deadline(absl::ToChronoTime(absl::Now() + ctx_.rpc_timeout));
  }
  // The waits between stream reconnects: from reconnect_delay, doubling, up to the maximum.
  retry::Backoff ReconnectBackoff() const {
    retry::BackoffOptions options;
    options.initial = ctx_.reconnect_delay;
    options.max = ctx_.max_reconnect_delay;
    return retry::Backoff(options);
  }

  // The progress line: on a terminal redrawn in place, otherwise one line per update.
  void ShowProgress();
  void ClearProgress();  // before other output on a terminal
  void EndProgress();    // leaves the last progress line on screen

  void Print(const std::string& text) {
    std::fputs(text.c_str(), ctx_.out);
    std::fflush(ctx_.out);
  }
  void Notice(const std::string& text) {
    ClearProgress();
    absl::FPrintF(ctx_.err, "dstrain %s: %s\n", command_, text);
    std::fflush(ctx_.err);
  }

  const std::string command_;
  const ServiceContext& ctx_;
  std::string address_;
  ServiceStubs stubs_;

  ProgressState progress_;
  StepRateEstimator rate_;
  bool progress_known_ = false;  // metrics were seen
  bool progress_drawn_ = false;  // a progress line is on the terminal's current line
};

int Session::Run(const std::vector<std::string>& args) {
  if (command_ == "submit") return Submit(args);
  if (command_ == "list") return List(args);
  if (command_ == "status") return Status(args);
  if (command_ == "watch") return Watch(args);
  if (command_ == "logs") return Logs(args);
  if (command_ == "plot") return Plot(args);
  if (command_ == "cancel") return Cancel(args);
  if (command_ == "delete") return Delete(args);
  if (command_ == "workers") return Workers(args);
  if (command_ == "checkpoints") return Checkpoints(args);
  return Error(absl::StrCat("not a service command: ", command_), 2);
}

int Session::UsageError(const absl::Status& status) {
  return Error(std::string(status.message()), 2);
}

int Session::Error(const std::string& message, int code) {
  ClearProgress();
  absl::FPrintF(ctx_.err, "dstrain %s: %s\n", command_, message);
  std::fflush(ctx_.err);
  return code;
}

int Session::RpcError(const grpc::Status& status, const std::string& hint) {
  const grpc::StatusCode code = status.error_code();
  Error(absl::StrCat(CodeName(code), ": ", status.error_message()));
  if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    Error(absl::StrCat("is dstrain-coordinator running at ", address_,
                       "? (and TLS as it expects: --tls-ca / DSTRAIN_TLS_CA, or --insecure for a "
                       "plaintext one)"));
  } else if (code == grpc::StatusCode::UNAUTHENTICATED) {
    Error("set DSTRAIN_TOKEN (or --token-file FILE) to a token the coordinator's --tokens lists");
  } else if (!hint.empty()) {
    Error(hint);
  }
  return code == grpc::StatusCode::INVALID_ARGUMENT ? 2 : 1;
}

int Session::PrintJson(const google::protobuf::Message& message) {
  auto text = ToJson(message);
  if (!text.ok()) return Error(std::string(text.status().message()));
  Print(*text);
  return 0;
}

absl::Status Session::Connect(const flags::ParsedArgs& parsed) {
  address_ = parsed.Has("coordinator") ? parsed.Get("coordinator") : ctx_.env_coordinator;
  if (address_.empty()) {
    return absl::InvalidArgumentError(
        "no coordinator given: pass --coordinator HOST:PORT or set DSTRAIN_COORDINATOR");
  }
  // A bare host would silently mean port 443; other gRPC targets (unix:, dns:///...) pass.
  if (address_.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator address '", address_, "' has no port (expected HOST:PORT)"));
  }
  DT_ASSIGN_OR_RETURN(ClientSecurity security, Security(parsed));
  DT_ASSIGN_OR_RETURN(stubs_, ctx_.connect(address_, security));
  return absl::OkStatus();
}

absl::StatusOr<ClientSecurity> Session::Security(const flags::ParsedArgs& parsed) const {
  ClientSecurity security;
  bool tls_flags = parsed.Has(tls::kInsecureFlag);
  for (const std::string& flag : tls::ValueFlags()) tls_flags = tls_flags || parsed.Has(flag);
  if (tls_flags) {
    DT_ASSIGN_OR_RETURN(security.tls, tls::ConfigFromArgs(parsed, tls::Role::kClient));
  } else {
    DT_ASSIGN_OR_RETURN(security.tls,
                        tls::ConfigFromEnvironment(ctx_.env_security, tls::Role::kClient));
  }
  if (security.tls.insecure) return security;  // a token is never sent in plaintext
  auto env = [this](const char* name) {
    auto it = ctx_.env_security.find(name);
    return it == ctx_.env_security.end() ? std::string() : it->second;
  };
  std::string token_file = parsed.Get("token-file");
  if (token_file.empty() && env("DSTRAIN_TOKEN").empty()) token_file = env("DSTRAIN_TOKEN_FILE");
  if (token_file.empty()) {
    security.token = env("DSTRAIN_TOKEN");
  } else {
    DT_ASSIGN_OR_RETURN(security.token, ReadToken(token_file));
  }
  return security;
}

std::optional<int> Session::Prepare(const std::vector<std::string>& args, const FlagSpec& flags,
                                    size_t positionals, const std::string& usage,
                                    CommandArgs* out) {
  auto parsed = ParseCommandArgs(args, flags);
  if (!parsed.ok()) return UsageError(parsed.status());
  if (parsed->parsed.positional.size() != positionals) {
    return Error(absl::StrCat("usage: dstrain ", usage), 2);
  }
  absl::Status connected = Connect(parsed->parsed);
  if (!connected.ok()) return UsageError(connected);
  *out = std::move(*parsed);
  return std::nullopt;
}

// --------------------------------------------------------------------------------------------
// The progress line.

void Session::ShowProgress() {
  // One column short of the terminal's width: a line filling the last column wraps on some
  // terminals, and the carriage return would then redraw on the wrong line.
  // The loss sparkline only on a terminal: a log gets plain lines.
  ProgressState state = progress_;
  if (!ctx_.out_is_tty) state.loss_history.clear();
  const std::string line =
      FormatProgressLine(state, ctx_.out_is_tty ? std::max(ctx_.terminal_columns - 1, 0) : 0);
  if (ctx_.out_is_tty) {
    absl::FPrintF(ctx_.out, "\r%s\x1b[K", line);
    progress_drawn_ = true;
  } else {
    absl::FPrintF(ctx_.out, "%s\n", line);
  }
  std::fflush(ctx_.out);
}

void Session::ClearProgress() {
  if (!progress_drawn_) return;
  std::fputs("\r\x1b[K", ctx_.out);
  std::fflush(ctx_.out);
  progress_drawn_ = false;
}

void Session::EndProgress() {
  if (!progress_drawn_) return;
  std::fputs("\n", ctx_.out);
  std::fflush(ctx_.out);
  progress_drawn_ = false;
}

// --------------------------------------------------------------------------------------------
// Commands.

int Session::Submit(const std::vector<std::string>& args) {
  CommandArgs a;
  const char* usage = "submit JOB.json [--id ID] [--priority P] [--world N] [--follow]";
  if (auto code = Prepare(args, {{"id", "priority", "world"}, {"follow"}}, 1, usage, &a)) {
    return *code;
  }
  const flags::ParsedArgs& p = a.parsed;
  auto world = BoundedIntFlag(p, "world", 1);
  if (!world.ok()) return UsageError(world.status());
  auto priority = p.GetInt("priority", 0);
  if (!priority.ok()) return UsageError(priority.status());
  std::string id = p.Get("id");
  if (p.Has("id") && !IsValidJobId(id)) {
    return Error(absl::StrCat("--id '", id,
                              "': a job id is 1 to 63 characters of [a-z0-9-] starting with a "
                              "letter"),
                 2);
  }

  // Validated before anything is sent; a bad job is a usage error, as for `validate`.
  auto spec = MakeSelfContainedSpec(p.positional[0], *world);
  if (!spec.ok()) {
    const absl::StatusCode code = spec.status().code();
    return Error(
        std::string(spec.status().message()),
        code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ? 2 : 1);
  }
  std::fputs(config::NoteLines(spec->no_effect_notes).c_str(), ctx_.err);
  if (id.empty()) {
    id = DefaultJobId(spec->name, ctx_.random_suffix ? ctx_.random_suffix() : RandomSuffix());
  }

  v1::SubmitJobRequest request;
  request.set_job_id(id);
  request.set_spec_json(spec->spec_json);
  request.set_priority(*priority);
  v1::SubmitJobResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stubs_.jobs->SubmitJob(&context, request, &response);
  if (!status.ok()) {
    return RpcError(status, status.error_code() == grpc::StatusCode::ALREADY_EXISTS
                                ? absl::StrCat("job id '", id,
                                               "' is taken by a job with another spec or "
                                               "priority; choose another --id")
                                : "");
  }
  // stdout gets the id alone, so `ID=$(dstrain submit job.json)` works.
  Print(absl::StrCat(id, "\n"));
  if (!response.created()) {
    Notice(absl::StrCat("job ", id, " already existed with the same spec and priority (",
                        JobStateName(response.job().state()), "); not submitted again"));
  }
  if (!p.Has("follow")) return 0;
  return WatchUntilDone(id, response.job().current_step());
}

int Session::List(const std::vector<std::string>& args) {
  CommandArgs a;
  FlagSpec flags{{"limit", "name", "output"}, {}, /*repeated_state=*/true};
  if (auto code = Prepare(args, flags, 0,
                          "list [--state S ...] [--name SUBSTR] [--limit N] [-o json]", &a)) {
    return *code;
  }
  const flags::ParsedArgs& p = a.parsed;
  auto as_json = JsonOutput(p);
  if (!as_json.ok()) return UsageError(as_json.status());
  auto limit_flag = BoundedIntFlag(p, "limit", 0, " (0: all jobs)");
  if (!limit_flag.ok()) return UsageError(limit_flag.status());
  const int limit = limit_flag->value_or(0);

  v1::ListJobsRequest request;
  for (const std::string& s : a.states) {
    auto state = ParseJobState(s);
    if (!state.ok()) return UsageError(state.status());
    request.add_states(*state);
  }
  request.set_name_contains(p.Get("name"));
  request.set_page_size(limit);
  v1::ListJobsResponse all;
  for (int page = 0;; ++page) {
    if (page >= kMaxListPages) return Error("too many pages; the coordinator's paging loops");
    v1::ListJobsResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = stubs_.jobs->ListJobs(&context, request, &response);
    if (!status.ok()) return RpcError(status);
    for (v1::Job& job : *response.mutable_jobs()) {
      if (limit > 0 && all.jobs_size() >= limit) break;
      *all.add_jobs() = std::move(job);
    }
    if (response.next_page_token().empty() || (limit > 0 && all.jobs_size() >= limit)) break;
    if (response.next_page_token() == request.page_token()) {
      return Error("the coordinator returned the same page token twice");
    }
    request.set_page_token(response.next_page_token());
  }
  if (*as_json) return PrintJson(all);

  const absl::Time now = ctx_.now();
  Table table({"ID", "NAME", "STATE", "WORLD", "STEP/TOTAL", "AGE", "REASON"});
  for (const v1::Job& job : all.jobs()) {
    table.AddRow({job.job_id(), OrDash(job.name()), JobStateName(job.state()),
                  absl::StrCat(job.world_size()), StepTotal(job.current_step(), job.train_steps()),
                  FormatTimestampAge(job.create_time(), now), OrDash(job.state_reason())});
  }
  Print(table.Render());
  return 0;
}

int Session::Status(const std::vector<std::string>& args) {
  CommandArgs a;
  if (auto code = Prepare(args, {{"output"}, {}}, 1, "status JOB [-o json]", &a)) return *code;
  auto as_json = JsonOutput(a.parsed);
  if (!as_json.ok()) return UsageError(as_json.status());
  v1::GetJobRequest request;
  request.set_job_id(a.parsed.positional[0]);
  request.set_metrics_limit(kStatusMetrics);
  v1::GetJobResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stubs_.jobs->GetJob(&context, request, &response);
  if (!status.ok()) return RpcError(status);
  if (*as_json) return PrintJson(response);

  const v1::Job& job = response.job();
  const absl::Time now = ctx_.now();
  const auto when = [&](const google::protobuf::Timestamp& ts) {
    const std::string t = FormatTimestamp(ts, ctx_.time_zone);
    return t == "-" ? t : absl::StrCat(t, " (", FormatTimestampAge(ts, now), " ago)");
  };
  std::string state = JobStateName(job.state());
  if (!job.state_reason().empty()) absl::StrAppend(&state, " (", job.state_reason(), ")");
  std::string out;
  absl::StrAppend(&out, "Job:         ", job.job_id(), "\n");
  absl::StrAppend(&out, "Name:        ", OrDash(job.name()), "\n");
  absl::StrAppend(&out, "State:       ", state, "\n");
  if (!job.state_message().empty()) {
    absl::StrAppend(&out, "Message:     ", job.state_message(), "\n");
  }
  if (!job.queue_reason().empty()) {
    absl::StrAppend(&out, "Waiting:     ", job.queue_reason(), "\n");
  }
  absl::StrAppend(&out, "Priority:    ", job.priority(), "\n");
  absl::StrAppend(&out, "World size:  ", job.world_size(), "\n");
  absl::StrAppend(&out, "Device:      ", jobspec::JobDeviceName(job.device()), "\n");
  absl::StrAppend(&out, "Step:        ", StepTotal(job.current_step(), job.train_steps()), "\n");
  absl::StrAppend(&out, "Attempt:     ", job.attempt(), " (restarts ", job.restarts(), " of ",
                  job.max_restarts(), ")\n");
  absl::StrAppend(&out, "Created:     ", when(job.create_time()), "\n");
  absl::StrAppend(&out, "Started:     ", when(job.start_time()), "\n");
  absl::StrAppend(&out, "Ended:       ", when(job.end_time()), "\n");

  absl::StrAppend(&out, "\nAssignments:\n");
  if (job.assignments().empty()) {
    absl::StrAppend(&out, "  (none)\n");
  } else {
    Table t({"RANK", "WORKER", "SLOT", "KIND"});
    for (const v1::RankAssignment& r : job.assignments()) {
      t.AddRow({absl::StrCat(r.rank()), r.worker_id(), absl::StrCat(r.slot()),
                r.slot_kind() == v1::SLOT_KIND_GPU ? "gpu" : "cpu"});
    }
    for (absl::string_view line : absl::StrSplit(t.Render(), '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
  }

  absl::StrAppend(&out, "\nEvents:\n");
  if (response.events().empty()) {
    absl::StrAppend(&out, "  (none)\n");
  } else {
    Table t({"TIME", "FROM", "TO", "REASON", "MESSAGE"});
    for (const v1::JobEvent& e : response.events()) {
      t.AddRow({FormatTimestamp(e.time(), ctx_.time_zone),
                e.from_state() == v1::JOB_STATE_UNSPECIFIED ? "-" : JobStateName(e.from_state()),
                JobStateName(e.to_state()), OrDash(e.reason()), e.message()});
    }
    for (absl::string_view line : absl::StrSplit(t.Render(), '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
  }

  std::vector<v1::StepMetrics> metrics(response.metrics().begin(), response.metrics().end());
  if (metrics.empty() && job.has_latest_metrics()) metrics.push_back(job.latest_metrics());
  absl::StrAppend(&out, "\nMetrics:\n");
  if (metrics.empty()) {
    absl::StrAppend(&out, "  (none yet)\n");
  } else {
    Table t({"STEP", "LOSS", "VAL LOSS", "LR", "GRAD NORM", "TOK/S", "STEP TIME", "ATTEMPT"});
    for (const v1::StepMetrics& m : metrics) {
      t.AddRow({absl::StrCat(m.step()), Number(m.loss()),
                m.has_val_loss() ? Number(m.val_loss()) : "-", Number(m.lr()),
                Number(m.grad_norm()), FormatThousands(std::llround(m.tokens_per_second())),
                absl::StrFormat("%.3fs", m.step_seconds()), absl::StrCat(m.attempt())});
    }
    for (absl::string_view line : absl::StrSplit(t.Render(), '\n', absl::SkipEmpty())) {
      absl::StrAppend(&out, "  ", line, "\n");
    }
  }
  Print(out);
  return 0;
}

int Session::Watch(const std::vector<std::string>& args) {
  CommandArgs a;
  if (auto code = Prepare(args, {}, 1, "watch JOB", &a)) return *code;
  const std::string& job_id = a.parsed.positional[0];
  // Where the job stands now: a clear NOT_FOUND or UNAVAILABLE before the stream, and the step
  // to start the metrics from (the latest one, not the whole history).
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::GetJobResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stubs_.jobs->GetJob(&context, request, &response);
  if (!status.ok()) return RpcError(status);
  return WatchUntilDone(job_id, response.job().current_step());
}

int Session::WatchUntilDone(const std::string& job_id, int64_t from_step) {
  int64_t next_step = from_step;
  int64_t next_event = 0;
  int failures = 0;
  retry::Backoff backoff = ReconnectBackoff();
  while (true) {
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_from_step(next_step);
    request.set_from_event_sequence(next_event);
    auto reader = stubs_.jobs->WatchJob(&context, request);
    v1::WatchJobResponse response;
    bool progressed = false;
    std::optional<v1::JobEvent> terminal;
    while (reader->Read(&response)) {
      progressed = true;
      if (response.job().train_steps() > 0) progress_.total = response.job().train_steps();
      if (response.has_event()) {
        const v1::JobEvent& e = response.event();
        next_event = std::max(next_event, e.sequence() + 1);
        // The last progress line stays on screen above the final state; other events go above
        // the progress line, which is redrawn below them.
        if (IsTerminal(e.to_state())) {
          EndProgress();
        } else {
          ClearProgress();
        }
        std::string line = FormatTimestamp(e.time(), ctx_.time_zone);
        if (e.from_state() == e.to_state() || e.from_state() == v1::JOB_STATE_UNSPECIFIED) {
          absl::StrAppend(&line, "  ", JobStateName(e.to_state()));
        } else {
          absl::StrAppend(&line, "  ", JobStateName(e.from_state()), " -> ",
                          JobStateName(e.to_state()));
        }
        if (!e.reason().empty()) absl::StrAppend(&line, "  ", e.reason());
        if (!e.message().empty()) absl::StrAppend(&line, ": ", e.message());
        Print(absl::StrCat(line, "\n"));
        if (IsTerminal(e.to_state())) {
          terminal = e;
          break;
        }
        if (progress_known_ && ctx_.out_is_tty) ShowProgress();
      } else if (response.has_metrics()) {
        const v1::StepMetrics& m = response.metrics();
        // A restart re-runs steps from its checkpoint: the sparkline starts over there.
        if (m.step() <= progress_.step) progress_.loss_history.clear();
        next_step = m.step() + 1;
        progress_.step = m.step();
        progress_.loss = m.loss();
        progress_.loss_history.push_back(m.loss());
        if (progress_.loss_history.size() > static_cast<size_t>(kSparklineCells)) {
          progress_.loss_history.erase(progress_.loss_history.begin());
        }
        if (m.tokens_per_second() > 0) progress_.tokens_per_second = m.tokens_per_second();
        const absl::Time t = m.has_time() ? ToTime(m.time()) : ctx_.now();
        rate_.Add(m.step(), t);
        progress_.seconds_per_step = rate_.SecondsPerStep();
        if (!progress_.seconds_per_step && m.step_seconds() > 0) {
          progress_.seconds_per_step = m.step_seconds();
        }
        progress_known_ = true;
        ShowProgress();
      }
    }
    if (terminal) {
      // The stream ends after the terminal event; stop reading in any case.
      context.TryCancel();
      while (reader->Read(&response)) {
      }
      reader->Finish();
      return Finished(job_id, terminal->to_state(), terminal->reason(), terminal->message());
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok() && !Retryable(status.error_code())) {
      EndProgress();
      return RpcError(status);
    }
    if (status.ok()) {
      // Ended without a terminal event: maybe the job ended before the events we asked for.
      v1::GetJobRequest get;
      get.set_job_id(job_id);
      v1::GetJobResponse job;
      grpc::ClientContext get_context;
      SetDeadline(&get_context);
      const grpc::Status got = stubs_.jobs->GetJob(&get_context, get, &job);
      if (got.ok() && IsTerminal(job.job().state())) {
        return Finished(job_id, job.job().state(), job.job().state_reason(),
                        job.job().state_message());
      }
      if (!got.ok() && !Retryable(got.error_code())) {
        EndProgress();
        return RpcError(got);
      }
    }
    failures = progressed ? 1 : failures + 1;
    if (progressed) backoff.Reset();
    if (failures > ctx_.max_reconnects) {
      EndProgress();
      return Error(absl::StrCat("giving up after ", ctx_.max_reconnects,
                                " reconnects without an update; last: ",
                                CodeName(status.error_code()), ": ", status.error_message()));
    }
    Notice(absl::StrCat(
        "watch stream ended (",
        status.ok() ? std::string("OK")
                    : absl::StrCat(CodeName(status.error_code()), ": ", status.error_message()),
        ") before the job did; reconnecting from step ", next_step, ", event ", next_event));
    absl::SleepFor(backoff.Next());
  }
}

int Session::Finished(const std::string& job_id, v1::JobState state, const std::string& reason,
                      const std::string& message) {
  EndProgress();
  std::string line = absl::StrCat("job ", job_id, " ", JobStateName(state));
  if (!reason.empty()) absl::StrAppend(&line, ": ", reason);
  if (!message.empty()) absl::StrAppend(&line, ": ", message);
  Print(absl::StrCat(line, "\n"));
  return state == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}

int Session::Logs(const std::vector<std::string>& args) {
  CommandArgs a;
  if (auto code = Prepare(args, {{"rank", "tail"}, {"follow"}}, 1,
                          "logs JOB [-f] [--rank R] [--tail N]", &a)) {
    return *code;
  }
  const flags::ParsedArgs& p = a.parsed;
  const std::string& job_id = p.positional[0];
  auto rank = BoundedIntFlag(p, "rank", 0);
  if (!rank.ok()) return UsageError(rank.status());
  auto tail_flag = BoundedIntFlag(p, "tail", 0, " (0: from the first line)");
  if (!tail_flag.ok()) return UsageError(tail_flag.status());
  const int tail = tail_flag->value_or(0);
  const bool follow = p.Has("follow");

  {
    // A clear NOT_FOUND or UNAVAILABLE before the stream; stream breaks after it reconnect.
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::GetJobResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    const grpc::Status status = stubs_.jobs->GetJob(&context, request, &response);
    if (!status.ok()) return RpcError(status);
  }

  int64_t next_sequence = 0;
  int failures = 0;
  retry::Backoff backoff = ReconnectBackoff();
  while (true) {
    grpc::ClientContext context;
    v1::GetJobLogsRequest request;
    request.set_job_id(job_id);
    if (*rank) request.set_rank(**rank);
    request.set_follow(follow);
    request.set_from_sequence(next_sequence);
    if (next_sequence == 0) request.set_tail_lines(tail);
    auto reader = stubs_.jobs->GetJobLogs(&context, request);
    v1::GetJobLogsResponse response;
    bool progressed = false;
    while (reader->Read(&response)) {
      std::string text;
      for (const v1::LogLine& line : response.lines()) {
        absl::StrAppend(&text, "[rank ", line.rank(), "] ", line.text(), "\n");
        if (line.sequence() >= next_sequence) next_sequence = line.sequence() + 1;
        progressed = true;
      }
      Print(text);
    }
    const grpc::Status status = reader->Finish();
    if (status.ok()) return 0;
    if (!Retryable(status.error_code())) return RpcError(status);
    failures = progressed ? 1 : failures + 1;
    if (progressed) backoff.Reset();
    if (failures > ctx_.max_reconnects) {
      return Error(absl::StrCat("giving up after ", ctx_.max_reconnects,
                                " reconnects without a line; last: ", CodeName(status.error_code()),
                                ": ", status.error_message()));
    }
    Notice(absl::StrCat("log stream broke (", CodeName(status.error_code()), ": ",
                        status.error_message(), "); reconnecting from line ", next_sequence));
    absl::SleepFor(backoff.Next());
  }
}

int Session::Cancel(const std::vector<std::string>& args) {
  CommandArgs a;
  if (auto code = Prepare(args, {{"reason"}, {}}, 1, "cancel JOB [--reason TEXT]", &a)) {
    return *code;
  }
  v1::CancelJobRequest request;
  request.set_job_id(a.parsed.positional[0]);
  request.set_reason(a.parsed.Get("reason"));
  v1::CancelJobResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stubs_.jobs->CancelJob(&context, request, &response);
  if (!status.ok()) {
    return RpcError(status, status.error_code() == grpc::StatusCode::FAILED_PRECONDITION
                                ? "a job that has SUCCEEDED or FAILED cannot be cancelled"
                                : "");
  }
  Print(absl::StrCat("job ", request.job_id(), " ", JobStateName(response.job().state()), "\n"));
  return 0;
}

int Session::Delete(const std::vector<std::string>& args) {
  CommandArgs a;
  if (auto code = Prepare(args, {}, 1, "delete JOB", &a)) return *code;
  v1::DeleteJobRequest request;
  request.set_job_id(a.parsed.positional[0]);
  v1::DeleteJobResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stubs_.jobs->DeleteJob(&context, request, &response);
  if (!status.ok()) {
    return RpcError(status, status.error_code() == grpc::StatusCode::FAILED_PRECONDITION
                                ? "cancel the job first (dstrain cancel)"
                                : "");
  }
  Print(absl::StrCat("job ", request.job_id(), " deleted\n"));
  return 0;
}

int Session::Workers(const std::vector<std::string>& args) {
  CommandArgs a;
  if (auto code = Prepare(args, {{"output"}, {}}, 0, "workers [-o json]", &a)) return *code;
  auto as_json = JsonOutput(a.parsed);
  if (!as_json.ok()) return UsageError(as_json.status());
  v1::ListWorkersResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status =
      stubs_.workers->ListWorkers(&context, v1::ListWorkersRequest(), &response);
  if (!status.ok()) return RpcError(status);
  if (*as_json) return PrintJson(response);
  const absl::Time now = ctx_.now();
  Table table({"ID", "STATE", "GPUS", "CPU SLOTS", "USED", "HEARTBEAT AGE", "HOST"});
  for (const v1::Worker& w : response.workers()) {
    table.AddRow({w.worker_id(), WorkerStateName(w.state()), DescribeGpus(w.gpus()),
                  absl::StrCat(w.cpu_slots()), absl::StrCat(w.ranks_size()),
                  FormatTimestampAge(w.last_heartbeat_time(), now), OrDash(w.hostname())});
  }
  Print(table.Render());
  return 0;
}

int Session::Checkpoints(const std::vector<std::string>& args) {
  CommandArgs a;
  if (auto code = Prepare(args, {{"output"}, {}}, 1, "checkpoints JOB [-o json]", &a)) {
    return *code;
  }
  auto as_json = JsonOutput(a.parsed);
  if (!as_json.ok()) return UsageError(as_json.status());
  v1::ListCheckpointsRequest request;
  request.set_job_id(a.parsed.positional[0]);
  v1::ListCheckpointsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = stubs_.checkpoints->ListCheckpoints(&context, request, &response);
  if (!status.ok()) return RpcError(status);
  if (*as_json) return PrintJson(response);
  Table table({"TAG", "STEP", "STATE", "BYTES", "SHARDS", "COMMITTED AT", "PATH"});
  for (const v1::Checkpoint& c : response.checkpoints()) {
    table.AddRow({c.tag(), absl::StrCat(c.step()), CheckpointStateName(c.state()),
                  FormatBytes(c.total_bytes()), absl::StrCat(c.shards_size()),
                  FormatTimestamp(c.commit_time(), ctx_.time_zone), OrDash(c.path())});
  }
  Print(table.Render());
  return 0;
}

// --------------------------------------------------------------------------------------------
// The self-contained spec.

// --------------------------------------------------------------------------------------------
// plot (client/cli/plot.h).

int Session::Plot(const std::vector<std::string>& args) {
  auto parsed = ParseCommandArgs(args, {{"out", "metrics", "metrics-file"}, {}});
  if (!parsed.ok()) return UsageError(parsed.status());
  const flags::ParsedArgs& p = parsed->parsed;
  const bool from_file = p.Has("metrics-file");
  if (p.positional.size() != (from_file ? 0u : 1u)) {
    return Error(
        "usage: dstrain plot JOB [--out FILE] [--metrics M,...] | "
        "dstrain plot --metrics-file METRICS.jsonl [--out FILE] [--metrics M,...]",
        2);
  }
  auto names = ParsePlotMetrics(p.Has("metrics") ? p.Get("metrics") : kDefaultPlotMetrics);
  if (!names.ok()) return UsageError(names.status());
  std::string title, out;
  absl::StatusOr<std::vector<v1::StepMetrics>> records;
  if (from_file) {
    const std::string file = p.Get("metrics-file");
    title = file;
    std::string stem = file;
    if (const size_t dot = stem.rfind('.'); dot != std::string::npos && dot > stem.rfind('/')) {
      stem.resize(dot);
    }
    out = p.Has("out") ? p.Get("out") : stem + ".png";
    records = ReadMetricsFile(file);
    if (!records.ok()) {
      return Error(std::string(records.status().message()),
                   records.status().code() == absl::StatusCode::kNotFound ? 1 : 2);
    }
  } else {
    if (absl::Status connected = Connect(p); !connected.ok()) return UsageError(connected);
    const std::string& job_id = p.positional[0];
    title = absl::StrCat("job ", job_id);
    out = p.Has("out") ? p.Get("out") : job_id + ".png";
    records = StoredMetrics(job_id);
    if (!records.ok()) return Error(std::string(records.status().message()));
  }
  const absl::Status drawn = RenderPlot(CollectSeries(*records, *names), title, out);
  if (!drawn.ok()) {
    return Error(std::string(drawn.message()),
                 drawn.code() == absl::StatusCode::kInvalidArgument ? 2 : 1);
  }
  Print(absl::StrCat(out, "\n"));
  return 0;
}

absl::StatusOr<std::vector<v1::StepMetrics>> Session::StoredMetrics(const std::string& job_id) {
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  v1::GetJobResponse job;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    DT_RETURN_IF_ERROR(
        FromGrpcStatus(stubs_.jobs->GetJob(&context, get, &job), absl::StrCat("GetJob ", job_id)));
  }
  if (!job.job().has_latest_metrics()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has no metrics yet (",
                                                      JobStateName(job.job().state()), ")"));
  }
  // WatchJob replays the stored metrics in (attempt, step) order, then would follow the job:
  // read up to the last record GetJob saw. Events are skipped (none has that sequence).
  const v1::StepMetrics& last = job.job().latest_metrics();
  const auto reached = [&last](const v1::StepMetrics& m) {
    return std::make_pair(m.attempt(), m.step()) >= std::make_pair(last.attempt(), last.step());
  };
  grpc::ClientContext context;
  context.set_deadline(
      absl::ToChronoTime(absl::Now() + std::max(ctx_.rpc_timeout, absl::Seconds(60))));
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  request.set_from_step(0);
  request.set_from_event_sequence(std::numeric_limits<int64_t>::max());
  auto reader = stubs_.jobs->WatchJob(&context, request);
  std::vector<v1::StepMetrics> records;
  v1::WatchJobResponse response;
  bool done = false;
  while (!done && reader->Read(&response)) {
    if (!response.has_metrics()) continue;
    records.push_back(response.metrics());
    done = reached(response.metrics());
  }
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  const grpc::Status status = reader->Finish();
  if (!done) {
    return absl::UnavailableError(
        absl::StrCat("the metrics stream of job ", job_id, " ended after ", records.size(),
                     " records, before step ", last.step(), ": ", CodeName(status.error_code()),
                     ": ", status.error_message()));
  }
  return records;
}

std::string AbsoluteDir(const std::string& path) {
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  if (ec) absolute = path;
  return absolute.parent_path().lexically_normal().string();
}

// As the job-file parser resolves paths (worker/config, ResolvePath).
std::string ResolveAgainst(const std::string& base_dir, const std::string& p) {
  std::filesystem::path path(p);
  if (path.is_absolute() || base_dir.empty()) return path.lexically_normal().string();
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

absl::StatusOr<json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  json value = json::parse(text.str(), nullptr, /*allow_exceptions=*/false,
                           /*ignore_comments=*/true);
  if (value.is_discarded()) {
    return absl::InternalError(absl::StrCat(path, ": validated, but cannot be read again as JSON"));
  }
  return value;
}

json WithoutNotes(json effective) {
  effective.erase("notes");
  return effective;
}

}  // namespace

// The token in a file: its first line, without surrounding white space; at most 4 KiB.
absl::StatusOr<std::string> ReadToken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("token file ", path, ": cannot open"));
  std::string text(4097, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": over 4 KiB"));
  }
  std::string token(absl::StripAsciiWhitespace(text.substr(0, text.find('\n'))));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": empty"));
  }
  return token;
}

absl::StatusOr<ServiceStubs> ConnectToCoordinator(const std::string& address,
                                                  const ClientSecurity& security) {
  DT_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                      tls::ChannelCredentials(security.tls));
  if (!security.tls.insecure && !security.token.empty()) {
    credentials = grpc::CompositeChannelCredentials(credentials,
                                                    grpc::AccessTokenCredentials(security.token));
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(address, credentials);
  ServiceStubs stubs;
  stubs.jobs = v1::JobService::NewStub(channel);
  stubs.workers = v1::WorkerService::NewStub(channel);
  stubs.checkpoints = v1::CheckpointService::NewStub(channel);
  return stubs;
}

ServiceContext ProcessServiceContext() {
  ServiceContext context;
  context.out_is_tty = isatty(fileno(stdout)) == 1;
  if (context.out_is_tty) {
    winsize size{};
    if (ioctl(fileno(stdout), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) {
      context.terminal_columns = size.ws_col;
    } else {
      context.terminal_columns = 80;
    }
  }
  if (const char* env = std::getenv("DSTRAIN_COORDINATOR")) context.env_coordinator = env;
  for (const char* name : {"DSTRAIN_TLS_CA", "DSTRAIN_TLS_CERT", "DSTRAIN_TLS_KEY",
                           "DSTRAIN_INSECURE", "DSTRAIN_TOKEN", "DSTRAIN_TOKEN_FILE"}) {
    if (const char* value = std::getenv(name)) context.env_security[name] = value;
  }
  context.time_zone = absl::LocalTimeZone();
  return context;
}

bool IsServiceCommand(const std::string& command) {
  static const std::set<std::string>* const kCommands =
      new std::set<std::string>{"submit", "list",   "status",  "watch",       "logs",
                                "cancel", "delete", "workers", "checkpoints", "plot"};
  return kCommands->count(command) > 0;
}

int RunServiceCommand(const std::string& command, const std::vector<std::string>& args,
                      const ServiceContext& context) {
  Session session(command, context);
  return session.Run(args);
}

bool IsValidJobId(const std::string& id) {
  if (id.empty() || id.size() > 63 || !(id[0] >= 'a' && id[0] <= 'z')) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

std::string DefaultJobId(const std::string& name, const std::string& suffix) {
  std::string prefix;
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      prefix.push_back(c);
    } else if (!prefix.empty() && prefix.back() != '-') {
      prefix.push_back('-');
    }
  }
  size_t first = 0;
  while (first < prefix.size() && !(prefix[first] >= 'a' && prefix[first] <= 'z')) ++first;
  prefix.erase(0, first);
  if (prefix.size() > static_cast<size_t>(kMaxIdPrefix)) prefix.resize(kMaxIdPrefix);
  while (!prefix.empty() && prefix.back() == '-') prefix.pop_back();
  if (prefix.empty()) prefix = "job";
  return absl::StrCat(prefix, "-", suffix);
}

absl::StatusOr<SubmittedSpec> MakeSelfContainedSpec(const std::string& job_path,
                                                    std::optional<int> world) {
  // What `dstrain validate JOB.json [--world N]` checks, and job.device.
  auto spec = config::LoadJobSpec(job_path, world);
  if (!spec.ok()) return spec.status();

  const std::string base_dir = AbsoluteDir(job_path);
  auto root = ReadJsonFile(job_path);
  if (!root.ok()) return absl::InternalError(root.status().message());
  if (!root->is_object()) return absl::InternalError(absl::StrCat(job_path, ": not an object"));

  // Inline a deepspeed_config file: validation already rejected keys set in both places.
  if (auto it = root->find("deepspeed_config"); it != root->end() && it->is_string()) {
    const std::string ds_path = ResolveAgainst(base_dir, it->get<std::string>());
    auto ds = ReadJsonFile(ds_path);
    if (!ds.ok()) return absl::InternalError(ds.status().message());
    root->erase(it);
    for (auto& [key, value] : ds->items()) (*root)[key] = value;
  }

  // Paths as config.cc resolved them (the effective config holds the absolute forms).
  const json& e = spec->effective;
  static const std::pair<const char*, const char*> kPaths[] = {
      {"data", "train"}, {"data", "val"}, {"model", "init_from"}, {"job", "checkpoint_dir"}};
  for (const auto& [block, key] : kPaths) {
    auto b = root->find(block);
    if (b == root->end() || !b->is_object()) continue;
    auto k = b->find(key);
    if (k == b->end() || !k->is_string() || k->get<std::string>().empty()) continue;
    *k = e.at(block).at(key);
  }
  json& job = (*root)["job"];
  if (!job.contains("name") || !job["name"].is_string() || job["name"].get<std::string>().empty()) {
    job["name"] = spec->job.name;  // the file's stem, which the coordinator cannot know
  }
  if (world) job["world_size"] = *world;

  SubmittedSpec out;
  out.spec_json = root->dump(2);
  out.name = spec->job.name;
  out.no_effect_notes = spec->no_effect_notes;

  // The coordinator and the workers parse it without a base directory: it must mean the same.
  absl::StatusOr<config::JobSpec> again = config::ParseJobSpec(out.spec_json, "");
  if (!again.ok()) {
    return absl::InternalError(
        absl::StrCat("the self-contained spec does not validate: ", again.status().message()));
  }
  if (WithoutNotes(again->effective) != WithoutNotes(spec->effective)) {
    return absl::InternalError(
        "the self-contained spec validates to a different configuration than the job file");
  }
  return out;
}

}  // namespace dstrain::cli
