// POSIX TCP plumbing for TcpStore. Sockets stay non-blocking; every wait is a poll() bounded by
// the caller's deadline, so nothing here can block past it.
#include "worker/store/socket_io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_macros.h"
#include "worker/store/tcp_store_protocol.h"

namespace dstrain::store::internal {
namespace {

std::string ErrnoText(int err) {
  char buf[256];
  // GNU strerror_r returns the message (possibly not in buf).
  return std::string(strerror_r(err, buf, sizeof(buf)));
}

absl::Status ErrnoUnavailable(absl::string_view what, int err) {
  return absl::UnavailableError(absl::StrCat(what, ": ", ErrnoText(err)));
}

// Milliseconds for poll() until `deadline`: -1 for none, rounded up so poll never returns early.
int PollTimeoutMs(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)));
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// Polls `fd` for `events` until `deadline`. OK when any event (including an error or hang-up)
// is reported, kDeadlineExceeded otherwise.
absl::Status PollUntil(int fd, short events, absl::Time deadline, absl::string_view what) {
  while (true) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, PollTimeoutMs(deadline));
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) return ErrnoUnavailable(absl::StrCat("poll for ", what), errno);
    if (n == 0 && absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("timed out in ", what));
    }
  }
}

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const { ::freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

absl::StatusOr<AddrInfoPtr> Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  std::string service = absl::StrCat(port);
  addrinfo* result = nullptr;
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &result);
  if (rc != 0) {
    std::string cause = rc == EAI_SYSTEM ? ErrnoText(errno) : ::gai_strerror(rc);
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host, ": ", cause));
  }
  return AddrInfoPtr(result);
}

std::string AddressToString(const sockaddr* addr) {
  char text[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    port = ntohs(in->sin_port);
    return absl::StrCat(text, ":", port);
  }
  if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    port = ntohs(in6->sin6_port);
    return absl::StrCat("[", text, "]:", port);
  }
  return "unknown address";
}

// One non-blocking connect to `ai`, waiting for it until `deadline`.
absl::StatusOr<ScopedFd> ConnectOne(const addrinfo* ai, absl::Time deadline) {
  ScopedFd fd(
      ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
  if (!fd.valid()) return ErrnoUnavailable("socket", errno);
  int rc;
  do {
    rc = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EINPROGRESS) return ErrnoUnavailable("connect", errno);
  if (rc < 0) {
    DT_RETURN_IF_ERROR(PollUntil(fd.get(), POLLOUT, deadline, "connect"));
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err != 0) return ErrnoUnavailable("connect", err);
  }
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

void ScopedFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

absl::StatusOr<ScopedFd> ConnectTcp(const std::string& host, int port, absl::Time deadline) {
  std::string where = absl::StrCat(host, ":", port);
  if (port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in ", where));
  }
  absl::StatusOr<AddrInfoPtr> addrs = Resolve(host, port, /*passive=*/false);
  if (!addrs.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", where, ": ", addrs.status().message()));
  }
  absl::Status last = absl::UnavailableError("no address");
  for (const addrinfo* ai = addrs->get(); ai != nullptr; ai = ai->ai_next) {
    absl::StatusOr<ScopedFd> fd = ConnectOne(ai, deadline);
    if (fd.ok()) return fd;
    last = fd.status();
  }
  return absl::UnavailableError(absl::StrCat("cannot connect to ", where, ": ", last.message()));
}

absl::StatusOr<ScopedFd> ListenTcp(const std::string& host, int port, int* bound_port) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", port, " is outside [0, 65535]"));
  }
  DT_ASSIGN_OR_RETURN(AddrInfoPtr addrs, Resolve(host, port, /*passive=*/true));
  absl::Status last = absl::UnavailableError("no address");
  for (const addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
    ScopedFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      last = ErrnoUnavailable("socket", errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
      last = ErrnoUnavailable(absl::StrCat("bind ", AddressToString(ai->ai_addr)), errno);
      continue;
    }
    if (::listen(fd.get(), SOMAXCONN) < 0) {
      last = ErrnoUnavailable("listen", errno);
      continue;
    }
    sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
      last = ErrnoUnavailable("getsockname", errno);
      continue;
    }
    *bound_port = addr.ss_family == AF_INET6
                      ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                      : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    return fd;
  }
  return absl::UnavailableError(
      absl::StrCat("cannot listen on ", host, ":", port, ": ", last.message()));
}

std::string PeerName(int fd) {
  sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) return "unknown peer";
  return AddressToString(reinterpret_cast<sockaddr*>(&addr));
}

absl::Status WaitReadable(int fd, absl::Time deadline) {
  return PollUntil(fd, POLLIN, deadline, "read");
}

bool PeerHungUp(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  int n = ::poll(&p, 1, 0);
  return n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

absl::Status WriteFull(int fd, absl::string_view data, absl::Time deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      DT_RETURN_IF_ERROR(PollUntil(fd, POLLOUT, deadline, "write"));
      continue;
    }
    return ErrnoUnavailable("send", n < 0 ? errno : EPIPE);
  }
  return absl::OkStatus();
}

absl::Status ReadFull(int fd, char* buf, size_t n, absl::Time deadline) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, buf + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      return absl::UnavailableError(
          absl::StrCat("connection closed by peer after ", got, " of ", n, " bytes"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      DT_RETURN_IF_ERROR(PollUntil(fd, POLLIN, deadline, "read"));
      continue;
    }
    return ErrnoUnavailable("recv", errno);
  }
  return absl::OkStatus();
}

absl::Status WriteFrame(int fd, absl::string_view payload, absl::Time deadline) {
  DT_CHECK(!payload.empty() && payload.size() <= kMaxFrameBytes);
  uint32_t len = static_cast<uint32_t>(payload.size());
  char header[kFrameHeaderBytes];
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) header[i] = static_cast<char>(len >> (8 * i));
  // One buffer, so that a small frame leaves in one segment (TCP_NODELAY is on).
  std::string frame;
  frame.reserve(kFrameHeaderBytes + payload.size());
  frame.append(header, kFrameHeaderBytes);
  frame.append(payload.data(), payload.size());
  return WriteFull(fd, frame, deadline);
}

absl::StatusOr<bool> ReadFrame(int fd, std::string* payload, absl::Time idle_deadline,
                               absl::Duration body_timeout) {
  char header[kFrameHeaderBytes];
  size_t got = 0;
  // The first byte decides between a clean close and a frame.
  while (got == 0) {
    ssize_t r = ::recv(fd, header, sizeof(header), MSG_DONTWAIT);
    if (r > 0) {
      got = static_cast<size_t>(r);
    } else if (r == 0) {
      return false;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      DT_RETURN_IF_ERROR(PollUntil(fd, POLLIN, idle_deadline, "read"));
    } else if (errno != EINTR) {
      return ErrnoUnavailable("recv", errno);
    }
  }
  absl::Time deadline = absl::Now() + body_timeout;
  DT_RETURN_IF_ERROR(ReadFull(fd, header + got, sizeof(header) - got, deadline));
  uint32_t len = 0;
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) {
    len |= static_cast<uint32_t>(static_cast<uint8_t>(header[i])) << (8 * i);
  }
  if (len == 0 || len > kMaxFrameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame length ", len, " outside [1, ", kMaxFrameBytes, "]"));
  }
  payload->resize(len);
  DT_RETURN_IF_ERROR(ReadFull(fd, payload->data(), len, deadline));
  return true;
}

}  // namespace dstrain::store::internal
