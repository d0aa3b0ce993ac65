// A throwaway certificate authority for tests, made in memory with libcrypto: a CA and
// certificates it signs (any common name, DNS and IP names, validity window), written as PEM
// files. Also an "other" CA, for the wrong-CA cases. Not for production use: the keys are written
// unencrypted next to the certificates.
//
//   ASSERT_OK_AND_ASSIGN(TestPki pki, TestPki::Create(dir));
//   ASSERT_OK_AND_ASSIGN(TestPki::Files server, pki.Issue("coordinator", {.dns = {"localhost"}}));
//   ASSERT_OK_AND_ASSIGN(TestPki::Files worker, pki.Issue("worker:wa", {}));
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls/tls.h"

namespace dstrain::tls::testing {

class TestPki {
 public:
  struct Files {
    std::string cert;  // PEM certificate
    std::string key;   // PEM private key
  };
  struct Options {
    std::vector<std::string> dns = {"localhost"};
    std::vector<std::string> ips = {"127.0.0.1"};
    absl::Duration valid_from = absl::Hours(-1);  // relative to now
    absl::Duration valid_for = absl::Hours(24);   // from valid_from
  };

  // Writes ca.pem and ca.key under `dir` (which must exist).
  static absl::StatusOr<TestPki> Create(const std::string& dir, const std::string& ca_name = "ca");

  // Writes <file_stem>.pem and .key under the directory, signed by this CA.
  absl::StatusOr<Files> Issue(const std::string& common_name, const Options& options,
                              const std::string& file_stem = "") const;

  const std::string& ca_cert() const { return ca_.cert; }

  // A TlsConfig trusting this CA and presenting `files`.
  TlsConfig Config(const Files& files) const { return {false, ca_.cert, files.cert, files.key}; }

 private:
  TestPki(std::string dir, Files ca) : dir_(std::move(dir)), ca_(std::move(ca)) {}
  std::string dir_;
  Files ca_;
};

}  // namespace dstrain::tls::testing
