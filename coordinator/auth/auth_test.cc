// The token file's format, roles, what a Caller may do with a job, and that every method of every
// coordinator service has an access rule (a method added without one would be refused to all).
#include <google/protobuf/descriptor.h>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "coordinator/auth/authorizer.h"
#include "coordinator/auth/caller.h"
#include "coordinator/auth/token_table.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/checkpoint.grpc.pb.h"
#include "proto/job.grpc.pb.h"
#include "proto/store.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace dstrain::coordinator {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(TokenTable, FindsPrincipalsByTokenNeverStoringIt) {
  const std::string text =
      absl::StrCat("# comment\n\n", TokenFileLine("s3cret", "alice", kSubmitter), "\n",
                   TokenFileLine("other", "ops", kAdmin | kViewer), "\n");
  EXPECT_EQ(text.find("s3cret"), std::string::npos);
  ASSERT_OK_AND_ASSIGN(TokenTable table, TokenTable::Parse(text, "tokens"));
  EXPECT_EQ(table.size(), 2u);
  const TokenTable::Entry* alice = table.Find("s3cret");
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->principal, "alice");
  EXPECT_EQ(alice->roles, kSubmitter);
  ASSERT_NE(table.Find("other"), nullptr);
  EXPECT_EQ(table.Find("other")->roles, kAdmin | kViewer);
  EXPECT_EQ(table.Find("s3cre"), nullptr);
  EXPECT_EQ(table.Find(""), nullptr);
}

TEST(TokenTable, RefusesMalformedFilesNamingTheLine) {
  const std::string hash(64, 'a');
  EXPECT_THAT(TokenTable::Parse("", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no token")));
  EXPECT_THAT(TokenTable::Parse("\nabc alice viewer", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("f:2: the first field")));
  EXPECT_THAT(TokenTable::Parse(hash + " Alice viewer", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("principal 'Alice'")));
  EXPECT_THAT(TokenTable::Parse(hash + " alice root", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown role 'root'")));
  EXPECT_THAT(TokenTable::Parse(hash + " alice", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("f:1: expected")));
  EXPECT_THAT(TokenTable::Parse(hash + " a viewer\n" + hash + " b viewer", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("f:2: this token hash")));
  EXPECT_THAT(TokenTable::Load("/nonexistent/tokens"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST(Roles, ParseAndName) {
  ASSERT_OK_AND_ASSIGN(uint32_t roles, ParseRoles("submitter,viewer"));
  EXPECT_EQ(roles, kSubmitter | kViewer);
  EXPECT_EQ(RoleNames(roles), "viewer,submitter");
  EXPECT_THAT(ParseRoles(""), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(Caller, SubmitterSeesAndControlsOnlyItsOwnJobs) {
  Caller alice{false, "alice", kSubmitter, ""};
  EXPECT_THAT(alice.MaySee("j1", "alice"), IsOk());
  EXPECT_THAT(alice.MayControl("j1", "alice"), IsOk());
  EXPECT_THAT(alice.MaySee("j2", "bob"),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  EXPECT_THAT(alice.MayControl("j2", "bob"),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  // Jobs of an --insecure past have no owner: not anyone's.
  EXPECT_THAT(alice.MayControl("j3", ""),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));

  Caller viewer{false, "grafana", kViewer, ""};
  EXPECT_THAT(viewer.MaySee("j2", "bob"), IsOk());
  EXPECT_THAT(viewer.MayControl("j2", "bob"),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));

  Caller admin{false, "ops", kAdmin, ""};
  EXPECT_THAT(admin.MaySee("j2", "bob"), IsOk());
  EXPECT_THAT(admin.MayControl("j2", "bob"), IsOk());

  EXPECT_THAT(Caller::Trusted().MayControl("j2", "bob"), IsOk());
  EXPECT_THAT(Caller::Trusted().IsWorker("wa"), IsOk());
}

TEST(Caller, WorkerIsTheOneItsCertificateNames) {
  Caller wa{false, "", 0, "wa"};
  EXPECT_THAT(wa.IsWorker("wa"), IsOk());
  EXPECT_THAT(wa.IsWorker("wb"), StatusIs(absl::StatusCode::kPermissionDenied,
                                          HasSubstr("client certificate is worker wa")));
  EXPECT_THAT(Caller{}.IsWorker("wa"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("no worker certificate")));
}

TEST(Rules, EveryServiceMethodHasOne) {
  const google::protobuf::FileDescriptor* files[] = {
      v1::SubmitJobRequest::descriptor()->file(), v1::RegisterWorkerRequest::descriptor()->file(),
      v1::RegisterShardRequest::descriptor()->file(), v1::SetRequest::descriptor()->file()};
  std::vector<const google::protobuf::ServiceDescriptor*> services;
  for (const auto* file : files) {
    for (int i = 0; i < file->service_count(); ++i) services.push_back(file->service(i));
  }
  EXPECT_EQ(services.size(), 4u);
  int methods = 0;
  for (const auto* service : services) {
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string path =
          absl::StrCat("/", service->full_name(), "/", service->method(i)->name());
      EXPECT_NE(RuleFor(path), nullptr) << path;
      ++methods;
    }
  }
  EXPECT_GE(methods, 20);
  EXPECT_EQ(RuleFor("/dstrain.v1.JobService/Nope"), nullptr);
  EXPECT_EQ(*RuleFor("/dstrain.v1.WorkerService/ReportStatus"), Rule::kWorker);
  EXPECT_EQ(*RuleFor("/dstrain.v1.JobService/SubmitJob"), Rule::kSubmitter);
}

}  // namespace
}  // namespace dstrain::coordinator
