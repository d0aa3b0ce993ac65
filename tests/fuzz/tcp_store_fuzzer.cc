// Fuzzes the TCP store protocol (worker/store/tcp_store_protocol.h, socket_io.h) that a
// standalone-mode server and its clients speak: what a server decodes from any peer, what a client
// decodes from its server, and the framing of a byte stream. The first input byte picks one:
//   0: the rest is a byte stream on a connection: ReadFrame splits it into frames (socketpair),
//      each decoded as a request, as the server does;
//   1: the rest is one request payload (DecodeRequest);
//   2..9: the rest is a response payload to op (byte - 2), 0 and 8 being no op (DecodeResponse).
// Properties besides "no crash": the grammar has one encoding per message, so whatever decodes
// encodes back to the same bytes.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/store/socket_io.h"
#include "worker/store/tcp_store_protocol.h"

namespace {

namespace internal = dstrain::store::internal;

void Fail(const char* what, absl::string_view payload) {
  std::fprintf(stderr, "%s (%zu bytes)\n", what, payload.size());
  std::abort();
}

void CheckRequest(absl::string_view payload) {
  absl::StatusOr<internal::Request> request = internal::DecodeRequest(payload);
  if (!request.ok()) return;
  absl::StatusOr<std::string> again = internal::EncodeRequest(*request);
  if (!again.ok() || *again != payload) Fail("a decoded request encodes differently", payload);
}

void CheckResponse(internal::Op op, absl::string_view payload) {
  absl::StatusOr<internal::Response> response = internal::DecodeResponse(op, payload);
  if (!response.ok()) return;
  if (internal::EncodeResponse(op, *response) != payload) {
    Fail("a decoded response encodes differently", payload);
  }
}

// The server's reading loop over one connection that sends `stream` and closes.
void ReadStream(absl::string_view stream) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  internal::ScopedFd reader(fds[0]);
  {
    internal::ScopedFd writer(fds[1]);
    // The socket buffer holds far more than libFuzzer's longest input.
    if (!internal::WriteFull(writer.get(), stream, absl::Now() + absl::Seconds(1)).ok()) return;
  }
  std::string payload;
  while (true) {
    absl::StatusOr<bool> frame = internal::ReadFrame(
        reader.get(), &payload, absl::Now() + absl::Seconds(1), absl::Seconds(1));
    if (!frame.ok() || !*frame) return;
    CheckRequest(payload);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const uint8_t mode = data[0] % 10;
  if (mode == 0) {
    ReadStream(rest);
  } else if (mode == 1) {
    CheckRequest(rest);
  } else {
    CheckResponse(static_cast<internal::Op>(mode - 2), rest);
  }
  return 0;
}
