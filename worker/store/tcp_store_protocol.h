// The TcpStore wire protocol: message encoding and validation, with no sockets in sight (the
// socket side is socket_io.h; the client and server are tcp_store.h).
//
// NOTE [TcpStore wire protocol, version 1]
// A connection carries frames. A frame is a 4-byte little-endian unsigned payload length N
// (1 <= N <= kMaxFrameBytes) followed by N payload bytes. The client sends one request frame and
// reads one response frame before it sends the next (no pipelining); the server answers requests
// in order. All integers are little-endian; `bytes` is a u32 length followed by that many bytes;
// `timeout` is an i64 count of microseconds, -1 meaning no timeout (other negatives are invalid).
//
//   request  = u8 op, fields of that op
//     0x01 HELLO        u32 magic (0x53545344, "DSTS" on the wire), u32 version (1)
//     0x02 SET          bytes key, bytes value
//     0x03 GET          timeout, bytes key
//     0x04 ADD          bytes key, i64 delta
//     0x05 COMPARE_SET  bytes key, bytes expected, bytes desired
//     0x06 WAIT         timeout, u32 count (<= kMaxWaitKeys), count x bytes key
//     0x07 DELETE_KEY   bytes key
//   response = u8 code (absl::StatusCode, 0..16), then
//     code != 0: bytes message
//     code == 0: HELLO, SET, WAIT: nothing; GET, COMPARE_SET: bytes value; ADD: i64 result;
//                DELETE_KEY: u8 existed (0 or 1)
//
// The first request on a connection must be HELLO; a server that does not speak the version
// answers kFailedPrecondition and closes. Keys are at most kMaxKeyBytes. A payload that does not
// parse exactly (unknown op, short or trailing bytes, a length past the end, a bad timeout, an
// oversized key) is malformed: the server logs it and closes that connection without answering.
// GET and WAIT block on the server for at most their timeout; the client waits for the answer a
// little longer (tcp_store.h) and treats silence as a dead server.
//
// Thread-safety: everything here is a pure function of its arguments.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dstrain::store::internal {

inline constexpr uint32_t kProtocolMagic = 0x53545344;  // "DSTS" in little-endian byte order.
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint32_t kMaxFrameBytes = 64u << 20;  // 64 MiB.
inline constexpr uint32_t kMaxKeyBytes = 64u << 10;    // 64 KiB.
inline constexpr uint32_t kMaxWaitKeys = 1u << 16;
inline constexpr size_t kFrameHeaderBytes = 4;

enum class Op : uint8_t {
  kHello = 0x01,
  kSet = 0x02,
  kGet = 0x03,
  kAdd = 0x04,
  kCompareSet = 0x05,
  kWait = 0x06,
  kDeleteKey = 0x07,
};

absl::string_view OpName(Op op);

// One request. Which fields mean something depends on `op` (see the NOTE above): `key` for all
// but HELLO and WAIT, `value` for SET (and the desired value of COMPARE_SET), `expected` for
// COMPARE_SET, `delta` for ADD, `keys` and `timeout` for WAIT, `timeout` for GET, `magic` and
// `version` for HELLO.
struct Request {
  Op op = Op::kHello;
  std::string key;
  std::string value;
  std::string expected;
  int64_t delta = 0;
  std::vector<std::string> keys;
  absl::Duration timeout = absl::ZeroDuration();
  uint32_t magic = kProtocolMagic;
  uint32_t version = kProtocolVersion;
};

// One response to a request of a known op. On error only `status` is meaningful.
struct Response {
  absl::Status status;
  std::string value;     // GET, COMPARE_SET.
  int64_t number = 0;    // ADD.
  bool existed = false;  // DELETE_KEY.
};

// Encodes a request payload (without the frame header). Returns kInvalidArgument when a key is
// longer than kMaxKeyBytes, WAIT has more than kMaxWaitKeys keys, or the payload would exceed
// kMaxFrameBytes, so that a client never sends what the server would reject.
absl::StatusOr<std::string> EncodeRequest(const Request& request);

// Parses a request payload. Returns kInvalidArgument, saying what is wrong, for anything that
// does not follow the grammar above exactly.
absl::StatusOr<Request> DecodeRequest(absl::string_view payload);

// Encodes a response payload to a request of `op`. A response that would exceed kMaxFrameBytes
// is replaced by a kResourceExhausted error response.
std::string EncodeResponse(Op op, const Response& response);

// Parses a response payload to a request of `op`. Returns kInvalidArgument for anything that does
// not follow the grammar; an error the server sent comes back as an OK StatusOr whose
// Response::status carries it.
absl::StatusOr<Response> DecodeResponse(Op op, absl::string_view payload);

// Wire form of a timeout: microseconds, -1 for absl::InfiniteDuration(), negatives clamped to 0.
int64_t TimeoutToWire(absl::Duration timeout);

}  // namespace dstrain::store::internal
