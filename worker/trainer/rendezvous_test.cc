#include "worker/trainer/rendezvous.h"

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::trainer {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(Rendezvous, ParsesTheThreeSpellings) {
  ASSERT_OK_AND_ASSIGN(Rendezvous none, Rendezvous::Parse(""));
  EXPECT_EQ(none.kind, Rendezvous::Kind::kNone);
  EXPECT_EQ(none.DebugString(), "none");

  ASSERT_OK_AND_ASSIGN(Rendezvous tcp, Rendezvous::Parse("10.1.2.3:29500"));
  EXPECT_EQ(tcp.kind, Rendezvous::Kind::kTcp);
  EXPECT_EQ(tcp.host, "10.1.2.3");
  EXPECT_EQ(tcp.port, 29500);
  EXPECT_EQ(tcp.DebugString(), "tcp://10.1.2.3:29500");

  ASSERT_OK_AND_ASSIGN(Rendezvous grpc,
                       Rendezvous::Parse("grpc://coordinator:7000", "jobs/j1/attempt-2"));
  EXPECT_EQ(grpc.kind, Rendezvous::Kind::kCoordinator);
  EXPECT_EQ(grpc.address, "coordinator:7000");
  EXPECT_EQ(grpc.DebugString(), "grpc://coordinator:7000/jobs/j1/attempt-2");
}

TEST(Rendezvous, BadSpellingsNameTheFlag) {
  for (const char* bad :
       {"nohost", ":80", "host:", "host:port", "host:0", "host:70000", "grpc://"}) {
    EXPECT_THAT(Rendezvous::Parse(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--store")))
        << bad;
  }
}

TEST(Rendezvous, NoneHasNoStore) {
  EXPECT_THAT(ConnectStore(Rendezvous(), absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no rendezvous")));
}

}  // namespace
}  // namespace dstrain::trainer
