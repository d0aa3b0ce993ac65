// The TcpStore wire protocol: every request and response round-trips, and no byte string —
// truncated, padded, oversized or random — makes the decoder crash or accept garbage.
#include "worker/store/tcp_store_protocol.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dstrain::store::internal {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<Request> SampleRequests() {
  std::vector<Request> out;
  Request r;
  r.op = Op::kHello;
  out.push_back(r);
  r = Request();
  r.op = Op::kSet;
  r.key = std::string("k\0ey", 4);
  r.value = std::string("v\0\xff", 3);
  out.push_back(r);
  r = Request();
  r.op = Op::kGet;
  r.key = "get";
  r.timeout = absl::Milliseconds(1500);
  out.push_back(r);
  r = Request();
  r.op = Op::kGet;
  r.key = "forever";
  r.timeout = absl::InfiniteDuration();
  out.push_back(r);
  r = Request();
  r.op = Op::kAdd;
  r.key = "n";
  r.delta = -1234567890123;
  out.push_back(r);
  r = Request();
  r.op = Op::kCompareSet;
  r.key = "cas";
  r.expected = "";
  r.value = "desired";
  out.push_back(r);
  r = Request();
  r.op = Op::kWait;
  r.keys = {"a", "", "ccc"};
  r.timeout = absl::Seconds(3);
  out.push_back(r);
  r = Request();
  r.op = Op::kDeleteKey;
  r.key = "gone";
  out.push_back(r);
  return out;
}

void ExpectSameRequest(const Request& a, const Request& b) {
  EXPECT_EQ(a.op, b.op);
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(a.value, b.value);
  EXPECT_EQ(a.expected, b.expected);
  EXPECT_EQ(a.delta, b.delta);
  EXPECT_EQ(a.keys, b.keys);
  if (a.op == Op::kGet || a.op == Op::kWait) {
    EXPECT_EQ(a.timeout, b.timeout);
  }
  EXPECT_EQ(a.magic, b.magic);
  EXPECT_EQ(a.version, b.version);
}

TEST(TcpStoreProtocolTest, RequestsRoundTrip) {
  for (const Request& request : SampleRequests()) {
    SCOPED_TRACE(OpName(request.op));
    absl::StatusOr<std::string> payload = EncodeRequest(request);
    ASSERT_THAT(payload, IsOk());
    absl::StatusOr<Request> decoded = DecodeRequest(*payload);
    ASSERT_THAT(decoded, IsOk());
    ExpectSameRequest(request, *decoded);
  }
}

TEST(TcpStoreProtocolTest, HelloHasTheDocumentedBytes) {
  Request hello;
  absl::StatusOr<std::string> payload = EncodeRequest(hello);
  ASSERT_THAT(payload, IsOk());
  EXPECT_EQ(*payload, std::string("\x01"
                                  "DSTS"
                                  "\x01\x00\x00\x00",
                                  9));
}

TEST(TcpStoreProtocolTest, EveryTruncationAndExtensionIsRejected) {
  for (const Request& request : SampleRequests()) {
    SCOPED_TRACE(OpName(request.op));
    absl::StatusOr<std::string> payload = EncodeRequest(request);
    ASSERT_THAT(payload, IsOk());
    for (size_t len = 0; len < payload->size(); ++len) {
      EXPECT_THAT(DecodeRequest(payload->substr(0, len)),
                  StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_))
          << "length " << len;
    }
    EXPECT_THAT(DecodeRequest(*payload + "x"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing")));
  }
}

TEST(TcpStoreProtocolTest, MalformedFieldsAreRejected) {
  EXPECT_THAT(DecodeRequest(std::string("\x09", 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown op")));
  EXPECT_THAT(DecodeRequest(std::string("\x00", 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown op")));
  // GET with a timeout of -2us.
  std::string get("\x03", 1);
  get += std::string("\xfe\xff\xff\xff\xff\xff\xff\xff", 8);
  get += std::string("\x01\x00\x00\x00k", 5);
  EXPECT_THAT(DecodeRequest(get),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative timeout")));
  // SET whose key length points far past the end.
  std::string set("\x02\xff\xff\xff\x7f", 5);
  EXPECT_THAT(DecodeRequest(set), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  // WAIT claiming 65536 keys in a few bytes, and one over the limit.
  std::string wait("\x06", 1);
  wait += std::string(8, '\0');
  EXPECT_THAT(DecodeRequest(wait + std::string("\x00\x00\x01\x00", 4)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not fit")));
  EXPECT_THAT(DecodeRequest(wait + std::string("\x01\x00\x01\x00", 4)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST(TcpStoreProtocolTest, OversizedRequestsAreNotEncoded) {
  Request r;
  r.op = Op::kSet;
  r.key = std::string(kMaxKeyBytes + 1, 'k');
  EXPECT_THAT(EncodeRequest(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key")));
  r.key = "k";
  r.value = std::string(kMaxFrameBytes, 'v');
  EXPECT_THAT(EncodeRequest(r),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("frame limit")));
  r = Request();
  r.op = Op::kWait;
  r.keys.assign(kMaxWaitKeys + 1, "k");
  EXPECT_THAT(EncodeRequest(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST(TcpStoreProtocolTest, ResponsesRoundTrip) {
  Response get;
  get.value = std::string("a\0b", 3);
  absl::StatusOr<Response> r = DecodeResponse(Op::kGet, EncodeResponse(Op::kGet, get));
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->status, IsOk());
  EXPECT_EQ(r->value, get.value);

  Response add;
  add.number = -42;
  r = DecodeResponse(Op::kAdd, EncodeResponse(Op::kAdd, add));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->number, -42);

  Response del;
  del.existed = true;
  r = DecodeResponse(Op::kDeleteKey, EncodeResponse(Op::kDeleteKey, del));
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->existed);

  r = DecodeResponse(Op::kWait, EncodeResponse(Op::kWait, Response()));
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(r->status, IsOk());

  Response error;
  error.status = absl::DeadlineExceededError("Get timed out after 1s waiting for key \"k\"");
  r = DecodeResponse(Op::kGet, EncodeResponse(Op::kGet, error));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, error.status);
}

TEST(TcpStoreProtocolTest, MalformedResponsesAreRejected) {
  EXPECT_THAT(DecodeResponse(Op::kGet, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(DecodeResponse(Op::kSet, std::string("\x11", 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status code")));
  EXPECT_THAT(DecodeResponse(Op::kDeleteKey, std::string("\x00\x02", 2)),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(DecodeResponse(Op::kSet, std::string("\x00\x00", 2)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing")));
}

TEST(TcpStoreProtocolTest, RandomBytesNeverCrashTheDecoders) {
  std::mt19937 rng(1337);
  std::vector<std::string> seeds;
  for (const Request& request : SampleRequests()) seeds.push_back(*EncodeRequest(request));
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes;
    if (i % 2 == 0) {
      // Mutate a valid payload: flips and cuts find the interesting paths.
      bytes = seeds[rng() % seeds.size()];
      int flips = 1 + rng() % 4;
      for (int f = 0; f < flips && !bytes.empty(); ++f) {
        bytes[rng() % bytes.size()] = static_cast<char>(rng());
      }
      if (rng() % 3 == 0) bytes.resize(rng() % (bytes.size() + 1));
    } else {
      bytes.resize(rng() % 64);
      for (char& c : bytes) c = static_cast<char>(rng());
    }
    absl::StatusOr<Request> request = DecodeRequest(bytes);
    if (request.ok()) {
      ++accepted;
      // Whatever decodes must encode back to the same bytes: the grammar has one spelling.
      absl::StatusOr<std::string> again = EncodeRequest(*request);
      ASSERT_THAT(again, IsOk());
      EXPECT_EQ(*again, bytes);
    }
    for (Op op : {Op::kHello, Op::kGet, Op::kAdd, Op::kDeleteKey}) {
      (void)DecodeResponse(op, bytes).ok();
    }
  }
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace dstrain::store::internal
