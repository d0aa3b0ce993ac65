// Real TLS handshakes on 127.0.0.1 against a server built from tls::ServerCredentials: who gets
// in (the right CA, with or without a client certificate) and who does not (plaintext, the wrong
// CA, a certificate from another CA, an expired certificate), and the worker identity a verified
// client certificate carries.
#include "common/tls/tls.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_callback.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/status/status_matchers.h"
#include "common/tls/testing/test_pki.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::tls {
namespace {

using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;
using testing::TestPki;

// Answers every method with OK and remembers the caller's worker id.
class Recorder : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    {
      absl::MutexLock lock(&mu_);
      last_worker_ = PeerWorkerId(*ctx->auth_context());
    }
    struct Done : grpc::ServerGenericBidiReactor {
      Done() { Finish(grpc::Status::OK); }
      void OnDone() override { delete this; }
    };
    return new Done;
  }
  std::string last_worker() {
    absl::MutexLock lock(&mu_);
    return last_worker_;
  }

 private:
  absl::Mutex mu_;
  std::string last_worker_ ABSL_GUARDED_BY(mu_);
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/tls_test_" + std::to_string(counter_++);
    ASSERT_EQ(std::system(("mkdir -p " + dir_).c_str()), 0);
    ASSERT_OK_AND_ASSIGN(pki_, TestPki::Create(dir_));
    ASSERT_OK_AND_ASSIGN(other_, TestPki::Create(dir_, "other-ca"));
    ASSERT_OK_AND_ASSIGN(server_files_, pki_->Issue("coordinator", {}));
  }

  void Start(ClientCertificates mode) {
    ASSERT_OK_AND_ASSIGN(auto creds, ServerCredentials(pki_->Config(server_files_), mode));
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", creds, &port_);
    builder.RegisterCallbackGenericService(&recorder_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // One unary call over `config`'s credentials; the status it ends with.
  grpc::Status Call(const TlsConfig& config) {
    auto creds = ChannelCredentials(config);
    if (!creds.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "no credentials");
    // 127.0.0.1 is one of the server certificate's names (an IP address: resolving "localhost"
    // would go through c-ares, whose allocations LeakSanitizer reports).
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), *creds);
    grpc::GenericStub stub(channel);
    grpc::Slice empty(std::string(""));
    grpc::ByteBuffer request(&empty, 1), response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    absl::Notification done;
    grpc::Status status;
    stub.UnaryCall(&context, "/test.Any/Call", grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) {
                     status = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
    return status;
  }

  static inline int counter_ = 0;
  std::string dir_;
  std::optional<TestPki> pki_, other_;
  TestPki::Files server_files_;
  Recorder recorder_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(TlsTest, ClientTrustingTheCaGetsInWithoutACertificate) {
  Start(ClientCertificates::kVerifyIfPresented);
  TlsConfig client{false, pki_->ca_cert(), "", ""};
  EXPECT_TRUE(Call(client).ok());
  EXPECT_EQ(recorder_.last_worker(), "");
}

TEST_F(TlsTest, WorkerCertificateNamesTheWorker) {
  Start(ClientCertificates::kVerifyIfPresented);
  ASSERT_OK_AND_ASSIGN(TestPki::Files worker, pki_->Issue("worker:wa", {}));
  EXPECT_TRUE(Call(pki_->Config(worker)).ok());
  EXPECT_EQ(recorder_.last_worker(), "wa");
  // Another kind of name is no worker.
  ASSERT_OK_AND_ASSIGN(TestPki::Files person, pki_->Issue("alice", {}));
  EXPECT_TRUE(Call(pki_->Config(person)).ok());
  EXPECT_EQ(recorder_.last_worker(), "");
  // The same names read from the files, as a worker agent finds its own id.
  ASSERT_OK_AND_ASSIGN(std::string worker_id, CertificateWorkerId(worker.cert));
  EXPECT_EQ(worker_id, "wa");
  ASSERT_OK_AND_ASSIGN(std::string person_id, CertificateWorkerId(person.cert));
  EXPECT_EQ(person_id, "");
  EXPECT_THAT(CertificateWorkerId(worker.key),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a PEM certificate")));
}

TEST_F(TlsTest, PlaintextClientIsRefused) {
  Start(ClientCertificates::kVerifyIfPresented);
  TlsConfig plaintext;
  plaintext.insecure = true;
  EXPECT_EQ(Call(plaintext).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ClientTrustingAnotherCaRefusesTheServer) {
  Start(ClientCertificates::kVerifyIfPresented);
  TlsConfig client{false, other_->ca_cert(), "", ""};
  EXPECT_EQ(Call(client).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, CertificateFromAnotherCaIsRefused) {
  Start(ClientCertificates::kVerifyIfPresented);
  ASSERT_OK_AND_ASSIGN(TestPki::Files forged, other_->Issue("worker:wa", {}, "forged"));
  TlsConfig client{false, pki_->ca_cert(), forged.cert, forged.key};
  EXPECT_EQ(Call(client).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(recorder_.last_worker(), "");
}

TEST_F(TlsTest, ExpiredClientCertificateIsRefused) {
  Start(ClientCertificates::kVerifyIfPresented);
  TestPki::Options expired;
  expired.valid_from = absl::Hours(-48);
  expired.valid_for = absl::Hours(24);
  ASSERT_OK_AND_ASSIGN(TestPki::Files worker, pki_->Issue("worker:wa", expired));
  EXPECT_EQ(Call(pki_->Config(worker)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(recorder_.last_worker(), "");
  // And a daemon given it refuses to start, naming the file.
  EXPECT_THAT(CheckCertificateFile("--tls-cert", worker.cert, worker.key),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("expired")));
}

TEST_F(TlsTest, ExpiredServerCertificateIsRefusedByTheClient) {
  TestPki::Options expired;
  expired.valid_from = absl::Hours(-48);
  expired.valid_for = absl::Hours(24);
  ASSERT_OK_AND_ASSIGN(server_files_, pki_->Issue("coordinator", expired, "old-server"));
  Start(ClientCertificates::kVerifyIfPresented);
  TlsConfig client{false, pki_->ca_cert(), "", ""};
  EXPECT_EQ(Call(client).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ServerWithoutClientCertificatesServesAnyTlsClient) {
  Start(ClientCertificates::kNone);
  TlsConfig client{false, pki_->ca_cert(), "", ""};
  EXPECT_TRUE(Call(client).ok());
}

TEST(TlsConfigTest, FlagsAreCheckedTogether) {
  auto parse = [](std::vector<std::string> args, Role role) {
    auto parsed = flags::ParseArgs(args, ValueFlags(), {kInsecureFlag});
    EXPECT_TRUE(parsed.ok());
    return ConfigFromArgs(*parsed, role);
  };
  EXPECT_THAT(parse({}, Role::kServer),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--insecure")));
  EXPECT_THAT(parse({"--insecure", "--tls-ca", "x"}, Role::kServer),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one or the other")));
  EXPECT_THAT(parse({"--tls-cert", "x"}, Role::kClient),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("go together")));
  EXPECT_THAT(
      parse({"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"}, Role::kServer),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent.pem")));
  ASSERT_OK_AND_ASSIGN(TlsConfig insecure, parse({"--insecure"}, Role::kServer));
  EXPECT_TRUE(insecure.insecure);
  ASSERT_OK_AND_ASSIGN(TlsConfig client, parse({}, Role::kClient));
  EXPECT_FALSE(client.insecure);  // a client's default: TLS against the system roots
}

TEST(TlsConfigTest, EnvironmentRoundTrips) {
  const std::string dir = ::testing::TempDir() + "/tls_env";
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  ASSERT_OK_AND_ASSIGN(TestPki pki, TestPki::Create(dir));
  ASSERT_OK_AND_ASSIGN(TestPki::Files worker, pki.Issue("worker:wa", {}));
  const TlsConfig config = pki.Config(worker);
  ASSERT_OK_AND_ASSIGN(TlsConfig back, ConfigFromEnvironment(ToEnvironment(config), Role::kClient));
  EXPECT_EQ(back.ca, config.ca);
  EXPECT_EQ(back.cert, config.cert);
  EXPECT_EQ(back.key, config.key);
  EXPECT_FALSE(back.insecure);
  ASSERT_OK_AND_ASSIGN(TlsConfig plain,
                       ConfigFromEnvironment({{"DSTRAIN_INSECURE", "1"}}, Role::kClient));
  EXPECT_TRUE(plain.insecure);
  EXPECT_THAT(ConfigFromEnvironment({{"DSTRAIN_TLS_CERT", worker.cert}}, Role::kClient),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("DSTRAIN_TLS_KEY")));
  // A key that is not the certificate's.
  ASSERT_OK_AND_ASSIGN(TestPki::Files other, pki.Issue("worker:wb", {}));
  EXPECT_THAT(CheckCertificateFile("--tls-cert", worker.cert, other.key),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not belong")));
}

}  // namespace
}  // namespace dstrain::tls
