// POSIX TCP plumbing for TcpStore: an owning file descriptor, connect and listen by host name,
// and whole-buffer and whole-frame I/O that gives up at a deadline.
//
// All I/O is non-blocking underneath (poll() for readiness, then MSG_DONTWAIT), so every call
// returns by its deadline whatever the peer does, and sends use MSG_NOSIGNAL, so a closed peer is
// an error status rather than SIGPIPE. Errors: a closed, reset or unreachable peer is
// kUnavailable; a passed deadline is kDeadlineExceeded; a frame header out of bounds is
// kInvalidArgument. Messages include the system error text.
//
// Thread-safety: the functions are thread-safe; one descriptor must not be read (or written) by
// two threads at once. ScopedFd is not thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dstrain::store::internal {

// Owns a file descriptor and closes it on destruction. Move-only.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// One attempt to open a TCP connection to host:port (a name or a numeric IPv4/IPv6 address),
// trying each resolved address until one connects or `deadline` passes. The socket has
// TCP_NODELAY and close-on-exec set. Every failure is kUnavailable naming host:port and the cause.
absl::StatusOr<ScopedFd> ConnectTcp(const std::string& host, int port, absl::Time deadline);

// Binds and listens on host:port (port 0 picks a free one; an empty host means every interface)
// and stores the bound port in *bound_port. kInvalidArgument for a port outside [0, 65535],
// kUnavailable when the address cannot be resolved or bound.
absl::StatusOr<ScopedFd> ListenTcp(const std::string& host, int port, int* bound_port);

// "address:port" of the peer of a connected socket, or "unknown peer".
std::string PeerName(int fd);

// Waits until `fd` is readable (or closed, or in error). OK when so, kDeadlineExceeded when
// `deadline` passes first.
absl::Status WaitReadable(int fd, absl::Time deadline);

// True when the peer of a connected socket has closed or reset the connection (checked without
// blocking or consuming data).
bool PeerHungUp(int fd);

// Sends all of `data`, or fails.
absl::Status WriteFull(int fd, absl::string_view data, absl::Time deadline);

// Reads exactly `n` bytes into `buf`, or fails (kUnavailable on end of stream).
absl::Status ReadFull(int fd, char* buf, size_t n, absl::Time deadline);

// Sends a frame: the 4-byte little-endian length of `payload`, then `payload`
// (tcp_store_protocol.h). REQUIRES: 0 < payload.size() <= kMaxFrameBytes.
absl::Status WriteFrame(int fd, absl::string_view payload, absl::Time deadline);

// Reads one frame into *payload. Waits until `idle_deadline` for the frame to start; once it has,
// the whole frame must arrive within `body_timeout`. Returns false, having read nothing, when the
// peer closed the connection cleanly between frames. A length of 0 or above kMaxFrameBytes is
// kInvalidArgument (the connection is then out of step and must be closed).
absl::StatusOr<bool> ReadFrame(int fd, std::string* payload, absl::Time idle_deadline,
                               absl::Duration body_timeout);

}  // namespace dstrain::store::internal
