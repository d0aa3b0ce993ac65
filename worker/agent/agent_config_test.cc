#include "worker/agent/agent_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/status/status_matchers.h"
#include "common/tls/testing/test_pki.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::agent {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

// An executable file at `path`.
void MakeExecutable(const std::string& path) {
  std::ofstream(path) << "#!/bin/sh\n";
  chmod(path.c_str(), 0755);
}

ConfigEnvironment TestEnvironment() {
  const std::string tmp = getenv("TEST_TMPDIR");
  mkdir((tmp + "/bin").c_str(), 0755);
  mkdir((tmp + "/path").c_str(), 0755);
  MakeExecutable(tmp + "/bin/dstrain");
  MakeExecutable(tmp + "/path/other-trainer");
  ConfigEnvironment env;
  env.hostname = "Node-7.Example.COM";
  env.self_exe = tmp + "/bin/dstrain-worker";
  env.path = "/nonexistent:" + tmp + "/path";
  env.cwd = tmp;
  return env;
}

// ParseAgentConfig with the flags every test but the security one needs.
absl::StatusOr<AgentConfig> Parse(std::vector<std::string> args, const ConfigEnvironment& env) {
  args.insert(args.end(), {"--insecure", "--data-root", "/data"});
  return ParseAgentConfig(args, env);
}

TEST(AgentConfig, ParsesTheCommandLineAndFillsDefaults) {
  const ConfigEnvironment env = TestEnvironment();
  auto config =
      Parse({"--coordinator", "coord:7000", "--slots", "4", "--work-dir", "work/./w1"}, env);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->coordinator, "coord:7000");
  EXPECT_EQ(config->slots, 4);
  EXPECT_EQ(config->work_dir, env.cwd + "/work/w1");
  EXPECT_EQ(config->metrics_listen, "127.0.0.1:0");
  EXPECT_EQ(config->listen, "127.0.0.1:0");
  EXPECT_THAT(config->worker_id, MatchesRegex("node-7-example-com-[0-9a-f]{6}"));
  EXPECT_EQ(config->trainer, env.cwd + "/bin/dstrain");
  EXPECT_EQ(config->advertise_address, "") << "found at start";
}

TEST(AgentConfig, AdvertiseAddress) {
  const ConfigEnvironment env = TestEnvironment();
  auto config = Parse({"--coordinator", "coord:7000", "--slots", "1", "--work-dir", "/w",
                       "--advertise-address", "10.1.2.3"},
                      env);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->advertise_address, "10.1.2.3");
  for (const char* bad : {"", "10.1.2.3 x", "a/b"}) {
    auto refused = Parse({"--coordinator", "coord:7000", "--slots", "1", "--work-dir", "/w",
                          "--advertise-address", bad},
                         env);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// The route's source address: loopback for a coordinator on loopback; an error naming the host
// for one that does not resolve.
TEST(LocalAddressToward, TheSourceAddressOfTheRoute) {
  auto local = LocalAddressToward("127.0.0.1:50051");
  ASSERT_THAT(local, IsOk());
  EXPECT_EQ(*local, "127.0.0.1");
  local = LocalAddressToward("localhost:1");
  ASSERT_THAT(local, IsOk());
  EXPECT_TRUE(*local == "127.0.0.1" || *local == "::1") << *local;
  auto unknown = LocalAddressToward("no-such-host.invalid:50051");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(unknown.status().message(), ::testing::HasSubstr("no-such-host.invalid"));
}

TEST(AgentConfig, ExplicitValuesWin) {
  const ConfigEnvironment env = TestEnvironment();
  auto config = Parse({"--coordinator=coord:7000", "--slots=2", "--work-dir=/var/w",
                       "--metrics-listen", "0.0.0.0:9464", "--listen", "0.0.0.0:50052",
                       "--worker-id", "gpu-3", "--trainer", "other-trainer"},
                      env);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->metrics_listen, "0.0.0.0:9464");
  EXPECT_EQ(config->listen, "0.0.0.0:50052");
  EXPECT_EQ(config->worker_id, "gpu-3");
  EXPECT_EQ(config->trainer, env.cwd + "/path/other-trainer");
}

TEST(AgentConfig, RejectsBadCommandLines) {
  const ConfigEnvironment env = TestEnvironment();
  const std::vector<std::string> base = {"--coordinator", "c:1", "--slots", "1",
                                         "--work-dir",    "/w"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return Parse(args, env);
  };
  EXPECT_THAT(Parse({"--slots", "1", "--work-dir", "/w"}, env),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--coordinator")));
  EXPECT_THAT(Parse({"--coordinator", "c:1", "--work-dir", "/w"}, env),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--slots")));
  EXPECT_THAT(Parse({"--coordinator", "c", "--slots", "1", "--work-dir", "/w"}, env),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("HOST:PORT")));
  EXPECT_THAT(Parse({"--coordinator", "c:1", "--slots", "-1", "--work-dir", "/w"}, env),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--slots")));
  EXPECT_THAT(
      Parse({"--coordinator", "c:1", "--slots", "0", "--work-dir", "/w", "--gpus", "none"}, env),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no slot at all")));
  EXPECT_THAT(with({"--gpus", "all"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--gpus")));
  EXPECT_THAT(with({"--fake-gpus", "H200"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--fake-gpus: 'H200'")));
  EXPECT_THAT(with({"--worker-id", "Bad_Id"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--worker-id")));
  EXPECT_THAT(with({"--bogus", "1"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--bogus")));
  EXPECT_THAT(with({"extra"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("extra")));
  EXPECT_THAT(with({"--trainer", "/nonexistent/dstrain"}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("--trainer")));
  EXPECT_THAT(with({"--trainer", "no-such-trainer"}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("PATH")));
  ConfigEnvironment bare = env;
  bare.self_exe = "/nonexistent/dstrain-worker";
  bare.path = "/nonexistent";
  EXPECT_THAT(Parse(base, bare), StatusIs(absl::StatusCode::kNotFound, HasSubstr("--trainer")));
}

// A worker starts only with a data root and with TLS or an explicit --insecure; with TLS its id is
// its certificate's.
TEST(AgentConfig, DataRootAndTlsOrInsecureAreRequired) {
  const ConfigEnvironment env = TestEnvironment();
  const std::vector<std::string> base = {"--coordinator", "c:1", "--slots", "1",
                                         "--work-dir",    "/w"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return ParseAgentConfig(args, env);
  };
  EXPECT_THAT(with({"--insecure"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--data-root")));
  EXPECT_THAT(with({"--data-root", "/d"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--tls-cert")));
  auto insecure = with({"--data-root", "d", "--insecure"});
  ASSERT_THAT(insecure, IsOk());
  EXPECT_TRUE(insecure->tls.insecure);
  EXPECT_EQ(insecure->data_root, env.cwd + "/d");

  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/pki";
  mkdir(dir.c_str(), 0755);
  auto pki = tls::testing::TestPki::Create(dir);
  ASSERT_THAT(pki, IsOk());
  auto worker = pki->Issue("worker:gpu-7", {}, "worker");
  auto person = pki->Issue("alice", {}, "alice");
  ASSERT_THAT(worker, IsOk());
  ASSERT_THAT(person, IsOk());
  const std::vector<std::string> tls_flags = {"--data-root",   "/d",         "--tls-ca",
                                              dir + "/ca.pem", "--tls-cert", worker->cert,
                                              "--tls-key",     worker->key};
  auto secure = with(tls_flags);
  ASSERT_THAT(secure, IsOk());
  EXPECT_FALSE(secure->tls.insecure);
  EXPECT_EQ(secure->tls.cert, worker->cert);
  EXPECT_EQ(secure->worker_id, "gpu-7") << "the certificate names the worker";
  std::vector<std::string> other = tls_flags;
  other.insert(other.end(), {"--worker-id", "gpu-8"});
  EXPECT_THAT(with(other), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("--worker-id gpu-8: the certificate")));
  std::vector<std::string> not_worker = {"--data-root", "/d",        "--tls-cert",
                                         person->cert,  "--tls-key", person->key};
  EXPECT_THAT(with(not_worker),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a worker certificate")));
  std::vector<std::string> both = tls_flags;
  both.push_back("--insecure");
  EXPECT_THAT(with(both), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--insecure")));
}

TEST(AgentConfig, GpuFlags) {
  const ConfigEnvironment env = TestEnvironment();
  auto config = Parse({"--coordinator", "c:1", "--slots", "2", "--work-dir", "/w"}, env);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->gpus.mode, GpuSelection::Mode::kAuto);
  EXPECT_FALSE(config->fake_gpus.has_value());
  // A GPU-only worker: no CPU slots, at most 2 GPUs of a fake inventory of 3.
  config = Parse({"--coordinator", "c:1", "--slots", "0", "--work-dir", "/w", "--gpus", "2",
                  "--fake-gpus", "FakeGPU:1000,FakeGPU:1000,FakeGPU:1000"},
                 env);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->slots, 0);
  EXPECT_EQ(config->gpus.mode, GpuSelection::Mode::kAtMost);
  EXPECT_EQ(config->gpus.at_most, 2);
  ASSERT_TRUE(config->fake_gpus.has_value());
  EXPECT_EQ(config->fake_gpus->size(), 3u);
}

TEST(AgentConfig, DefaultWorkerIdIsValidAndStable) {
  for (const char* host : {"node1", "Node-7.Example.COM", "123", "", "a_b c",
                           "a-very-long-host-name-that-goes-on-and-on-and-on-for-more-than-63"}) {
    const std::string id = DefaultWorkerId(host, "/var/lib/dstrain");
    EXPECT_TRUE(IsValidWorkerId(id)) << host << " -> " << id;
    EXPECT_EQ(id, DefaultWorkerId(host, "/var/lib/dstrain"));
  }
  EXPECT_NE(DefaultWorkerId("node1", "/w1"), DefaultWorkerId("node1", "/w2"));
  EXPECT_THAT(DefaultWorkerId("123", "/w"), MatchesRegex("w123-[0-9a-f]{6}"));
}

TEST(AgentConfig, IsValidWorkerId) {
  EXPECT_TRUE(IsValidWorkerId("a"));
  EXPECT_TRUE(IsValidWorkerId("node-1"));
  EXPECT_TRUE(IsValidWorkerId(std::string(63, 'a')));
  EXPECT_FALSE(IsValidWorkerId(std::string(64, 'a')));
  EXPECT_FALSE(IsValidWorkerId(""));
  EXPECT_FALSE(IsValidWorkerId("1node"));
  EXPECT_FALSE(IsValidWorkerId("Node"));
  EXPECT_FALSE(IsValidWorkerId("node_1"));
}

TEST(AgentConfig, AdvertisedAddress) {
  EXPECT_EQ(AdvertisedAddress("127.0.0.1:0", 9464, "h"), "127.0.0.1:9464");
  EXPECT_EQ(AdvertisedAddress("0.0.0.0:0", 9464, "h"), "h:9464");
  EXPECT_EQ(AdvertisedAddress("[::]:9464", 9464, "h"), "h:9464");
  EXPECT_EQ(AdvertisedAddress(":9464", 9464, "h"), "h:9464");
}

}  // namespace
}  // namespace dstrain::agent
