#include "common/tls/testing/test_pki.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dstrain::tls::testing {
namespace {

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

Key NewKey() { return Key(EVP_EC_gen("P-256")); }

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return absl::InternalError(absl::StrCat("extension ", value));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return absl::OkStatus();
}

absl::Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot write ", path));
  const bool ok = cert != nullptr
                      ? PEM_write_X509(f, cert) == 1
                      : PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  std::fclose(f);
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}

// Makes a certificate for `key` named `common_name`, signed by issuer_key (self-signed when
// issuer is null).
absl::StatusOr<Cert> MakeCert(EVP_PKEY* key, const std::string& common_name, X509* issuer,
                              EVP_PKEY* issuer_key, const TestPki::Options& options, bool ca) {
  static long serial = 1;
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  const int64_t from = absl::ToInt64Seconds(options.valid_from);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), from);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), from + absl::ToInt64Seconds(options.valid_for));
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* signer = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  if (ca) {
    if (auto s = AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
        !s.ok())
      return s;
    if (auto s = AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
        !s.ok())
      return s;
  } else {
    std::vector<std::string> alt;
    for (const std::string& d : options.dns) alt.push_back(absl::StrCat("DNS:", d));
    for (const std::string& i : options.ips) alt.push_back(absl::StrCat("IP:", i));
    if (!alt.empty()) {
      if (auto s = AddExtension(cert.get(), signer, NID_subject_alt_name, absl::StrJoin(alt, ","));
          !s.ok())
        return s;
    }
  }
  if (X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0) {
    return absl::InternalError("X509_sign failed");
  }
  return cert;
}

absl::StatusOr<Cert> ReadCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot read ", path));
  Cert cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  if (cert == nullptr) return absl::InternalError(absl::StrCat("not a certificate: ", path));
  return cert;
}

absl::StatusOr<Key> ReadKey(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot read ", path));
  Key key(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
  std::fclose(f);
  if (key == nullptr) return absl::InternalError(absl::StrCat("not a key: ", path));
  return key;
}

}  // namespace

absl::StatusOr<TestPki> TestPki::Create(const std::string& dir, const std::string& ca_name) {
  Key key = NewKey();
  if (key == nullptr) return absl::InternalError("EC key generation failed");
  Options options;
  options.valid_for = absl::Hours(24 * 30);
  absl::StatusOr<Cert> cert = MakeCert(key.get(), ca_name, nullptr, nullptr, options, true);
  if (!cert.ok()) return cert.status();
  Files files{absl::StrCat(dir, "/", ca_name, ".pem"), absl::StrCat(dir, "/", ca_name, ".key")};
  if (auto s = WritePem(files.cert, cert->get(), nullptr); !s.ok()) return s;
  if (auto s = WritePem(files.key, nullptr, key.get()); !s.ok()) return s;
  return TestPki(dir, std::move(files));
}

absl::StatusOr<TestPki::Files> TestPki::Issue(const std::string& common_name,
                                              const Options& options,
                                              const std::string& file_stem) const {
  absl::StatusOr<Cert> ca = ReadCert(ca_.cert);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<Key> ca_key = ReadKey(ca_.key);
  if (!ca_key.ok()) return ca_key.status();
  Key key = NewKey();
  if (key == nullptr) return absl::InternalError("EC key generation failed");
  absl::StatusOr<Cert> cert =
      MakeCert(key.get(), common_name, ca->get(), ca_key->get(), options, false);
  if (!cert.ok()) return cert.status();
  std::string stem = file_stem.empty() ? common_name : file_stem;
  for (char& c : stem) {
    if (c == ':' || c == '/') c = '_';
  }
  Files files{absl::StrCat(dir_, "/", stem, ".pem"), absl::StrCat(dir_, "/", stem, ".key")};
  if (auto s = WritePem(files.cert, cert->get(), nullptr); !s.ok()) return s;
  if (auto s = WritePem(files.key, nullptr, key.get()); !s.ok()) return s;
  return files;
}

}  // namespace dstrain::tls::testing
