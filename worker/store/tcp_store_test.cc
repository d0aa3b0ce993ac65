// TcpStore specifics (the Store contract is in store_conformance_test.cc): rendezvous across
// processes, clients that start before the server, shutdown while clients block, malformed
// frames on a raw socket, unreachable servers, and the size limits. Loopback only, port 0.
#include "worker/store/tcp_store.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/store/socket_io.h"
#include "worker/store/tcp_store_protocol.h"

namespace dstrain::store {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using store::internal::ScopedFd;
using ::testing::HasSubstr;

constexpr absl::Duration kLong = absl::Seconds(5);

std::unique_ptr<TcpStoreServer> StartServer() {
  absl::StatusOr<std::unique_ptr<TcpStoreServer>> server = TcpStoreServer::Start("127.0.0.1", 0);
  EXPECT_THAT(server, IsOk());
  return server.ok() ? *std::move(server) : nullptr;
}

std::unique_ptr<TcpStoreClient> ConnectTo(int port) {
  absl::StatusOr<std::unique_ptr<TcpStoreClient>> client =
      TcpStoreClient::Connect("127.0.0.1", port, kLong);
  EXPECT_THAT(client, IsOk());
  return client.ok() ? *std::move(client) : nullptr;
}

// A loopback port nobody listens on (bound, read back, released).
int UnusedPort() {
  int bound = 0;
  absl::StatusOr<ScopedFd> fd = store::internal::ListenTcp("127.0.0.1", 0, &bound);
  EXPECT_THAT(fd, IsOk());
  return bound;
}

// True when the server closes `fd` (end of stream) within `within`.
bool ClosedByPeer(int fd, absl::Duration within) {
  char buf[64];
  absl::Time deadline = absl::Now() + within;
  while (absl::Now() < deadline) {
    if (!store::internal::WaitReadable(fd, deadline).ok()) return false;
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return true;  // Reset counts as closed.
  }
  return false;
}

// A raw connection that has said a valid HELLO (to reach the request parser).
ScopedFd RawGreetedConnection(int port) {
  absl::StatusOr<ScopedFd> fd = store::internal::ConnectTcp("127.0.0.1", port, absl::Now() + kLong);
  EXPECT_THAT(fd, IsOk());
  if (!fd.ok()) return ScopedFd();
  store::internal::Request hello;
  EXPECT_THAT(store::internal::WriteFrame(fd->get(), *store::internal::EncodeRequest(hello),
                                          absl::Now() + kLong),
              IsOk());
  std::string reply;
  absl::StatusOr<bool> got =
      store::internal::ReadFrame(fd->get(), &reply, absl::Now() + kLong, kLong);
  EXPECT_THAT(got, IsOk());
  EXPECT_TRUE(got.ok() && *got);
  return *std::move(fd);
}

std::string Frame(uint32_t len, const std::string& payload) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  return out + payload;
}

// --- Processes ------------------------------------------------------------------------------

// Body of a forked rank: connect, publish the rank, wait for every rank, bump the counter, check
// the peers' values. Returns a process exit code; never returns into gtest.
int RunChildRank(int rank, int world, int port_pipe) {
  alarm(30);  // Whatever happens, never outlive the test.
  int port = 0;
  if (::read(port_pipe, &port, sizeof(port)) != sizeof(port)) return 10;
  absl::StatusOr<std::unique_ptr<TcpStoreClient>> client =
      TcpStoreClient::Connect("127.0.0.1", port, absl::Seconds(10));
  if (!client.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, client.status().ToString().c_str());
    return 11;
  }
  Store& store = **client;
  if (!store.Set(absl::StrCat("rank/", rank), absl::StrCat("pid ", getpid())).ok()) return 12;
  std::vector<std::string> keys;
  for (int r = 0; r < world; ++r) keys.push_back(absl::StrCat("rank/", r));
  absl::Status waited = store.Wait(keys, absl::Seconds(10));
  if (!waited.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, waited.ToString().c_str());
    return 13;
  }
  for (int r = 0; r < world; ++r) {
    absl::StatusOr<std::string> value = store.Get(keys[r], absl::Seconds(1));
    if (!value.ok() || value->rfind("pid ", 0) != 0) return 14;
  }
  if (!store.Add("arrived", 1).ok()) return 15;
  return 0;
}

TEST(TcpStoreTest, ForkedProcessesRendezvous) {
  constexpr int kWorld = 4;
  // Fork before any thread exists (the server's included), so the children start from a
  // single-threaded image; each learns the port through its pipe once the server is up.
  std::vector<pid_t> pids;
  std::vector<int> pipes;
  for (int rank = 0; rank < kWorld; ++rank) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[1]);
      std::fflush(stderr);
      ::_exit(RunChildRank(rank, kWorld, fds[0]));
    }
    ::close(fds[0]);
    pids.push_back(pid);
    pipes.push_back(fds[1]);
  }
  std::unique_ptr<TcpStoreServer> server = StartServer();
  int port = server != nullptr ? server->port() : 0;
  for (int fd : pipes) {
    EXPECT_EQ(::write(fd, &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
    ::close(fd);
  }
  ASSERT_NE(server, nullptr);

  // Reap with a deadline; a child still running after it is killed (by its pid) and fails.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  std::vector<int> exit_codes(kWorld, -1);
  int remaining = kWorld;
  while (remaining > 0 && absl::Now() < deadline) {
    for (int i = 0; i < kWorld; ++i) {
      if (exit_codes[i] != -1) continue;
      int status = 0;
      if (::waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        exit_codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
        --remaining;
      }
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  for (int i = 0; i < kWorld; ++i) {
    if (exit_codes[i] == -1) {
      ::kill(pids[i], SIGKILL);
      ::waitpid(pids[i], nullptr, 0);
    }
    EXPECT_EQ(exit_codes[i], 0) << "rank " << i;
  }

  std::unique_ptr<TcpStoreClient> parent = ConnectTo(server->port());
  ASSERT_NE(parent, nullptr);
  absl::StatusOr<int64_t> arrived = parent->Add("arrived", 0);
  ASSERT_THAT(arrived, IsOk());
  EXPECT_EQ(*arrived, kWorld);
}

// --- Connecting -----------------------------------------------------------------------------

TEST(TcpStoreTest, ClientsStartedBeforeTheServerConnectOnceItIsUp) {
  const int port = UnusedPort();
  constexpr int kClients = 3;
  std::vector<absl::StatusOr<std::unique_ptr<TcpStoreClient>>> clients(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back(
        [&, i] { clients[i] = TcpStoreClient::Connect("127.0.0.1", port, absl::Seconds(8)); });
  }
  absl::SleepFor(absl::Milliseconds(300));
  absl::StatusOr<std::unique_ptr<TcpStoreServer>> server = TcpStoreServer::Start("127.0.0.1", port);
  ASSERT_THAT(server, IsOk());  // (The port was released above; nothing else should take it.)
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_THAT(clients[i], IsOk());
    EXPECT_THAT((*clients[i])->Add("joined", 1).status(), IsOk());
  }
  absl::StatusOr<std::string> joined = (*clients[0])->Get("joined", kLong);
  ASSERT_THAT(joined, IsOk());
  EXPECT_EQ(*joined, "3");
}

TEST(TcpStoreTest, ConnectToAPortNobodyListensOnFailsAfterTheTimeout) {
  const int port = UnusedPort();
  const absl::Duration timeout = absl::Milliseconds(400);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<TcpStoreClient>> client =
      TcpStoreClient::Connect("127.0.0.1", port, timeout);
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_THAT(client, StatusIs(absl::StatusCode::kUnavailable,
                               HasSubstr(absl::StrCat("127.0.0.1:", port))));
  EXPECT_GE(elapsed, timeout);
  EXPECT_LT(elapsed, timeout + absl::Seconds(2));
}

TEST(TcpStoreTest, ConnectsByHostName) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  // "localhost" may resolve to ::1 first, where nobody listens; the IPv4 address must be tried.
  absl::StatusOr<std::unique_ptr<TcpStoreClient>> client =
      TcpStoreClient::Connect("localhost", server->port(), kLong);
  ASSERT_THAT(client, IsOk());
  EXPECT_THAT((*client)->Set("k", "v"), IsOk());
}

TEST(TcpStoreTest, BadPortsAreInvalidArguments) {
  EXPECT_THAT(TcpStoreClient::Connect("127.0.0.1", 0, absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(TcpStoreClient::Connect("127.0.0.1", 70000, absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(TcpStoreServer::Start("127.0.0.1", -1),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(TcpStoreTest, StartOnABusyPortIsUnavailable) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(TcpStoreServer::Start("127.0.0.1", server->port()),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

TEST(TcpStoreTest, ConnectingToSomethingElseIsFailedPrecondition) {
  // A "server" that answers HELLO with garbage.
  int port = 0;
  absl::StatusOr<ScopedFd> listener = store::internal::ListenTcp("127.0.0.1", 0, &port);
  ASSERT_THAT(listener, IsOk());
  std::thread impostor([&] {
    int fd = ::accept(listener->get(), nullptr, nullptr);
    if (fd < 0) return;
    ScopedFd conn(fd);
    std::string request;
    (void)store::internal::ReadFrame(fd, &request, absl::Now() + kLong, kLong);
    (void)store::internal::WriteFull(fd, "HTTP/1.1 400 Bad Request\r\n\r\n", absl::Now() + kLong);
  });
  EXPECT_THAT(TcpStoreClient::Connect("127.0.0.1", port, absl::Seconds(2)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a dstrain store")));
  impostor.join();
}

// --- Server going away ----------------------------------------------------------------------

TEST(TcpStoreTest, ShutdownUnblocksAClientBlockedInGet) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<TcpStoreClient> client = ConnectTo(server->port());
  ASSERT_NE(client, nullptr);
  absl::Status get_status;
  absl::Time returned_at;
  std::thread getter([&] {
    get_status = client->Get("never", absl::Seconds(30)).status();
    returned_at = absl::Now();
  });
  std::thread waiter([&] { (void)client->Wait({"never", "nor_this"}, absl::InfiniteDuration()); });
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time shutdown_at = absl::Now();
  server->Shutdown();
  EXPECT_LT(absl::Now() - shutdown_at, absl::Seconds(2));
  getter.join();
  waiter.join();
  EXPECT_THAT(get_status, StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_LT(returned_at - shutdown_at, absl::Seconds(2));
  server->Shutdown();  // Idempotent.
}

TEST(TcpStoreTest, CallsToADeadServerAreUnavailable) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<TcpStoreClient> client = ConnectTo(server->port());
  ASSERT_NE(client, nullptr);
  ASSERT_THAT(client->Set("k", "v"), IsOk());
  server.reset();  // Destructor shuts down.
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->Set("k", "v"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(client->Get("k", absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(client->Add("n", 1), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(client->Wait({"k"}, absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(client->DeleteKey("k"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(client->CompareSet("k", "", "v"),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(TcpStoreTest, ServerFreesTheHandlerOfAClientThatLeftMidGet) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  {
    ScopedFd raw = RawGreetedConnection(server->port());
    store::internal::Request get;
    get.op = store::internal::Op::kGet;
    get.key = "never";
    get.timeout = absl::InfiniteDuration();
    ASSERT_THAT(store::internal::WriteFrame(raw.get(), *store::internal::EncodeRequest(get),
                                            absl::Now() + kLong),
                IsOk());
    absl::SleepFor(absl::Milliseconds(100));
    EXPECT_EQ(server->NumConnections(), 1);
  }  // Closes the raw connection while its Get blocks forever on the server.
  const absl::Time deadline = absl::Now() + absl::Seconds(3);
  while (server->NumConnections() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(server->NumConnections(), 0);
}

// --- Malformed input ------------------------------------------------------------------------

TEST(TcpStoreTest, MalformedFramesCloseOnlyTheirConnection) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  std::unique_ptr<TcpStoreClient> bystander = ConnectTo(port);
  ASSERT_NE(bystander, nullptr);
  ASSERT_THAT(bystander->Set("before", "1"), IsOk());
  // A Get that blocks across all the abuse below must still be answered.
  std::thread blocked([&] {
    absl::StatusOr<std::string> value = bystander->Get("after", kLong);
    EXPECT_THAT(value, IsOk());
  });

  struct Case {
    std::string name;
    bool greet;
    std::string bytes;
  };
  std::string bad_timeout_get("\x03", 1);
  bad_timeout_get += std::string("\xf0\xff\xff\xff\xff\xff\xff\xff", 8);
  bad_timeout_get += std::string("\x01\x00\x00\x00k", 5);
  const std::vector<Case> cases = {
      {"oversized length", false, Frame(0xffffffffu, "")},
      {"length just over the limit", true, Frame(store::internal::kMaxFrameBytes + 1, "x")},
      {"zero length", true, Frame(0, "")},
      {"request before HELLO", false, Frame(1 + 4 + 1, std::string("\x07\x01\x00\x00\x00k", 6))},
      {"bad HELLO magic", false,
       Frame(9, std::string("\x01"
                            "HTTP"
                            "\x01\x00\x00\x00",
                            9))},
      {"unknown op", true, Frame(1, "\x42")},
      {"key length past the end", true, Frame(5, std::string("\x07\xff\xff\xff\x00", 5))},
      {"trailing bytes", true, Frame(7, std::string("\x07\x01\x00\x00\x00kk", 7))},
      {"negative timeout", true, Frame(bad_timeout_get.size(), bad_timeout_get)},
      {"HTTP request", false, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ScopedFd raw;
    if (c.greet) {
      raw = RawGreetedConnection(port);
    } else {
      absl::StatusOr<ScopedFd> fd =
          store::internal::ConnectTcp("127.0.0.1", port, absl::Now() + kLong);
      ASSERT_THAT(fd, IsOk());
      raw = *std::move(fd);
    }
    ASSERT_TRUE(raw.valid());
    ASSERT_THAT(store::internal::WriteFull(raw.get(), c.bytes, absl::Now() + kLong), IsOk());
    EXPECT_TRUE(ClosedByPeer(raw.get(), absl::Seconds(3)));
    absl::StatusOr<int64_t> n = bystander->Add("survived", 1);
    EXPECT_THAT(n, IsOk());
  }

  // A frame cut short by the peer closing: the server just drops it.
  {
    ScopedFd raw = RawGreetedConnection(port);
    ASSERT_THAT(
        store::internal::WriteFull(raw.get(), Frame(100, "\x02partial"), absl::Now() + kLong),
        IsOk());
  }
  ASSERT_THAT(bystander->Set("after", "2"), IsOk());
  blocked.join();
  absl::StatusOr<std::string> survived = bystander->Get("survived", kLong);
  ASSERT_THAT(survived, IsOk());
  EXPECT_EQ(*survived, absl::StrCat(cases.size()));
  // A fresh client still gets in.
  std::unique_ptr<TcpStoreClient> fresh = ConnectTo(port);
  ASSERT_NE(fresh, nullptr);
  EXPECT_THAT(fresh->Get("before", kLong), IsOk());
}

TEST(TcpStoreTest, OversizedRequestsFailLocallyAndKeepTheClientUsable) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<TcpStoreClient> client = ConnectTo(server->port());
  ASSERT_NE(client, nullptr);
  const std::string huge_key(store::internal::kMaxKeyBytes + 1, 'k');
  EXPECT_THAT(client->Set(huge_key, "v"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key")));
  EXPECT_THAT(client->Set("k", std::string(store::internal::kMaxFrameBytes, 'v')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("frame limit")));
  EXPECT_THAT(client->Set("k", "small"), IsOk());
  EXPECT_THAT(client->Get("k", kLong), IsOk());
}

// --- Concurrency ----------------------------------------------------------------------------

TEST(TcpStoreTest, ABlockedGetDoesNotHoldUpOtherThreadsOfTheSameClient) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<TcpStoreClient> client = ConnectTo(server->port());
  ASSERT_NE(client, nullptr);
  std::thread getter([&] {
    absl::StatusOr<std::string> value = client->Get("go", kLong);
    EXPECT_THAT(value, IsOk());
  });
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->Set("go", "now"), IsOk());
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  getter.join();
}

TEST(TcpStoreTest, ManyClientsShareOneServer) {
  std::unique_ptr<TcpStoreServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  constexpr int kClients = 16;
  std::vector<std::unique_ptr<TcpStoreClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(ConnectTo(server->port()));
    ASSERT_NE(clients.back(), nullptr);
  }
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      Store& store = *clients[i];
      if (!store.Set(absl::StrCat("c", i), "x").ok()) ++failures;
      std::vector<std::string> all;
      for (int j = 0; j < kClients; ++j) all.push_back(absl::StrCat("c", j));
      if (!store.Wait(all, kLong).ok()) ++failures;
      for (int k = 0; k < 50; ++k) {
        if (!store.Add("sum", 1).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  absl::StatusOr<std::string> sum = clients[0]->Get("sum", kLong);
  ASSERT_THAT(sum, IsOk());
  EXPECT_EQ(*sum, absl::StrCat(kClients * 50));
  clients.clear();
  server->Shutdown();
  EXPECT_EQ(server->NumConnections(), 0);
}

}  // namespace
}  // namespace dstrain::store
