// dstrain-coordinator: the control plane daemon (docs/service.md).
//
//   dstrain-coordinator --listen HOST:PORT --data-dir DIR [--metrics-listen HOST:PORT]
//                       (--tls-cert PEM --tls-key PEM --tls-ca PEM --tokens FILE | --insecure)
//                       [--data-root DIR] [--lease-seconds S] [--heartbeat-seconds S]
//                       [--job-ttl DURATION] [--submissions-per-minute N] [--submission-burst N]
//
// Security (docs/security.md): TLS on --listen with the given certificate; workers present
// client certificates signed by --tls-ca; people and tools bearer tokens listed (hashed) in
// --tokens. Every call passes the Authorizer first. --insecure serves plaintext and admits
// everyone, with a warning.
//
// Serves JobService, WorkerService, StoreService, CheckpointService and gRPC health on --listen,
// Prometheus /metrics on --metrics-listen, and keeps everything in RocksDB under --data-dir, from
// which a restart rebuilds it. A port of 0 picks a free one; the bound addresses are printed, one
// per line. SIGINT/SIGTERM: health goes NOT_SERVING, streams end, the server stops, exit 0.
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "common/clock/clock.h"
#include "common/flags/flags.h"
#include "common/limits/limits.h"
#include "common/tls/tls.h"
#include "coordinator/auth/authorizer.h"
#include "coordinator/auth/token_table.h"
#include "coordinator/server/coordinator.h"
#include "coordinator/server/rpc_metrics.h"
#include "coordinator/server/services.h"
#include "coordinator/server/state_kv_log.h"
#include "coordinator/state/rocks_kv_db.h"
#include "coordinator/state/state.h"
#include "coordinator/store/durable_store.h"
#include "coordinator/store/store_service.h"

namespace dstrain::coordinator {
namespace {

int Fail(const std::string& message, int code) {
  absl::FPrintF(stderr, "dstrain-coordinator: %s\n", message);
  return code;
}

int Main(int argc, char** argv) {
  tls::KeepOpenSslUntilExit();
  // Signals are taken by sigwait below, so every thread started from here on blocks them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto args =
      flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc),
                       {"listen", "data-dir", "metrics-listen", "data-root", "lease-seconds",
                        "heartbeat-seconds", "job-ttl", "tls-ca", "tls-cert", "tls-key", "tokens",
                        "submissions-per-minute", "submission-burst"},
                       {tls::kInsecureFlag});
  if (!args.ok()) return Fail(std::string(args.status().message()), 2);
  if (!args->Has("data-dir")) {
    return Fail(
        "usage: dstrain-coordinator --listen HOST:PORT --data-dir DIR "
        "(--tls-cert PEM --tls-key PEM --tls-ca PEM --tokens FILE | --insecure) "
        "[--metrics-listen HOST:PORT] [--data-root DIR] [--lease-seconds S] "
        "[--heartbeat-seconds S] [--job-ttl DURATION] [--submissions-per-minute N] "
        "[--submission-burst N]",
        2);
  }
  auto tls_config = tls::ConfigFromArgs(*args, tls::Role::kServer);
  if (!tls_config.ok()) return Fail(std::string(tls_config.status().message()), 2);
  std::shared_ptr<const TokenTable> tokens;
  if (tls_config->insecure) {
    if (args->Has("tokens")) {
      return Fail("--tokens with --insecure: bearer tokens would cross the network in plaintext",
                  2);
    }
    absl::FPrintF(stderr,
                  "dstrain-coordinator: WARNING: --insecure: plaintext, and anyone who reaches "
                  "the port may submit, cancel, register as a worker and read every job\n");
  } else {
    if (!args->Has("tokens")) {
      return Fail("--tokens FILE is required with TLS (docs/security.md, \"Tokens\")", 2);
    }
    auto loaded = TokenTable::Load(args->Get("tokens"));
    if (!loaded.ok()) return Fail(std::string(loaded.status().message()), 2);
    tokens = std::make_shared<const TokenTable>(*std::move(loaded));
  }
  auto server_credentials =
      tls::ServerCredentials(*tls_config, tls::ClientCertificates::kVerifyIfPresented);
  if (!server_credentials.ok()) return Fail(std::string(server_credentials.status().message()), 2);
  if (tokens != nullptr) {
    (*server_credentials)->SetAuthMetadataProcessor(std::make_shared<Authorizer>(tokens));
  }
  const std::string listen = args->Get("listen", "127.0.0.1:50051");
  const std::string metrics_listen = args->Get("metrics-listen", "127.0.0.1:0");
  // A worker that misses about three heartbeats is declared lost: its job restarts within
  // ~4.5 s of the failure (the lease plus half a heartbeat for the sweep).
  auto lease = args->GetDouble("lease-seconds", 4);
  auto heartbeat = args->GetDouble("heartbeat-seconds", 1);
  if (!lease.ok() || !heartbeat.ok())
    return Fail("--lease-seconds/--heartbeat-seconds: numbers", 2);

  std::error_code made;
  std::filesystem::create_directories(args->Get("data-dir"), made);
  if (made)
    return Fail(absl::StrCat("--data-dir ", args->Get("data-dir"), ": ", made.message()), 1);
  auto db = RocksKvDb::Open(args->Get("data-dir") + "/db");
  if (!db.ok()) return Fail(std::string(db.status().message()), 1);
  CoordinatorState state(db->get());

  CoordinatorOptions options;
  options.registry.lease = absl::Seconds(*lease);
  options.registry.heartbeat_interval = absl::Seconds(*heartbeat);
  // --job-ttl 168h: an ended job, with its events, metrics and logs, is deleted a week later.
  if (args->Has("job-ttl") && (!absl::ParseDuration(args->Get("job-ttl"), &options.job_ttl) ||
                               options.job_ttl < absl::ZeroDuration())) {
    return Fail(absl::StrCat("--job-ttl: expected a duration such as 168h or 30m, got '",
                             args->Get("job-ttl"), "'"),
                2);
  }
  options.limits.data_root = args->Get("data-root", "/");
  // Per principal (all callers together with --insecure).
  auto per_minute = args->GetDouble("submissions-per-minute", options.submissions_per_minute);
  auto burst = args->GetDouble("submission-burst", options.submission_burst);
  if (!per_minute.ok() || !burst.ok() || *per_minute <= 0 || *burst < 1) {
    return Fail("--submissions-per-minute: a number > 0; --submission-burst: a number >= 1", 2);
  }
  options.submissions_per_minute = *per_minute;
  options.submission_burst = *burst;
  // The key of the trainers' store credentials, kept in the database so tokens outlive a restart.
  auto secret = state.Secret("store-credentials", 32);
  if (!secret.ok()) return Fail(std::string(secret.status().message()), 1);
  const StoreCredentials store_credentials(*std::move(secret));
  options.store_credentials = &store_credentials;
  // The same key MACs the workers' session tokens (subjects "workers/...", never an attempt's
  // prefix, so neither kind of token passes for the other).
  options.worker_sessions = &store_credentials;
  auto coordinator = Coordinator::Create(&state, RealClock::Default(), options);
  if (!coordinator.ok()) return Fail(std::string(coordinator.status().message()), 1);

  // The rendezvous store, as a previous coordinator left it.
  std::vector<std::pair<std::string, std::string>> kv;
  absl::Status scanned = state.KvScanPrefix("", [&kv](absl::string_view k, absl::string_view v) {
    kv.emplace_back(std::string(k), std::string(v));
    return true;
  });
  if (!scanned.ok()) return Fail(std::string(scanned.message()), 1);
  StateKvLog kv_log(&state);
  DurableStore store(&kv_log, kv);

  auto registry = std::make_shared<prometheus::Registry>();
  RpcMetrics rpc_metrics(registry.get());
  auto collector = std::make_shared<CoordinatorCollector>(coordinator->get());
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(metrics_listen);
  } catch (const std::exception& e) {
    return Fail(absl::StrCat("--metrics-listen ", metrics_listen, ": ", e.what()), 1);
  }
  exposer->RegisterCollectable(registry);
  exposer->RegisterCollectable(collector);

  JobServiceImpl jobs(coordinator->get(), &rpc_metrics, tokens.get());
  WorkerServiceImpl workers(coordinator->get(), &rpc_metrics, tokens.get());
  CheckpointServiceImpl checkpoints(coordinator->get(), &rpc_metrics, tokens.get());
  // With TLS an attempt's rendezvous keys are for the workers that hold its ranks, not only for
  // whoever holds the attempt's token.
  StoreServiceImpl::ScopeCheck scope_check;
  if (tokens != nullptr) {
    scope_check = [c = coordinator->get(), t = tokens.get()](const grpc::ServerContext& context,
                                                             absl::string_view scope) {
      return c->MayUseStoreScope(CallerOf(context, t), scope);
    };
  }
  StoreServiceImpl store_service(&store, &store_credentials, StoreServiceImpl::kMaxWait,
                                 std::move(scope_check));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *server_credentials, &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(limits::kMaxReceiveBytes));
  builder.RegisterService(&jobs);
  builder.RegisterService(&workers);
  builder.RegisterService(&checkpoints);
  builder.RegisterService(&store_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return Fail(absl::StrCat("cannot listen on ", listen), 1);
  server->GetHealthCheckService()->SetServingStatus(true);

  const std::string host = listen.substr(0, listen.rfind(':'));
  absl::PrintF("dstrain-coordinator: listening on %s:%d (%s)\n", host, port,
               tokens != nullptr ? "TLS, tokens and worker certificates" : "plaintext, --insecure");
  absl::PrintF("dstrain-coordinator: metrics on http://%s:%d/metrics\n",
               metrics_listen.substr(0, metrics_listen.rfind(':')),
               exposer->GetListeningPorts().front());
  std::fflush(stdout);

  // Leases: swept twice per heartbeat interval, so a dead worker is noticed within
  // lease + interval / 2.
  absl::Notification stop;
  std::thread sweeper([&] {
    while (!stop.WaitForNotificationWithTimeout(options.registry.heartbeat_interval / 2)) {
      absl::Status s = (*coordinator)->ExpireLeases();
      if (!s.ok()) absl::FPrintF(stderr, "dstrain-coordinator: lease sweep: %s\n", s.message());
      absl::StatusOr<int> expired = (*coordinator)->ExpireJobs();
      if (!expired.ok()) {
        absl::FPrintF(stderr, "dstrain-coordinator: job retention: %s\n",
                      expired.status().message());
      } else if (*expired > 0) {
        absl::PrintF("dstrain-coordinator: deleted %d job(s) ended over --job-ttl ago\n", *expired);
      }
    }
  });

  int signal = 0;
  sigwait(&stop_signals, &signal);
  absl::PrintF("dstrain-coordinator: signal %d, shutting down\n", signal);
  std::fflush(stdout);
  server->GetHealthCheckService()->SetServingStatus(false);
  stop.Notify();
  sweeper.join();
  (*coordinator)->Shutdown();
  store.Close();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

}  // namespace
}  // namespace dstrain::coordinator

int main(int argc, char** argv) { return dstrain::coordinator::Main(argc, argv); }
