// The dstrain-worker command line (docs/service.md) and the defaults it derives:
//
//   dstrain-worker --coordinator HOST:PORT --slots N --work-dir DIR --data-root DIR
//                  (--tls-ca PEM --tls-cert PEM --tls-key PEM | --insecure)
//                  [--gpus auto|none|N] [--metrics-listen HOST:PORT] [--listen HOST:PORT]
//                  [--worker-id ID] [--trainer PATH] [--drain-seconds S]
//                  [--advertise-address ADDR]
//                  [--fake-gpus NAME:BYTES,...]   (tests only)
//
// --slots is the number of CPU slots (0 for a worker that offers GPU slots only); --gpus the GPU
// slots: auto (default) every GPU the CUDA runtime finds, none, or at most N of them
// (gpu_inventory.h). --fake-gpus stands in for discovery in tests on machines without GPUs.
//
// --data-root is required: every path a job names resolves beneath it or the job is refused
// (docs/security.md, "Paths"). TLS is the default: --tls-cert is the worker's certificate (common
// name worker:<id>, which is then its id; a different --worker-id is refused), presented to the
// coordinator and served on --listen; --tls-ca verifies the coordinator. --insecure: plaintext.
//
// --metrics-listen (Prometheus /metrics) and --listen (gRPC health) default to 127.0.0.1:0, a free
// port; with --insecure, --worker-id defaults to the host name plus a short suffix derived from the
// work directory (two agents on one host need two work directories, and get two ids); --trainer to
// the `dstrain` binary beside this executable, else `dstrain` on PATH (a --trainer without '/' is
// looked up on PATH too). Relative paths are made absolute: trainers run in their own directories.
//
// --advertise-address is this host's address the other workers' trainers reach (the trainers'
// Gloo connections listen there); default: the local address of the route to the coordinator
// (LocalAddressToward), so a worker on another host is reachable without configuration.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/tls/tls.h"
#include "proto/worker.pb.h"
#include "worker/agent/gpu_inventory.h"

namespace dstrain::agent {

struct AgentConfig {
  std::string coordinator;
  // CPU slots (--slots).
  int slots = 0;
  // GPU slots (--gpus), and the test inventory that replaces discovery (--fake-gpus).
  GpuSelection gpus;
  std::optional<std::vector<v1::GpuInfo>> fake_gpus;
  std::string work_dir;  // absolute
  // --data-root: the trainers refuse a job whose paths resolve outside it (symlinks followed).
  std::string data_root;
  // --tls-* / --insecure: the coordinator connection, the health port and the trainers' calls.
  tls::TlsConfig tls;
  std::string metrics_listen = "127.0.0.1:0";
  std::string listen = "127.0.0.1:0";
  std::string worker_id;
  std::string trainer;
  // SIGTERM drains: how long trainers get to checkpoint and leave (--drain-seconds).
  absl::Duration drain_timeout = absl::Seconds(60);
  // --advertise-address; empty: found at start (LocalAddressToward the coordinator).
  std::string advertise_address;
};

// The local address this host uses to reach `host_port` (HOST:PORT, or [V6]:PORT): the source
// address of a UDP socket connected to it (nothing is sent). UNAVAILABLE naming the host when it
// does not resolve or no route leads there.
absl::StatusOr<std::string> LocalAddressToward(const std::string& host_port);

// Where the defaults come from, so tests need not depend on this machine.
struct ConfigEnvironment {
  std::string hostname;  // gethostname()
  std::string self_exe;  // /proc/self/exe
  std::string path;      // $PATH
  std::string cwd;       // for a relative --work-dir
};
ConfigEnvironment CurrentEnvironment();

// Parses the flags (everything after argv[0]) and fills the defaults. INVALID_ARGUMENT naming the
// flag for a missing or bad value; NOT_FOUND when no trainer executable can be found.
absl::StatusOr<AgentConfig> ParseAgentConfig(const std::vector<std::string>& args,
                                             const ConfigEnvironment& env);

// True for 1 to 63 characters of [a-z0-9-] starting with a letter (RegisterWorkerRequest's rule).
bool IsValidWorkerId(absl::string_view id);

// `hostname` lowercased with every character outside [a-z0-9-] turned into '-', "-", and six hex
// digits of a hash of `work_dir`; always a valid id.
std::string DefaultWorkerId(absl::string_view hostname, absl::string_view work_dir);

// `dir`/dstrain when `self_exe` is `dir`/<anything> and that file is executable; else the first
// executable `dstrain` in `path` (colon-separated); else "".
std::string FindTrainer(absl::string_view self_exe, absl::string_view path);

// The first executable `name` in the colon-separated `path`, or "".
std::string FindInPath(absl::string_view name, absl::string_view path);

// HOST:PORT to advertise for a server listening on `listen` (HOST:PORT) and bound to `port`: a
// wildcard host (0.0.0.0, ::, empty) is replaced by `hostname`.
std::string AdvertisedAddress(absl::string_view listen, int port, absl::string_view hostname);

}  // namespace dstrain::agent
