// Transport security for every dstrain port (docs/security.md): which PEM files a daemon or a
// client uses, the gRPC credentials made from them, and the identity a verified peer certificate
// carries.
//
//   auto config = tls::ConfigFromArgs(args, tls::Role::kServer);      // --tls-* / --insecure
//   if (!config.ok()) return Fail(config.status());
//   auto credentials = tls::ServerCredentials(*config,
//   tls::ClientCertificates::kVerifyIfPresented); builder.AddListeningPort(listen, *credentials,
//   &port);
//
// A daemon serves TLS unless it is started with --insecure (then plaintext, no authentication:
// it says so in a warning at start). Its files are checked when read: a certificate that does not
// parse, is not yet valid or has expired, or does not match its key, is refused with the flag and
// path, rather than surfacing as a failed handshake later.
//
// Workers prove who they are with a client certificate whose subject common name is
// "worker:<worker id>" (kWorkerNamePrefix), signed by the CA the coordinator trusts.
//
// Thread safety: everything here is a pure function of its arguments and the files it reads.
#pragma once

#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/flags/flags.h"

namespace dstrain::tls {

// Call first thing in main() of a binary that speaks TLS, before gRPC or OpenSSL is used. The
// binaries return from main() with gRPC's threads still running. OpenSSL's default exit handler
// frees the exiting thread's state and deletes the key whose destructor frees every other
// thread's; a gRPC thread that finishes after that handler leaks its error state (LeakSanitizer
// reported it, 904 bytes from CRYPTO_zalloc, from the CLI). With the exit handler off, OpenSSL's
// memory stays reachable until the process ends, like the rest of the heap. Idempotent.
void KeepOpenSslUntilExit();

// Where TLS material lives. All paths are PEM files.
struct TlsConfig {
  bool insecure = false;  // plaintext
  std::string ca;         // the CA that signs the peers (a client's default: the system roots)
  std::string cert;       // this process's certificate (chain)
  std::string key;        // its private key
};

// The subject common name of a worker's certificate: "worker:" + its worker id.
inline constexpr absl::string_view kWorkerNamePrefix = "worker:";

// Flags every daemon and the CLI take: --tls-ca, --tls-cert, --tls-key (values) and --insecure.
inline const std::set<std::string>& ValueFlags() {
  static const auto* names = new std::set<std::string>{"tls-ca", "tls-cert", "tls-key"};
  return *names;
}
inline constexpr const char kInsecureFlag[] = "insecure";

enum class Role {
  kServer,  // --tls-cert and --tls-key required (and --tls-ca when clients present certificates)
  kClient,  // all optional: no --tls-ca means the system's roots; cert+key present a client cert
};

// INVALID_ARGUMENT naming the flag: --insecure together with a --tls-* flag, a server without
// --tls-cert/--tls-key, --tls-cert without --tls-key (or the reverse); NOT_FOUND / the file's
// error for a file that cannot be read or checked (see the header comment).
absl::StatusOr<TlsConfig> ConfigFromArgs(const flags::ParsedArgs& args, Role role);

// The same from the environment (DSTRAIN_TLS_CA, DSTRAIN_TLS_CERT, DSTRAIN_TLS_KEY,
// DSTRAIN_INSECURE=1), as the worker agent hands its configuration to the trainers it starts and
// as the CLI reads it when no flag says otherwise. `env` maps names to values.
absl::StatusOr<TlsConfig> ConfigFromEnvironment(const std::map<std::string, std::string>& env,
                                                Role role);
absl::StatusOr<TlsConfig> ConfigFromProcessEnvironment(Role role);
std::map<std::string, std::string> ToEnvironment(const TlsConfig& config);

// The flags that reproduce `config` on a command line (for a child daemon or a message).
std::vector<std::string> ToFlags(const TlsConfig& config);

enum class ClientCertificates {
  kNone,              // clients are not asked for one (a worker's health port)
  kVerifyIfPresented  // verified against config.ca when sent; callers without one still connect
};

// Credentials for a listening port. INVALID_ARGUMENT when the files are missing for TLS, or
// kVerifyIfPresented without a CA.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsConfig& config, ClientCertificates client_certificates);

// Credentials for a channel: plaintext when config.insecure, otherwise TLS verifying the server
// against config.ca (or the system roots) and presenting config.cert when there is one.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const TlsConfig& config);

// The worker id a verified client certificate names ("worker:<id>" as its common name), or "" for
// a peer without one (plaintext, no client certificate, another kind of name).
std::string PeerWorkerId(const grpc::AuthContext& context);

// The worker id the certificate in `cert_path` names (its common name "worker:<id>"), or "" for
// a certificate of another kind; the file's error when it cannot be read or parsed.
absl::StatusOr<std::string> CertificateWorkerId(const std::string& cert_path);

// Reads and checks a PEM file now: the certificate parses, is within its validity period and
// (when `key_path` is not empty) matches the key. The message names `flag` and the path.
absl::Status CheckCertificateFile(absl::string_view flag, const std::string& cert_path,
                                  const std::string& key_path);

}  // namespace dstrain::tls
