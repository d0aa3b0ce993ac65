// TcpStore wire protocol: a byte writer and a bounds-checked byte reader; every read checks the
// remaining length first, so no input can make the decoder read past the payload.
#include "worker/store/tcp_store_protocol.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/status/status_macros.h"

namespace dstrain::store::internal {
namespace {

constexpr int kMaxStatusCode = static_cast<int>(absl::StatusCode::kUnauthenticated);  // 16.

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutI64(std::string* out, int64_t v) {
  uint64_t u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

void PutBytes(std::string* out, absl::string_view bytes) {
  PutU32(out, static_cast<uint32_t>(bytes.size()));
  out->append(bytes.data(), bytes.size());
}

// Reads fields off the front of a payload; every getter fails instead of reading past the end.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}

  absl::Status U8(uint8_t* v) {
    DT_RETURN_IF_ERROR(Need(1, "u8"));
    *v = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return absl::OkStatus();
  }

  absl::Status U32(uint32_t* v) {
    DT_RETURN_IF_ERROR(Need(4, "u32"));
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i)
      r |= static_cast<uint32_t>(static_cast<uint8_t>(data_[i])) << (8 * i);
    *v = r;
    data_.remove_prefix(4);
    return absl::OkStatus();
  }

  absl::Status I64(int64_t* v) {
    DT_RETURN_IF_ERROR(Need(8, "i64"));
    uint64_t r = 0;
    for (int i = 0; i < 8; ++i)
      r |= static_cast<uint64_t>(static_cast<uint8_t>(data_[i])) << (8 * i);
    *v = static_cast<int64_t>(r);
    data_.remove_prefix(8);
    return absl::OkStatus();
  }

  // A u32 length and that many bytes; the length must not exceed `max_len`.
  absl::Status Bytes(std::string* v, absl::string_view what, uint32_t max_len) {
    uint32_t len = 0;
    DT_RETURN_IF_ERROR(U32(&len));
    if (len > max_len) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " of ", len, " bytes exceeds the limit of ", max_len));
    }
    DT_RETURN_IF_ERROR(Need(len, what));
    v->assign(data_.data(), len);
    data_.remove_prefix(len);
    return absl::OkStatus();
  }

  absl::Status Timeout(absl::Duration* v) {
    int64_t us = 0;
    DT_RETURN_IF_ERROR(I64(&us));
    if (us < -1) return absl::InvalidArgumentError(absl::StrCat("negative timeout ", us, "us"));
    *v = us == -1 ? absl::InfiniteDuration() : absl::Microseconds(us);
    return absl::OkStatus();
  }

  absl::Status Done() const {
    if (data_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(data_.size(), " trailing bytes"));
  }

 private:
  absl::Status Need(size_t n, absl::string_view what) const {
    if (data_.size() >= n) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("truncated: ", what, " needs ", n, " bytes, ", data_.size(), " left"));
  }

  absl::string_view data_;
};

absl::Status CheckKey(absl::string_view key) {
  if (key.size() <= kMaxKeyBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("key of ", key.size(), " bytes exceeds the limit of ", kMaxKeyBytes));
}

bool IsKnownOp(uint8_t op) {
  return op >= static_cast<uint8_t>(Op::kHello) && op <= static_cast<uint8_t>(Op::kDeleteKey);
}

}  // namespace

absl::string_view OpName(Op op) {
  switch (op) {
    case Op::kHello:
      return "HELLO";
    case Op::kSet:
      return "SET";
    case Op::kGet:
      return "GET";
    case Op::kAdd:
      return "ADD";
    case Op::kCompareSet:
      return "COMPARE_SET";
    case Op::kWait:
      return "WAIT";
    case Op::kDeleteKey:
      return "DELETE_KEY";
  }
  return "UNKNOWN";
}

int64_t TimeoutToWire(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return -1;
  if (timeout <= absl::ZeroDuration()) return 0;
  return absl::ToInt64Microseconds(timeout);  // Saturates at int64 max.
}

absl::StatusOr<std::string> EncodeRequest(const Request& request) {
  std::string out;
  PutU8(&out, static_cast<uint8_t>(request.op));
  switch (request.op) {
    case Op::kHello:
      PutU32(&out, request.magic);
      PutU32(&out, request.version);
      break;
    case Op::kSet:
      DT_RETURN_IF_ERROR(CheckKey(request.key));
      if (request.value.size() > kMaxFrameBytes) {
        return absl::InvalidArgumentError(absl::StrCat("SET value of ", request.value.size(),
                                                       " bytes exceeds the frame limit of ",
                                                       kMaxFrameBytes));
      }
      PutBytes(&out, request.key);
      PutBytes(&out, request.value);
      break;
    case Op::kGet:
      DT_RETURN_IF_ERROR(CheckKey(request.key));
      PutI64(&out, TimeoutToWire(request.timeout));
      PutBytes(&out, request.key);
      break;
    case Op::kAdd:
      DT_RETURN_IF_ERROR(CheckKey(request.key));
      PutBytes(&out, request.key);
      PutI64(&out, request.delta);
      break;
    case Op::kCompareSet:
      DT_RETURN_IF_ERROR(CheckKey(request.key));
      if (request.expected.size() + request.value.size() > kMaxFrameBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("COMPARE_SET values of ", request.expected.size() + request.value.size(),
                         " bytes exceed the frame limit of ", kMaxFrameBytes));
      }
      PutBytes(&out, request.key);
      PutBytes(&out, request.expected);
      PutBytes(&out, request.value);
      break;
    case Op::kWait:
      if (request.keys.size() > kMaxWaitKeys) {
        return absl::InvalidArgumentError(absl::StrCat(
            "WAIT on ", request.keys.size(), " keys exceeds the limit of ", kMaxWaitKeys));
      }
      PutI64(&out, TimeoutToWire(request.timeout));
      PutU32(&out, static_cast<uint32_t>(request.keys.size()));
      for (const std::string& key : request.keys) {
        DT_RETURN_IF_ERROR(CheckKey(key));
        PutBytes(&out, key);
      }
      break;
    case Op::kDeleteKey:
      DT_RETURN_IF_ERROR(CheckKey(request.key));
      PutBytes(&out, request.key);
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown op ", static_cast<int>(request.op)));
  }
  if (out.size() > kMaxFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(OpName(request.op), " request of ", out.size(),
                                                   " bytes exceeds the frame limit of ",
                                                   kMaxFrameBytes));
  }
  return out;
}

absl::StatusOr<Request> DecodeRequest(absl::string_view payload) {
  Reader in(payload);
  uint8_t op = 0;
  DT_RETURN_IF_ERROR(in.U8(&op));
  if (!IsKnownOp(op)) return absl::InvalidArgumentError(absl::StrCat("unknown op ", op));
  Request r;
  r.op = static_cast<Op>(op);
  switch (r.op) {
    case Op::kHello:
      DT_RETURN_IF_ERROR(in.U32(&r.magic));
      DT_RETURN_IF_ERROR(in.U32(&r.version));
      break;
    case Op::kSet:
      DT_RETURN_IF_ERROR(in.Bytes(&r.key, "key", kMaxKeyBytes));
      DT_RETURN_IF_ERROR(in.Bytes(&r.value, "value", kMaxFrameBytes));
      break;
    case Op::kGet:
      DT_RETURN_IF_ERROR(in.Timeout(&r.timeout));
      DT_RETURN_IF_ERROR(in.Bytes(&r.key, "key", kMaxKeyBytes));
      break;
    case Op::kAdd:
      DT_RETURN_IF_ERROR(in.Bytes(&r.key, "key", kMaxKeyBytes));
      DT_RETURN_IF_ERROR(in.I64(&r.delta));
      break;
    case Op::kCompareSet:
      DT_RETURN_IF_ERROR(in.Bytes(&r.key, "key", kMaxKeyBytes));
      DT_RETURN_IF_ERROR(in.Bytes(&r.expected, "expected value", kMaxFrameBytes));
      DT_RETURN_IF_ERROR(in.Bytes(&r.value, "desired value", kMaxFrameBytes));
      break;
    case Op::kWait: {
      DT_RETURN_IF_ERROR(in.Timeout(&r.timeout));
      uint32_t count = 0;
      DT_RETURN_IF_ERROR(in.U32(&count));
      if (count > kMaxWaitKeys) {
        return absl::InvalidArgumentError(
            absl::StrCat("WAIT on ", count, " keys exceeds the limit of ", kMaxWaitKeys));
      }
      // Each key takes at least its 4-byte length, so a count the payload cannot hold is caught
      // before reserving memory for it.
      if (count > payload.size() / 4) {
        return absl::InvalidArgumentError(
            absl::StrCat("WAIT count ", count, " does not fit in ", payload.size(), " bytes"));
      }
      r.keys.resize(count);
      for (std::string& key : r.keys) DT_RETURN_IF_ERROR(in.Bytes(&key, "key", kMaxKeyBytes));
      break;
    }
    case Op::kDeleteKey:
      DT_RETURN_IF_ERROR(in.Bytes(&r.key, "key", kMaxKeyBytes));
      break;
  }
  DT_RETURN_IF_ERROR(in.Done());
  return r;
}

std::string EncodeResponse(Op op, const Response& response) {
  std::string out;
  if (!response.status.ok()) {
    PutU8(&out, static_cast<uint8_t>(response.status.code()));
    absl::string_view message = response.status.message();
    // A message never needs to be large; cut it well below the frame limit.
    PutBytes(&out, message.substr(0, 64 << 10));
    return out;
  }
  PutU8(&out, 0);
  switch (op) {
    case Op::kGet:
    case Op::kCompareSet:
      if (response.value.size() + 5 > kMaxFrameBytes) {
        Response too_big;
        too_big.status = absl::ResourceExhaustedError(
            absl::StrCat("value of ", response.value.size(), " bytes exceeds the frame limit of ",
                         kMaxFrameBytes));
        return EncodeResponse(op, too_big);
      }
      PutBytes(&out, response.value);
      break;
    case Op::kAdd:
      PutI64(&out, response.number);
      break;
    case Op::kDeleteKey:
      PutU8(&out, response.existed ? 1 : 0);
      break;
    case Op::kHello:
    case Op::kSet:
    case Op::kWait:
      break;
  }
  return out;
}

absl::StatusOr<Response> DecodeResponse(Op op, absl::string_view payload) {
  Reader in(payload);
  uint8_t code = 0;
  DT_RETURN_IF_ERROR(in.U8(&code));
  if (code > kMaxStatusCode) {
    return absl::InvalidArgumentError(absl::StrCat("unknown status code ", code));
  }
  Response r;
  if (code != 0) {
    std::string message;
    DT_RETURN_IF_ERROR(in.Bytes(&message, "error message", kMaxFrameBytes));
    DT_RETURN_IF_ERROR(in.Done());
    r.status = absl::Status(static_cast<absl::StatusCode>(code), message);
    return r;
  }
  switch (op) {
    case Op::kGet:
    case Op::kCompareSet:
      DT_RETURN_IF_ERROR(in.Bytes(&r.value, "value", kMaxFrameBytes));
      break;
    case Op::kAdd:
      DT_RETURN_IF_ERROR(in.I64(&r.number));
      break;
    case Op::kDeleteKey: {
      uint8_t existed = 0;
      DT_RETURN_IF_ERROR(in.U8(&existed));
      if (existed > 1) {
        return absl::InvalidArgumentError(absl::StrCat("DELETE_KEY flag ", existed));
      }
      r.existed = existed == 1;
      break;
    }
    case Op::kHello:
    case Op::kSet:
    case Op::kWait:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown op ", static_cast<int>(op)));
  }
  DT_RETURN_IF_ERROR(in.Done());
  return r;
}

}  // namespace dstrain::store::internal
