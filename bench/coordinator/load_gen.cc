// Load against one coordinator (bench/coordinator/coordinator_bench.sh): --workers simulated
// workers heartbeating at --hz each, plus --submit-rate job submissions per second, for --seconds;
// prints the p50, p90, p99 and max latency of Heartbeat and SubmitJob as one JSON line.
//
//   load_gen --coordinator HOST:PORT [--workers 1000] [--hz 1] [--submit-rate 50]
//            [--seconds 30] [--threads 4] [--world 1]
//
// Heartbeats are spread evenly over each second (worker i at offset i/N), sent by --threads
// threads with a channel each; submissions come from their own thread at fixed intervals. Every
// simulated worker registers first with one CPU slot, so submitted jobs are placed on them (and
// stay SCHEDULED: nobody runs them), which makes each submit do the full work: validate, store,
// queue, place, persist the placement. Plaintext: the coordinator under load runs with --insecure
// (a thousand simulated workers would each need a certificate).
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flags/flags.h"
#include "proto/job.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace dstrain {
namespace {

struct Latencies {
  std::mutex mu;
  std::vector<double> ms;
  int errors = 0;
  std::string first_error;
  void Add(double v) {
    std::lock_guard<std::mutex> lock(mu);
    ms.push_back(v);
  }
  void Error(const grpc::Status& s) {
    std::lock_guard<std::mutex> lock(mu);
    if (errors++ == 0) first_error = s.error_message();
  }
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

std::string Summary(const char* name, Latencies& l) {
  return absl::StrFormat(
      R"("%s": {"count": %d, "errors": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, )"
      R"("max_ms": %.3f})",
      name, l.ms.size(), l.errors, Percentile(l.ms, 0.5), Percentile(l.ms, 0.9),
      Percentile(l.ms, 0.99), Percentile(l.ms, 1.0));
}

std::string JobSpec(int world) {
  return absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": 1,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
          "model": {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 256,
                    "block_size": 64},
          "data": {"train": "/tmp/load_gen/train.bin"},
          "job": {"name": "load", "world_size": %d, "train_steps": 10}})",
      world);
}

int Main(int argc, char** argv) {
  auto args = flags::ParseArgs(
      std::vector<std::string>(argv + 1, argv + argc),
      {"coordinator", "workers", "hz", "submit-rate", "seconds", "threads", "world", "id-prefix"},
      {});
  if (!args.ok() || !args->Has("coordinator")) {
    absl::FPrintF(stderr,
                  "usage: load_gen --coordinator HOST:PORT [--workers N] [--hz F] "
                  "[--submit-rate R] [--seconds S] [--threads T] [--world W]\n");
    return 2;
  }
  const std::string address = args->Get("coordinator");
  const int workers = *args->GetInt("workers", 1000);
  const double hz = *args->GetDouble("hz", 1.0);
  const double submit_rate = *args->GetDouble("submit-rate", 50);
  const double seconds = *args->GetDouble("seconds", 30);
  const int threads = std::max(1, *args->GetInt("threads", 4));
  const int world = *args->GetInt("world", 1);
  const std::string prefix = args->Get("id-prefix", "load");

  // Registration (not timed); each worker's heartbeats carry its session token, as an agent's do.
  std::vector<std::string> session_tokens(static_cast<size_t>(workers));
  {
    auto stub = v1::WorkerService::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    for (int i = 0; i < workers; ++i) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      v1::RegisterWorkerRequest request;
      request.set_worker_id(absl::StrCat(prefix, "-w", i));
      request.set_hostname("sim");
      request.set_cpu_slots(1);
      v1::RegisterWorkerResponse response;
      grpc::Status s = stub->RegisterWorker(&context, request, &response);
      if (!s.ok()) {
        absl::FPrintF(stderr, "register %d: %s\n", i, s.error_message());
        return 1;
      }
      session_tokens[static_cast<size_t>(i)] = response.session_token();
    }
  }

  Latencies heartbeat, submit;
  const absl::Time start = absl::Now() + absl::Milliseconds(100);
  const absl::Time end = start + absl::Seconds(seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      // Each thread its own channel: one HTTP/2 connection per thread, as separate agents have.
      grpc::ChannelArguments channel_args;
      channel_args.SetInt("grpc.channel_id", t);  // distinct subchannels
      auto stub = v1::WorkerService::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), channel_args));
      const absl::Duration period = absl::Seconds(1.0 / hz);
      for (int64_t round = 0;; ++round) {
        for (int i = t; i < workers; i += threads) {
          const absl::Time due = start + period * round + period * (double(i) / workers);
          if (due >= end) return;
          absl::SleepFor(due - absl::Now());
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
          v1::HeartbeatRequest request;
          request.set_worker_id(absl::StrCat(prefix, "-w", i));
          request.set_session_token(session_tokens[static_cast<size_t>(i)]);
          v1::HeartbeatResponse response;
          const absl::Time t0 = absl::Now();
          grpc::Status s = stub->Heartbeat(&context, request, &response);
          if (s.ok()) {
            heartbeat.Add(absl::ToDoubleMilliseconds(absl::Now() - t0));
          } else {
            heartbeat.Error(s);
          }
        }
      }
    });
  }
  pool.emplace_back([&] {
    grpc::ChannelArguments channel_args;
    channel_args.SetInt("grpc.channel_id", threads);
    auto stub = v1::JobService::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), channel_args));
    const std::string spec = JobSpec(world);
    for (int64_t n = 0;; ++n) {
      const absl::Time due = start + absl::Seconds(n / submit_rate);
      if (due >= end) return;
      absl::SleepFor(due - absl::Now());
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      v1::SubmitJobRequest request;
      request.set_job_id(absl::StrCat(prefix, "-job-", n));
      request.set_spec_json(spec);
      v1::SubmitJobResponse response;
      const absl::Time t0 = absl::Now();
      grpc::Status s = stub->SubmitJob(&context, request, &response);
      if (s.ok()) {
        submit.Add(absl::ToDoubleMilliseconds(absl::Now() - t0));
      } else {
        submit.Error(s);
      }
    }
  });
  for (std::thread& t : pool) t.join();
  absl::PrintF("{%s, %s, \"workers\": %d, \"hz\": %g, \"submit_rate\": %g, \"seconds\": %g}\n",
               Summary("heartbeat", heartbeat), Summary("submit", submit), workers, hz, submit_rate,
               seconds);
  if (heartbeat.errors + submit.errors > 0) {
    absl::FPrintF(stderr, "errors: heartbeat %d, submit %d; first: %s %s\n", heartbeat.errors,
                  submit.errors, heartbeat.first_error, submit.first_error);
  }
  return 0;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) { return dstrain::Main(argc, argv); }
