// dstrain-worker: the worker agent daemon (docs/service.md, "Worker agent").
//
//   dstrain-worker --coordinator HOST:PORT --slots N --work-dir DIR [--gpus auto|none|N]
//                  [--metrics-listen HOST:PORT] [--listen HOST:PORT]
//                  [--worker-id ID] [--trainer PATH] [--drain-seconds S]
//
// First finds its GPUs (agent_config.h, gpu_inventory.h), before any thread starts: discovery
// forks a child. Prints the addresses it serves on, one per line, before anything else on
// stdout (what it found follows on stderr):
//   dstrain-worker: metrics on http://HOST:PORT/metrics
//   dstrain-worker: health on HOST:PORT
// then runs until SIGTERM or SIGINT. SIGTERM first drains (trainers checkpoint at their next
// step and leave, at most --drain-seconds, default 60; their jobs restart elsewhere); then, as on
// SIGINT, every trainer left is stopped (reported KILLED) and the agent exits 0.
// Exit 2: bad command line, or no slot at all (--slots 0 and no GPU found); exit 1: a server
// port cannot be bound or the work directory made.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/tls/tls.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_config.h"
#include "worker/agent/agent_metrics.h"
#include "worker/agent/gpu_inventory.h"
#include "worker/agent/health_server.h"

namespace {

constexpr char kUsage[] =
    "usage: dstrain-worker --coordinator HOST:PORT --slots N --work-dir DIR\n"
    "                      [--gpus auto|none|N] [--metrics-listen HOST:PORT]\n"
    "                      [--listen HOST:PORT] [--worker-id ID] [--trainer PATH]\n"
    "                      [--drain-seconds S] [--advertise-address ADDR]\n"
    "  --slots N  CPU slots (0: GPU slots only)\n"
    "  --gpus     GPU slots: auto (every GPU the CUDA runtime finds, the default), none, or at\n"
    "             most N; --fake-gpus NAME:BYTES,... replaces discovery (tests only)\n";

// How long GPU discovery may take: a driver loading its modules on a cold machine is slow; one
// that takes longer is stuck, and the worker goes on without GPUs.
constexpr absl::Duration kGpuDiscoveryTimeout = absl::Seconds(60);

// HOST of a HOST:PORT.
std::string HostOf(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  return colon == std::string::npos ? listen : listen.substr(0, colon);
}

int Main(int argc, char** argv) {
  dstrain::tls::KeepOpenSslUntilExit();
  namespace agent = dstrain::agent;
  // Stop signals are taken by sigwait below; blocked before any thread starts so that none of
  // them (gRPC's, the agent's) receives one. Trainers get a clean mask back before exec.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A closed stdout (a script stopped reading) must not kill the agent and its trainers.
  signal(SIGPIPE, SIG_IGN);

  const agent::ConfigEnvironment env = agent::CurrentEnvironment();
  auto config = agent::ParseAgentConfig(std::vector<std::string>(argv + 1, argv + argc), env);
  if (!config.ok()) {
    absl::FPrintF(stderr, "dstrain-worker: %s\n%s", config.status().message(), kUsage);
    return 2;
  }

  // Before any thread exists (the metrics and health servers start some): discovery forks.
  std::string gpu_note;
  std::vector<dstrain::v1::GpuInfo> gpus = agent::SelectGpus(
      config->gpus, config->fake_gpus, agent::ProbeCudaRuntime, kGpuDiscoveryTimeout, &gpu_note);
  if (gpus.empty() && config->slots == 0) {
    absl::FPrintF(stderr,
                  "dstrain-worker: %s\ndstrain-worker: --slots 0 and no GPU slots: "
                  "nothing to offer\n%s",
                  gpu_note, kUsage);
    return 2;
  }

  agent::AgentMetrics metrics;
  auto metrics_server = agent::MetricsServer::Start(config->metrics_listen, metrics.collectable());
  if (!metrics_server.ok()) {
    absl::FPrintF(stderr, "dstrain-worker: %s\n", metrics_server.status().message());
    return 1;
  }
  if (config->tls.insecure) {
    absl::FPrintF(stderr,
                  "dstrain-worker: WARNING: --insecure: plaintext to the coordinator and on the "
                  "health port; anyone on the network can read and forge this worker's calls\n");
  }
  auto health = agent::HealthServer::Start(config->listen, config->tls);
  if (!health.ok()) {
    absl::FPrintF(stderr, "dstrain-worker: %s\n", health.status().message());
    return 1;
  }
  absl::PrintF("dstrain-worker: metrics on http://%s:%d/metrics\n", HostOf(config->metrics_listen),
               (*metrics_server)->port());
  absl::PrintF("dstrain-worker: health on %s:%d (%s)\n", HostOf(config->listen), (*health)->port(),
               config->tls.insecure ? "plaintext" : "TLS");
  std::fflush(stdout);
  absl::FPrintF(stderr, "dstrain-worker: %s\n", gpu_note);

  agent::AgentOptions options;
  options.coordinator = config->coordinator;
  options.worker_id = config->worker_id;
  options.hostname = env.hostname;
  options.slots = config->slots;
  options.gpus = agent::ToGpuSlots(std::move(gpus), std::getenv("CUDA_VISIBLE_DEVICES"));
  options.work_dir = config->work_dir;
  options.data_root = config->data_root;
  options.tls = config->tls;
  options.trainer = config->trainer;
  // Where this worker's trainers listen for the other hosts' ranks: the flag, or the address of
  // the route to the coordinator (a worker on the coordinator's host gets 127.0.0.1 that way).
  options.bind_address = config->advertise_address;
  if (options.bind_address.empty()) {
    auto found = agent::LocalAddressToward(config->coordinator);
    if (!found.ok()) {
      absl::FPrintF(stderr, "dstrain-worker: %s; pass --advertise-address\n",
                    found.status().message());
      return 1;
    }
    options.bind_address = *found;
  }
  absl::FPrintF(stderr, "dstrain-worker: trainers listen on %s for other hosts' ranks\n",
                options.bind_address);
  options.metrics_address =
      agent::AdvertisedAddress(config->metrics_listen, (*metrics_server)->port(), env.hostname);
  agent::HealthServer* health_server = health->get();
  agent::Agent worker(options, &metrics,
                      [health_server](bool ready) { health_server->SetReady(ready); });
  if (absl::Status s = worker.Start(); !s.ok()) {
    absl::FPrintF(stderr, "dstrain-worker: %s\n", s.message());
    return 1;
  }
  absl::FPrintF(
      stderr,
      "dstrain-worker: worker %s, %d GPU slot(s), %d CPU slot(s), work dir %s, trainer %s, "
      "coordinator %s\n",
      options.worker_id, options.gpus.size(), options.slots, options.work_dir, options.trainer,
      options.coordinator);

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  if (sig == SIGTERM) {
    // An eviction: let the trainers checkpoint and move elsewhere before stopping anything.
    worker.Drain(config->drain_timeout);
  }
  absl::FPrintF(stderr, "dstrain-worker: %s: stopping the trainers\n", strsignal(sig));
  (*health)->SetReady(false);
  worker.Shutdown();
  (*health)->Shutdown();
  absl::FPrintF(stderr, "dstrain-worker: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
