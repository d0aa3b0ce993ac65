// TcpStoreClient: a pool of connections, one request/answer exchange per call on a connection
// taken from the pool. A connection whose exchange failed in any way is dropped, never reused,
// so a late answer can never be read as the answer to a later request.
#include <algorithm>
#include <memory>
#include <string>
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

// Bounds on one connection attempt (a silent host must not eat the whole connect timeout, and a
// zero connect timeout still gets a real attempt).
constexpr absl::Duration kMinAttemptTimeout = absl::Seconds(1);
constexpr absl::Duration kMaxAttemptTimeout = absl::Seconds(5);
// The server must answer HELLO within this.
constexpr absl::Duration kHelloTimeout = absl::Seconds(5);
// Once an answer has started, the rest of it must arrive within this.
constexpr absl::Duration kReplyBodyTimeout = absl::Seconds(30);
constexpr absl::Duration kInitialBackoff = absl::Milliseconds(10);
constexpr absl::Duration kMaxBackoff = absl::Seconds(1);
// Idle connections kept for reuse; more are closed when returned.
constexpr size_t kMaxIdleConnections = 8;

absl::Duration ReplyTimeoutFor(absl::Duration op_timeout) {
  if (op_timeout == absl::InfiniteDuration()) return absl::InfiniteDuration();
  return std::max(op_timeout, absl::ZeroDuration()) + TcpStoreClient::kReplyGrace;
}

}  // namespace

TcpStoreClient::TcpStoreClient(std::string host, int port) : host_(std::move(host)), port_(port) {}

std::string TcpStoreClient::Where() const { return absl::StrCat(host_, ":", port_); }

absl::StatusOr<std::unique_ptr<TcpStoreClient>> TcpStoreClient::Connect(
    absl::string_view host, int port, absl::Duration connect_timeout) {
  if (port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("store server port ", port, " is outside [1, 65535]"));
  }
  std::unique_ptr<TcpStoreClient> client(new TcpStoreClient(std::string(host), port));
  const absl::Time start = absl::Now();
  const absl::Time deadline = connect_timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : start + std::max(connect_timeout, absl::ZeroDuration());
  absl::Duration backoff = kInitialBackoff;
  absl::Status last;
  int attempts = 0;
  while (true) {
    ++attempts;
    absl::Time now = absl::Now();
    absl::Duration attempt = std::clamp(deadline - now, kMinAttemptTimeout, kMaxAttemptTimeout);
    absl::StatusOr<ScopedFd> fd = client->OpenConnection(now + attempt);
    if (fd.ok()) {
      client->ReturnConnection(*std::move(fd));
      return client;
    }
    last = fd.status();
    // Only "not there (yet)" is worth retrying; a peer that is not a store server will not
    // become one.
    if (!absl::IsUnavailable(last) && !absl::IsDeadlineExceeded(last)) return last;
    now = absl::Now();
    if (now >= deadline) break;
    absl::SleepFor(std::min(backoff, deadline - now));
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
  return absl::UnavailableError(absl::StrCat("cannot reach the store server at ", client->Where(),
                                             " within ", absl::FormatDuration(connect_timeout),
                                             " (", attempts, " attempts): ", last.message()));
}

absl::StatusOr<ScopedFd> TcpStoreClient::OpenConnection(absl::Time connect_deadline) const {
  DT_ASSIGN_OR_RETURN(ScopedFd fd, store::internal::ConnectTcp(host_, port_, connect_deadline));
  Request hello;
  hello.op = Op::kHello;
  DT_ASSIGN_OR_RETURN(std::string payload, store::internal::EncodeRequest(hello));
  absl::Time deadline = absl::Now() + kHelloTimeout;
  if (absl::Status s = store::internal::WriteFrame(fd.get(), payload, deadline); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("HELLO to ", Where(), ": ", s.message()));
  }
  std::string reply;
  absl::StatusOr<bool> got = store::internal::ReadFrame(fd.get(), &reply, deadline, kHelloTimeout);
  if (!got.ok() && !absl::IsInvalidArgument(got.status())) {
    return absl::UnavailableError(absl::StrCat("HELLO to ", Where(), ": ", got.status().message()));
  }
  if (got.ok() && !*got) {
    return absl::UnavailableError(
        absl::StrCat("HELLO to ", Where(), ": the server closed the connection"));
  }
  absl::StatusOr<Response> response =
      got.ok() ? store::internal::DecodeResponse(Op::kHello, reply) : got.status();
  if (!response.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the peer at ", Where(), " is not a dstrain store server: ", response.status().message()));
  }
  if (!response->status.ok()) return response->status;
  return fd;
}

absl::StatusOr<ScopedFd> TcpStoreClient::TakeConnection() {
  {
    absl::MutexLock lock(&mu_);
    while (!idle_.empty()) {
      ScopedFd fd = std::move(idle_.back());
      idle_.pop_back();
      // A server that went away since the last call: drop it now rather than fail the request.
      if (!store::internal::PeerHungUp(fd.get())) return fd;
    }
  }
  absl::Time now = absl::Now();
  absl::StatusOr<ScopedFd> fd = OpenConnection(now + kMaxAttemptTimeout);
  if (!fd.ok() && !absl::IsFailedPrecondition(fd.status())) {
    return absl::UnavailableError(fd.status().message());
  }
  return fd;
}

void TcpStoreClient::ReturnConnection(ScopedFd fd) {
  absl::MutexLock lock(&mu_);
  if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(fd));
}

absl::StatusOr<Response> TcpStoreClient::Call(const Request& request,
                                              absl::Duration reply_timeout) {
  DT_ASSIGN_OR_RETURN(std::string payload, store::internal::EncodeRequest(request));
  DT_ASSIGN_OR_RETURN(ScopedFd fd, TakeConnection());
  const absl::string_view op = store::internal::OpName(request.op);
  const absl::Time deadline = reply_timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + reply_timeout;
  if (absl::Status s = store::internal::WriteFrame(fd.get(), payload, deadline); !s.ok()) {
    return absl::UnavailableError(
        absl::StrCat(op, " to the store server at ", Where(), ": ", s.message()));
  }
  std::string reply;
  absl::StatusOr<bool> got =
      store::internal::ReadFrame(fd.get(), &reply, deadline, kReplyBodyTimeout);
  if (!got.ok()) {
    if (absl::IsDeadlineExceeded(got.status())) {
      return absl::UnavailableError(absl::StrCat("no answer to ", op, " from the store server at ",
                                                 Where(), " within ",
                                                 absl::FormatDuration(reply_timeout)));
    }
    if (absl::IsInvalidArgument(got.status())) {
      return absl::InternalError(absl::StrCat("malformed answer to ", op,
                                              " from the store server at ", Where(), ": ",
                                              got.status().message()));
    }
    return absl::UnavailableError(
        absl::StrCat(op, " to the store server at ", Where(), ": ", got.status().message()));
  }
  if (!*got) {
    return absl::UnavailableError(absl::StrCat("the store server at ", Where(),
                                               " closed the connection before answering ", op));
  }
  absl::StatusOr<Response> response = store::internal::DecodeResponse(request.op, reply);
  if (!response.ok()) {
    return absl::InternalError(absl::StrCat("malformed answer to ", op,
                                            " from the store server at ", Where(), ": ",
                                            response.status().message()));
  }
  ReturnConnection(std::move(fd));
  return response;
}

absl::Status TcpStoreClient::Set(absl::string_view key, absl::string_view value) {
  Request r;
  r.op = Op::kSet;
  r.key = std::string(key);
  r.value = std::string(value);
  DT_ASSIGN_OR_RETURN(Response response, Call(r, kRequestTimeout));
  return response.status;
}

absl::StatusOr<std::string> TcpStoreClient::Get(absl::string_view key, absl::Duration timeout) {
  Request r;
  r.op = Op::kGet;
  r.key = std::string(key);
  r.timeout = timeout;
  DT_ASSIGN_OR_RETURN(Response response, Call(r, ReplyTimeoutFor(timeout)));
  DT_RETURN_IF_ERROR(response.status);
  return std::move(response.value);
}

absl::StatusOr<int64_t> TcpStoreClient::Add(absl::string_view key, int64_t delta) {
  Request r;
  r.op = Op::kAdd;
  r.key = std::string(key);
  r.delta = delta;
  DT_ASSIGN_OR_RETURN(Response response, Call(r, kRequestTimeout));
  DT_RETURN_IF_ERROR(response.status);
  return response.number;
}

absl::StatusOr<std::string> TcpStoreClient::CompareSet(absl::string_view key,
                                                       absl::string_view expected,
                                                       absl::string_view desired) {
  Request r;
  r.op = Op::kCompareSet;
  r.key = std::string(key);
  r.expected = std::string(expected);
  r.value = std::string(desired);
  DT_ASSIGN_OR_RETURN(Response response, Call(r, kRequestTimeout));
  DT_RETURN_IF_ERROR(response.status);
  return std::move(response.value);
}

absl::Status TcpStoreClient::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  Request r;
  r.op = Op::kWait;
  r.keys = keys;
  r.timeout = timeout;
  DT_ASSIGN_OR_RETURN(Response response, Call(r, ReplyTimeoutFor(timeout)));
  return response.status;
}

absl::StatusOr<bool> TcpStoreClient::DeleteKey(absl::string_view key) {
  Request r;
  r.op = Op::kDeleteKey;
  r.key = std::string(key);
  DT_ASSIGN_OR_RETURN(Response response, Call(r, kRequestTimeout));
  DT_RETURN_IF_ERROR(response.status);
  return response.existed;
}

}  // namespace dstrain::store
