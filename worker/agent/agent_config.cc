#include "worker/agent/agent_config.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/flags/flags.h"
#include "common/tls/tls.h"

namespace dstrain::agent {
namespace {

constexpr int kMaxSlots = 4096;

bool IsExecutableFile(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0;
}

// Joins a relative path onto `cwd` and drops "." components and trailing slashes.
std::string Absolute(const std::string& path, const std::string& cwd) {
  std::string joined = !path.empty() && path[0] == '/' ? path : absl::StrCat(cwd, "/", path);
  std::string out;
  for (absl::string_view part : absl::StrSplit(joined, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    absl::StrAppend(&out, "/", part);
  }
  return out.empty() ? "/" : out;
}

}  // namespace

ConfigEnvironment CurrentEnvironment() {
  ConfigEnvironment env;
  char buf[PATH_MAX];
  if (gethostname(buf, sizeof(buf)) == 0) {
    buf[sizeof(buf) - 1] = '\0';
    env.hostname = buf;
  }
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) env.self_exe.assign(buf, static_cast<size_t>(n));
  if (const char* p = std::getenv("PATH")) env.path = p;
  if (getcwd(buf, sizeof(buf)) != nullptr) env.cwd = buf;
  return env;
}

bool IsValidWorkerId(absl::string_view id) {
  if (id.empty() || id.size() > 63 || !absl::ascii_islower(id[0])) return false;
  for (char c : id) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '-') return false;
  }
  return true;
}

std::string DefaultWorkerId(absl::string_view hostname, absl::string_view work_dir) {
  std::string host;
  for (char c : hostname) {
    c = absl::ascii_tolower(static_cast<unsigned char>(c));
    host.push_back(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' ? c : '-');
  }
  if (host.empty() || !absl::ascii_islower(host[0])) host.insert(0, "w");
  host.resize(std::min<size_t>(host.size(), 63 - 7));
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : work_dir) {
    h ^= c;
    h *= 16777619u;
  }
  return absl::StrFormat("%s-%06x", host, h & 0xffffffu);
}

std::string FindTrainer(absl::string_view self_exe, absl::string_view path) {
  const size_t slash = self_exe.rfind('/');
  if (slash != absl::string_view::npos) {
    const std::string beside = absl::StrCat(self_exe.substr(0, slash), "/dstrain");
    if (IsExecutableFile(beside)) return beside;
  }
  return FindInPath("dstrain", path);
}

std::string FindInPath(absl::string_view name, absl::string_view path) {
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (IsExecutableFile(candidate)) return candidate;
  }
  return "";
}

std::string AdvertisedAddress(absl::string_view listen, int port, absl::string_view hostname) {
  absl::string_view host = listen;
  const size_t colon = listen.rfind(':');
  if (colon != absl::string_view::npos) host = listen.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]") host = hostname;
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<AgentConfig> ParseAgentConfig(const std::vector<std::string>& args,
                                             const ConfigEnvironment& env) {
  std::set<std::string> value_flags = {"coordinator",    "slots",         "work-dir",
                                       "metrics-listen", "listen",        "worker-id",
                                       "trainer",        "drain-seconds", "gpus",
                                       "fake-gpus",      "data-root",     "advertise-address"};
  value_flags.insert(tls::ValueFlags().begin(), tls::ValueFlags().end());
  auto parsed = flags::ParseArgs(args, value_flags, {tls::kInsecureFlag});
  if (!parsed.ok()) return parsed.status();
  if (!parsed->positional.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument '", parsed->positional[0], "'"));
  }
  AgentConfig config;
  for (const char* required : {"coordinator", "slots", "work-dir", "data-root"}) {
    if (parsed->Get(required).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--", required, " is required"));
    }
  }
  config.coordinator = parsed->Get("coordinator");
  if (config.coordinator.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--coordinator: expected HOST:PORT, got '", config.coordinator, "'"));
  }
  auto slots = parsed->GetInt("slots", 0);
  if (!slots.ok()) return slots.status();
  if (*slots < 0 || *slots > kMaxSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("--slots: must be in [0, ", kMaxSlots, "], got ", *slots));
  }
  config.slots = *slots;
  auto gpus = ParseGpuSelection(parsed->Get("gpus", "auto"));
  if (!gpus.ok()) return gpus.status();
  config.gpus = *gpus;
  if (config.slots == 0 && config.gpus.mode == GpuSelection::Mode::kNone) {
    return absl::InvalidArgumentError(
        "--slots 0 with --gpus none: the worker would offer no slot at all");
  }
  if (parsed->Has("fake-gpus")) {
    auto fake = ParseFakeGpus(parsed->Get("fake-gpus"));
    if (!fake.ok()) return fake.status();
    config.fake_gpus = *std::move(fake);
  }
  config.work_dir = Absolute(parsed->Get("work-dir"), env.cwd);
  // Required: without a root the trainers would read and write wherever a job says.
  config.data_root = Absolute(parsed->Get("data-root"), env.cwd);
  if (parsed->Has("advertise-address")) {
    config.advertise_address = parsed->Get("advertise-address");
    if (config.advertise_address.empty() ||
        config.advertise_address.find_first_of(" /") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--advertise-address: expected this host's address, got '",
                       config.advertise_address, "'"));
    }
  }
  config.metrics_listen = parsed->Get("metrics-listen", config.metrics_listen);
  config.listen = parsed->Get("listen", config.listen);
  auto tls_config = tls::ConfigFromArgs(*parsed, tls::Role::kServer);
  if (!tls_config.ok()) return tls_config.status();
  config.tls = *std::move(tls_config);
  std::string default_id = DefaultWorkerId(env.hostname, config.work_dir);
  if (!config.tls.insecure) {
    // The coordinator knows the worker by its certificate: the id is the certificate's.
    auto named = tls::CertificateWorkerId(config.tls.cert);
    if (!named.ok()) return named.status();
    if (named->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-cert ", config.tls.cert,
                       ": not a worker certificate (its common name must be worker:<id>)"));
    }
    if (parsed->Has("worker-id") && parsed->Get("worker-id") != *named) {
      return absl::InvalidArgumentError(absl::StrCat("--worker-id ", parsed->Get("worker-id"),
                                                     ": the certificate ", config.tls.cert,
                                                     " is worker ", *named));
    }
    default_id = *named;
  }
  config.worker_id = parsed->Get("worker-id", default_id);
  if (!IsValidWorkerId(config.worker_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--worker-id: '", config.worker_id, "' must match [a-z][a-z0-9-]{0,62}"));
  }
  auto drain = parsed->GetDouble("drain-seconds", 60);
  if (!drain.ok() || *drain < 0) {
    return absl::InvalidArgumentError("--drain-seconds: expected a number >= 0");
  }
  config.drain_timeout = absl::Seconds(*drain);
  config.trainer = parsed->Get("trainer");
  if (config.trainer.empty()) {
    config.trainer = FindTrainer(env.self_exe, env.path);
    if (config.trainer.empty()) {
      return absl::NotFoundError(
          "no trainer: no dstrain beside this executable or on PATH; pass --trainer PATH");
    }
  } else if (config.trainer.find('/') == std::string::npos) {
    const std::string name = config.trainer;
    config.trainer = FindInPath(name, env.path);
    if (config.trainer.empty()) {
      return absl::NotFoundError(absl::StrCat("--trainer: no executable ", name, " on PATH"));
    }
  } else {
    config.trainer = Absolute(config.trainer, env.cwd);
    if (!IsExecutableFile(config.trainer)) {
      return absl::NotFoundError(
          absl::StrCat("--trainer: ", config.trainer, " is not an executable file"));
    }
  }
  return config;
}

absl::StatusOr<std::string> LocalAddressToward(const std::string& host_port) {
  std::string host = host_port, port = "0";
  if (const size_t colon = host_port.rfind(':'); colon != std::string::npos) {
    host = host_port.substr(0, colon);
    port = host_port.substr(colon + 1);
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints = {};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (const int e = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); e != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve the coordinator's host ", host, ": ", gai_strerror(e)));
  }
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local = {};
    socklen_t len = sizeof(local);
    const bool ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
                    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
    if (!ok) why = std::strerror(errno);
    close(fd);
    if (!ok) continue;
    char text[INET6_ADDRSTRLEN] = {};
    const void* addr =
        local.ss_family == AF_INET6
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
            : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
    if (inet_ntop(local.ss_family, addr, text, sizeof(text)) == nullptr) continue;
    freeaddrinfo(found);
    return std::string(text);
  }
  freeaddrinfo(found);
  return absl::UnavailableError(
      absl::StrCat("no route to the coordinator's host ", host, ": ", why));
}

}  // namespace dstrain::agent
