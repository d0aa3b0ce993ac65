// TcpStoreServer: one accept thread plus one thread per connection, all state in an
// InMemoryStore.
//
// Lifetimes: a connection's descriptor is closed only after its thread has been joined, by the
// accept loop (when the thread reports itself finished through the self-pipe) or by Shutdown();
// so Shutdown() may shutdown(2) any descriptor in the table without racing a close and a reuse.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_macros.h"
#include "worker/store/socket_io.h"
#include "worker/store/tcp_store.h"
#include "worker/store/tcp_store_protocol.h"

namespace dstrain::store {

using store::internal::Op;
using store::internal::Request;
using store::internal::Response;
using store::internal::ScopedFd;

namespace {

// How often a blocked Get/Wait checks whether its client is still connected.
constexpr absl::Duration kHangupPollInterval = absl::Milliseconds(100);
// Once a frame has started, the rest of it must arrive within this.
constexpr absl::Duration kFrameBodyTimeout = absl::Seconds(30);
// An answer must be taken by the client within this.
constexpr absl::Duration kWriteTimeout = absl::Seconds(30);

void LogLine(absl::string_view line) {
  std::fprintf(stderr, "[dstrain tcp_store_server] %.*s\n", static_cast<int>(line.size()),
               line.data());
}

}  // namespace

struct TcpStoreServer::Connection {
  ScopedFd fd;  // Immutable while `thread` runs.
  std::string peer;
  std::thread thread;
  bool done = false;  // Guarded by TcpStoreServer::mu_.
};

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(absl::string_view host,
                                                                      int port) {
  int bound_port = 0;
  DT_ASSIGN_OR_RETURN(ScopedFd listen_fd,
                      store::internal::ListenTcp(std::string(host), port, &bound_port));
  // Non-blocking, so that a connection reset between poll() and accept() cannot stall the loop.
  int flags = ::fcntl(listen_fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(listen_fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::InternalError(absl::StrCat("fcntl on the listening socket: errno ", errno));
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0) {
    return absl::InternalError(absl::StrCat("pipe2: errno ", errno));
  }
  std::unique_ptr<TcpStoreServer> server(new TcpStoreServer(
      std::move(listen_fd), ScopedFd(pipe_fds[0]), ScopedFd(pipe_fds[1]), bound_port));
  // std::thread reports failure by exception (the one third-party exception this code meets).
  try {
    server->accept_thread_ = std::thread(&TcpStoreServer::AcceptLoop, server.get());
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot start the accept thread: ", e.what()));
  }
  return server;
}

TcpStoreServer::TcpStoreServer(ScopedFd listen_fd, ScopedFd wake_read, ScopedFd wake_write,
                               int port)
    : listen_fd_(std::move(listen_fd)),
      wake_read_(std::move(wake_read)),
      wake_write_(std::move(wake_write)),
      port_(port) {}

TcpStoreServer::~TcpStoreServer() { Shutdown(); }

void TcpStoreServer::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;

  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  if (accept_thread_.joinable()) accept_thread_.join();
  // No connection is added from here on. Wake every handler: those blocked in the store through
  // Close(), those blocked on their socket through shutdown(2).
  store_.Close();
  std::vector<std::unique_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, connection] : connections_) {
      ::shutdown(connection->fd.get(), SHUT_RDWR);
      connections.push_back(std::move(connection));
    }
    connections_.clear();
  }
  for (std::unique_ptr<Connection>& connection : connections) connection->thread.join();
}

int TcpStoreServer::NumConnections() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(connections_.size());
}

bool TcpStoreServer::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void TcpStoreServer::Wake() {
  char byte = 0;
  // A full pipe already guarantees a wake-up, so EAGAIN is fine to ignore.
  while (::write(wake_write_.get(), &byte, 1) < 0 && errno == EINTR) {
  }
}

void TcpStoreServer::AcceptLoop() {
  while (true) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno != EINTR) {
      LogLine(absl::StrCat("poll failed (errno ", errno, "); retrying"));
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    if (n <= 0) continue;
    if (fds[1].revents != 0) {
      char buf[256];
      while (::read(wake_read_.get(), buf, sizeof(buf)) > 0) {
      }
    }
    if (stopping()) return;
    ReapFinished();
    if (fds[0].revents != 0) Accept();
  }
}

void TcpStoreServer::Accept() {
  int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) {
      return;
    }
    LogLine(absl::StrCat("accept failed (errno ", errno, "); backing off"));
    // Out of descriptors or memory: back off rather than spin on a listener that stays readable.
    absl::SleepFor(absl::Milliseconds(50));
    return;
  }
  auto connection = std::make_unique<Connection>();
  connection->fd.reset(fd);
  connection->peer = store::internal::PeerName(fd);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  absl::MutexLock lock(&mu_);
  if (connections_.size() >= static_cast<size_t>(kMaxConnections)) {
    LogLine(absl::StrCat("refusing connection from ", connection->peer, ": already ",
                         kMaxConnections, " connections"));
    return;  // Closes the descriptor.
  }
  Connection* raw = connection.get();
  try {
    raw->thread = std::thread(&TcpStoreServer::Serve, this, raw);
  } catch (const std::system_error& e) {
    LogLine(absl::StrCat("refusing connection from ", raw->peer,
                         ": cannot start a thread: ", e.what()));
    return;  // Closes the descriptor.
  }
  connections_[next_connection_id_++] = std::move(connection);
}

void TcpStoreServer::ReapFinished() {
  std::vector<std::unique_ptr<Connection>> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->second->done) {
        finished.push_back(std::move(it->second));
        connections_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (std::unique_ptr<Connection>& connection : finished) connection->thread.join();
}

void TcpStoreServer::Serve(Connection* connection) {
  const int fd = connection->fd.get();
  const std::string& peer = connection->peer;
  bool greeted = false;
  std::string payload;
  while (true) {
    absl::StatusOr<bool> got =
        store::internal::ReadFrame(fd, &payload, absl::InfiniteFuture(), kFrameBodyTimeout);
    if (!got.ok()) {
      if (!stopping()) {
        LogLine(absl::StrCat("closing connection from ", peer, ": ",
                             absl::IsInvalidArgument(got.status()) ? "malformed frame: " : "",
                             got.status().message()));
      }
      break;
    }
    if (!*got) break;  // The client closed the connection.
    absl::StatusOr<Request> request = store::internal::DecodeRequest(payload);
    if (!request.ok()) {
      LogLine(absl::StrCat("closing connection from ", peer,
                           ": malformed request: ", request.status().message()));
      break;
    }
    Response response;
    bool close_after = false;
    if (request->op == Op::kHello) {
      if (request->magic != store::internal::kProtocolMagic) {
        LogLine(
            absl::StrCat("closing connection from ", peer, ": bad HELLO magic ", request->magic));
        break;
      }
      if (request->version != store::internal::kProtocolVersion) {
        response.status = absl::FailedPreconditionError(
            absl::StrCat("store server speaks protocol version ", store::internal::kProtocolVersion,
                         ", client ", request->version));
        LogLine(absl::StrCat("closing connection from ", peer, ": ", response.status.message()));
        close_after = true;
      }
      greeted = true;
    } else if (!greeted) {
      LogLine(absl::StrCat("closing connection from ", peer, ": first request is ",
                           store::internal::OpName(request->op), ", not HELLO"));
      break;
    } else {
      response = Execute(*request, fd);
    }
    absl::Status written = store::internal::WriteFrame(
        fd, store::internal::EncodeResponse(request->op, response), absl::Now() + kWriteTimeout);
    if (!written.ok()) {
      if (!stopping() && !absl::IsCancelled(response.status)) {
        LogLine(absl::StrCat("closing connection from ", peer, ": ", written.message()));
      }
      break;
    }
    if (close_after) break;
  }
  {
    absl::MutexLock lock(&mu_);
    connection->done = true;
  }
  Wake();
}

Response TcpStoreServer::Execute(const Request& request, int fd) {
  Response r;
  auto client_gone = [fd] { return store::internal::PeerHungUp(fd); };
  switch (request.op) {
    case Op::kSet:
      r.status = store_.Set(request.key, request.value);
      break;
    case Op::kGet: {
      absl::StatusOr<std::string> value =
          store_.GetOrCancel(request.key, request.timeout, client_gone, kHangupPollInterval);
      if (value.ok()) {
        r.value = *std::move(value);
      } else {
        r.status = value.status();
      }
      break;
    }
    case Op::kAdd: {
      absl::StatusOr<int64_t> sum = store_.Add(request.key, request.delta);
      if (sum.ok()) {
        r.number = *sum;
      } else {
        r.status = sum.status();
      }
      break;
    }
    case Op::kCompareSet: {
      absl::StatusOr<std::string> value =
          store_.CompareSet(request.key, request.expected, request.value);
      if (value.ok()) {
        r.value = *std::move(value);
      } else {
        r.status = value.status();
      }
      break;
    }
    case Op::kWait:
      r.status =
          store_.WaitOrCancel(request.keys, request.timeout, client_gone, kHangupPollInterval);
      break;
    case Op::kDeleteKey: {
      absl::StatusOr<bool> existed = store_.DeleteKey(request.key);
      if (existed.ok()) {
        r.existed = *existed;
      } else {
        r.status = existed.status();
      }
      break;
    }
    case Op::kHello:
      break;
  }
  if (absl::IsUnavailable(r.status)) {
    r.status = absl::UnavailableError(
        absl::StrCat("the store server on port ", port_, " is shutting down"));
  }
  return r;
}

}  // namespace dstrain::store
