#include "common/tls/tls.h"

#include <grpcpp/security/credentials.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

extern char** environ;

namespace dstrain::tls {
namespace {

absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  // A PEM file is small; anything larger is not what the flag should name.
  if (text.str().size() > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": over 1 MiB, not a PEM file"));
  }
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": no PEM block"));
  }
  return text.str();
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

absl::Status Validate(TlsConfig& config, Role role, absl::string_view source) {
  auto name = [&](absl::string_view flag) {
    return source == "flags"
               ? absl::StrCat("--", flag)
               : absl::StrCat("DSTRAIN_",
                              absl::StrReplaceAll(absl::AsciiStrToUpper(flag), {{"-", "_"}}));
  };
  const bool any_file = !config.ca.empty() || !config.cert.empty() || !config.key.empty();
  if (config.insecure) {
    if (any_file) {
      return absl::InvalidArgumentError(absl::StrCat(
          name("insecure"), " (plaintext) together with TLS files: give one or the other"));
    }
    return absl::OkStatus();
  }
  if (config.cert.empty() != config.key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name("tls-cert"), " and ", name("tls-key"),
                                                   " go together: give both or neither"));
  }
  if (role == Role::kServer && config.cert.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS needs ", name("tls-cert"), " and ", name("tls-key"), " (and ",
                     name("tls-ca"), " for mutual TLS); ", name("insecure"),
                     " serves plaintext to anyone instead (docs/security.md)"));
  }
  if (!config.ca.empty()) {
    if (absl::StatusOr<std::string> ca = ReadPem(name("tls-ca"), config.ca); !ca.ok()) {
      return ca.status();
    }
  }
  if (!config.cert.empty()) {
    return CheckCertificateFile(name("tls-cert"), config.cert, config.key);
  }
  return absl::OkStatus();
}

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

// The first certificate of the PEM file at `path`; errors name `flag` and the path.
absl::StatusOr<std::unique_ptr<X509, X509Free>> ReadCertificate(absl::string_view flag,
                                                                const std::string& path) {
  absl::StatusOr<std::string> pem = ReadPem(flag, path);
  if (!pem.ok()) return pem.status();
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": not a PEM certificate"));
  }
  return cert;
}

// The worker id a certificate's common name names, or "" for a name of another kind.
std::string WorkerIdOf(absl::string_view common_name) {
  if (!absl::StartsWith(common_name, kWorkerNamePrefix)) return "";
  return std::string(common_name.substr(kWorkerNamePrefix.size()));
}

}  // namespace

void KeepOpenSslUntilExit() {
  // Only the first initialisation decides whether the exit handler is registered; later calls,
  // including gRPC's own, change nothing.
  OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
}

absl::Status CheckCertificateFile(absl::string_view flag, const std::string& cert_path,
                                  const std::string& key_path) {
  absl::StatusOr<std::unique_ptr<X509, X509Free>> read = ReadCertificate(flag, cert_path);
  if (!read.ok()) return read.status();
  const std::unique_ptr<X509, X509Free>& cert = *read;
  if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, " ", cert_path, ": the certificate is not valid yet"));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, " ", cert_path, ": the certificate has expired"));
  }
  if (key_path.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> key_pem = ReadPem("the key", key_path);
  if (!key_pem.ok()) return key_pem.status();
  std::unique_ptr<BIO, BioFree> key_bio(
      BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_path, ": not an unencrypted PEM private key"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_path, " and ", key_path, ": the key does not belong to the certificate"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsConfig> ConfigFromArgs(const flags::ParsedArgs& args, Role role) {
  TlsConfig config;
  config.insecure = args.Has(kInsecureFlag);
  config.ca = args.Get("tls-ca");
  config.cert = args.Get("tls-cert");
  config.key = args.Get("tls-key");
  if (absl::Status s = Validate(config, role, "flags"); !s.ok()) return s;
  return config;
}

absl::StatusOr<TlsConfig> ConfigFromEnvironment(const std::map<std::string, std::string>& env,
                                                Role role) {
  auto get = [&env](const char* name) {
    auto it = env.find(name);
    return it == env.end() ? std::string() : it->second;
  };
  TlsConfig config;
  const std::string insecure = Lower(get("DSTRAIN_INSECURE"));
  config.insecure = !insecure.empty() && insecure != "0" && insecure != "false";
  config.ca = get("DSTRAIN_TLS_CA");
  config.cert = get("DSTRAIN_TLS_CERT");
  config.key = get("DSTRAIN_TLS_KEY");
  if (absl::Status s = Validate(config, role, "env"); !s.ok()) return s;
  return config;
}

absl::StatusOr<TlsConfig> ConfigFromProcessEnvironment(Role role) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    if (!absl::StartsWith(entry, "DSTRAIN_")) continue;
    const size_t eq = entry.find('=');
    if (eq == absl::string_view::npos) continue;
    env[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  return ConfigFromEnvironment(env, role);
}

std::map<std::string, std::string> ToEnvironment(const TlsConfig& config) {
  std::map<std::string, std::string> env;
  if (config.insecure) env["DSTRAIN_INSECURE"] = "1";
  if (!config.ca.empty()) env["DSTRAIN_TLS_CA"] = config.ca;
  if (!config.cert.empty()) env["DSTRAIN_TLS_CERT"] = config.cert;
  if (!config.key.empty()) env["DSTRAIN_TLS_KEY"] = config.key;
  return env;
}

std::vector<std::string> ToFlags(const TlsConfig& config) {
  if (config.insecure) return {"--insecure"};
  std::vector<std::string> out;
  if (!config.ca.empty()) out.insert(out.end(), {"--tls-ca", config.ca});
  if (!config.cert.empty()) out.insert(out.end(), {"--tls-cert", config.cert});
  if (!config.key.empty()) out.insert(out.end(), {"--tls-key", config.key});
  return out;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsConfig& config, ClientCertificates client_certificates) {
  if (config.insecure) return grpc::InsecureServerCredentials();
  if (config.cert.empty() || config.key.empty()) {
    return absl::InvalidArgumentError("a TLS server needs a certificate and its key");
  }
  const bool verify = client_certificates == ClientCertificates::kVerifyIfPresented;
  if (verify && config.ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls-ca is required: the workers' client certificates are verified against it");
  }
  grpc::SslServerCredentialsOptions options(verify ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!config.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("--tls-ca", config.ca);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  absl::StatusOr<std::string> cert = ReadPem("--tls-cert", config.cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("--tls-key", config.key);
  if (!key.ok()) return key.status();
  options.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const TlsConfig& config) {
  if (config.insecure) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  if (!config.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("--tls-ca", config.ca);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  if (!config.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("--tls-cert", config.cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("--tls-key", config.key);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(options);
}

std::string PeerWorkerId(const grpc::AuthContext& context) {
  // Present only after the handshake verified the chain against --tls-ca.
  if (!context.IsPeerAuthenticated()) return "";
  const std::vector<grpc::string_ref> names = context.FindPropertyValues("x509_common_name");
  if (names.size() != 1) return "";
  return WorkerIdOf(absl::string_view(names[0].data(), names[0].size()));
}

absl::StatusOr<std::string> CertificateWorkerId(const std::string& cert_path) {
  absl::StatusOr<std::unique_ptr<X509, X509Free>> cert = ReadCertificate("--tls-cert", cert_path);
  if (!cert.ok()) return cert.status();
  const X509_NAME* subject = X509_get_subject_name(cert->get());
  const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) return std::string();
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  return WorkerIdOf(absl::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                                      static_cast<size_t>(ASN1_STRING_length(data))));
}

}  // namespace dstrain::tls
