// TcpStore: the Store of standalone mode (`dstrain launch`), served over plain TCP by one process
// (rank 0 or the launcher) and reached by every rank, after c10d's TCPStore.
//
// TcpStoreServer keeps the data in an InMemoryStore and serves each client connection on its own
// thread; TcpStoreClient implements Store by sending one request per call and waiting for the
// answer. The wire protocol is the NOTE in tcp_store_protocol.h: length-prefixed binary frames,
// a HELLO with magic and version first, every GET/WAIT carrying its own timeout so that the
// server gives up on it in time.
//
// Failure behaviour:
//   - The server validates every frame; a malformed or oversized one closes that connection (with
//     a line on stderr) and nothing else. A client that disconnects while its Get/Wait blocks is
//     noticed within 100 ms and its handler freed.
//   - Shutdown() (and the destructor) stops accepting, fails every blocked Get/Wait with
//     kUnavailable, closes every connection and joins every thread.
//   - A client whose server is gone, or does not answer, gets kUnavailable, never a hang: a
//     blocking call waits for its answer at most its timeout + kReplyGrace, any other call
//     kRequestTimeout. SIGPIPE is never raised (MSG_NOSIGNAL).
//
// Thread-safety: both classes are thread-safe. The client keeps a small pool of connections and
// gives each in-flight call its own, so a Get blocked on one thread does not delay calls made on
// others (every concurrent caller costs one connection and one server thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/store/in_memory_store.h"
#include "worker/store/socket_io.h"
#include "worker/store/store.h"
#include "worker/store/tcp_store_protocol.h"

namespace dstrain::store {

class TcpStoreServer {
 public:
  // Connections beyond this many are closed on accept (with a line on stderr).
  static constexpr int kMaxConnections = 1024;

  // Listens on host:port (port 0 picks a free port, read it back with port(); an empty host
  // listens on every interface, "127.0.0.1" on loopback only) and starts serving.
  // kInvalidArgument for a bad port; kUnavailable when the address cannot be bound (for example,
  // already in use); kResourceExhausted when no thread can be started.
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(absl::string_view host, int port);

  // Shuts down (see Shutdown()).
  ~TcpStoreServer();

  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  // The port the server listens on (the one picked, when Start was given 0).
  int port() const { return port_; }

  // Stops accepting, fails blocked and later requests with kUnavailable, closes every connection
  // and joins every thread. Returns when all of that is done. Idempotent and thread-safe.
  void Shutdown();

  // Client connections open now.
  int NumConnections() const;

 private:
  struct Connection;

  TcpStoreServer(store::internal::ScopedFd listen_fd, store::internal::ScopedFd wake_read,
                 store::internal::ScopedFd wake_write, int port);

  void AcceptLoop();
  void Accept();
  void Serve(Connection* connection);
  // Runs one request (not HELLO) against the store; `fd` is the asking connection.
  store::internal::Response Execute(const store::internal::Request& request, int fd);
  // Joins and frees the connections whose threads have finished.
  void ReapFinished() ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes the accept loop (to reap a connection or to stop).
  void Wake();
  bool stopping() const ABSL_LOCKS_EXCLUDED(mu_);

  const store::internal::ScopedFd listen_fd_;
  const store::internal::ScopedFd wake_read_;   // Self-pipe, read end (accept loop).
  const store::internal::ScopedFd wake_write_;  // Self-pipe, write end (non-blocking).
  const int port_;
  InMemoryStore store_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_connection_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);

  absl::Mutex shutdown_mu_;  // Serialises Shutdown(); held while it runs.
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
  std::thread accept_thread_;
};

class TcpStoreClient final : public Store {
 public:
  // How long a Get/Wait waits for its answer beyond its own timeout before it calls the server
  // dead.
  static constexpr absl::Duration kReplyGrace = absl::Seconds(10);
  // How long any other call waits for its answer.
  static constexpr absl::Duration kRequestTimeout = absl::Seconds(30);

  // Connects to the TcpStoreServer at host:port, retrying with exponential backoff (10 ms up to
  // 1 s between attempts) until `connect_timeout` passes, because ranks usually start before the
  // server is up; at least one attempt is made. Returns kUnavailable naming host:port and the
  // last error when no attempt succeeded; kInvalidArgument for a bad port; kFailedPrecondition
  // when the peer answers but is not a TcpStoreServer of this protocol version.
  static absl::StatusOr<std::unique_ptr<TcpStoreClient>> Connect(absl::string_view host, int port,
                                                                 absl::Duration connect_timeout);

  ~TcpStoreClient() override = default;

  // Store. Errors the server reports come back unchanged; a transport failure is kUnavailable
  // naming the server; a key over 64 KiB or a request over the 64 MiB frame limit is
  // kInvalidArgument (nothing is sent). A failed call never leaves a connection out of step: its
  // connection is dropped and a later call opens a new one (a single attempt, no retry loop).
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<std::string> CompareSet(absl::string_view key, absl::string_view expected,
                                         absl::string_view desired) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::StatusOr<bool> DeleteKey(absl::string_view key) override;

  const std::string& host() const { return host_; }
  int port() const { return port_; }

 private:
  TcpStoreClient(std::string host, int port);

  // Connects once (bounded by `connect_deadline`) and says HELLO.
  absl::StatusOr<store::internal::ScopedFd> OpenConnection(absl::Time connect_deadline) const;
  // An idle pooled connection whose server end is still open, or a new one.
  absl::StatusOr<store::internal::ScopedFd> TakeConnection() ABSL_LOCKS_EXCLUDED(mu_);
  void ReturnConnection(store::internal::ScopedFd fd) ABSL_LOCKS_EXCLUDED(mu_);
  // Sends `request` on a connection of its own and waits up to `reply_timeout` for the answer.
  absl::StatusOr<store::internal::Response> Call(const store::internal::Request& request,
                                                 absl::Duration reply_timeout);
  std::string Where() const;

  const std::string host_;
  const int port_;
  absl::Mutex mu_;
  std::vector<store::internal::ScopedFd> idle_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dstrain::store
