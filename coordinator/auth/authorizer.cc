#include "coordinator/auth/authorizer.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/tls/tls.h"

namespace dstrain::coordinator {
namespace {

// Properties the Authorizer adds to an admitted call's AuthContext.
constexpr char kPrincipalProperty[] = "dstrain_principal";
constexpr char kRolesProperty[] = "dstrain_roles";
constexpr char kWorkerProperty[] = "dstrain_worker";

const std::map<std::string, Rule, std::less<>>& Rules() {
  static const auto* rules = new std::map<std::string, Rule, std::less<>>{
      {"/grpc.health.v1.Health/Check", Rule::kAnyone},
      {"/grpc.health.v1.Health/Watch", Rule::kAnyone},
      // People and tools, by role; which job is theirs the Coordinator decides.
      {"/dstrain.v1.JobService/SubmitJob", Rule::kSubmitter},
      {"/dstrain.v1.JobService/GetJob", Rule::kAnyRole},
      {"/dstrain.v1.JobService/ListJobs", Rule::kAnyRole},
      {"/dstrain.v1.JobService/WatchJob", Rule::kAnyRole},
      {"/dstrain.v1.JobService/GetJobLogs", Rule::kAnyRole},
      {"/dstrain.v1.JobService/CancelJob", Rule::kSubmitter},
      {"/dstrain.v1.JobService/DeleteJob", Rule::kSubmitter},
      {"/dstrain.v1.WorkerService/ListWorkers", Rule::kWorkerOrAnyRole},
      {"/dstrain.v1.CheckpointService/ListCheckpoints", Rule::kWorkerOrAnyRole},
      // Workers and their trainers, by certificate; the store also wants the attempt's token.
      {"/dstrain.v1.WorkerService/RegisterWorker", Rule::kWorker},
      {"/dstrain.v1.WorkerService/Heartbeat", Rule::kWorker},
      {"/dstrain.v1.WorkerService/StreamAssignments", Rule::kWorker},
      {"/dstrain.v1.WorkerService/ReportStatus", Rule::kWorker},
      {"/dstrain.v1.CheckpointService/RegisterShard", Rule::kWorker},
      {"/dstrain.v1.CheckpointService/CommitCheckpoint", Rule::kWorker},
      {"/dstrain.v1.StoreService/Set", Rule::kWorker},
      {"/dstrain.v1.StoreService/Get", Rule::kWorker},
      {"/dstrain.v1.StoreService/Add", Rule::kWorker},
      {"/dstrain.v1.StoreService/CompareSet", Rule::kWorker},
      {"/dstrain.v1.StoreService/Wait", Rule::kWorker},
      {"/dstrain.v1.StoreService/Delete", Rule::kWorker},
  };
  return *rules;
}

std::string View(grpc::string_ref s) { return std::string(s.data(), s.size()); }

}  // namespace

const Rule* RuleFor(absl::string_view method) {
  auto it = Rules().find(method);
  return it == Rules().end() ? nullptr : &it->second;
}

grpc::Status Authorizer::Process(const InputMetadata& metadata, grpc::AuthContext* context,
                                 OutputMetadata* consumed, OutputMetadata*) {
  std::string method, authorization;
  for (const auto& [key, value] : metadata) {
    if (key == ":path") method = View(value);
    if (key == "authorization") authorization = View(value);
  }
  const Rule* rule = RuleFor(method);
  if (rule == nullptr) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("no access rule for method ", method));
  }
  if (*rule == Rule::kAnyone) return grpc::Status::OK;

  const std::string worker = tls::PeerWorkerId(*context);
  if (!worker.empty()) context->AddProperty(kWorkerProperty, worker);
  if (*rule == Rule::kWorker || (*rule == Rule::kWorkerOrAnyRole && !worker.empty())) {
    if (!worker.empty()) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(method,
                                     " is for workers: present a client certificate "
                                     "(CN worker:<id>) signed by the coordinator's CA"));
  }

  if (authorization.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(method, " needs a bearer token (DSTRAIN_TOKEN)"));
  }
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization, kBearer)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization header must be 'Bearer <token>'");
  }
  const TokenTable::Entry* entry =
      tokens_.Find(absl::string_view(authorization).substr(kBearer.size()));
  if (entry == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the bearer token is not known");
  }
  // The token is spent here; handlers see only who it named.
  consumed->insert({"authorization", authorization});
  if (*rule == Rule::kSubmitter && (entry->roles & (kSubmitter | kAdmin)) == 0) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat(method, " needs role submitter or admin; ", entry->principal,
                                     " has ", RoleNames(entry->roles)));
  }
  context->AddProperty(kPrincipalProperty, entry->principal);
  context->AddProperty(kRolesProperty, RoleNames(entry->roles));
  return grpc::Status::OK;
}

Caller CallerOf(const grpc::AuthContext& context, bool enforced) {
  if (!enforced) return Caller::Trusted();
  Caller caller;
  auto one = [&context](const char* name) {
    std::vector<grpc::string_ref> values = context.FindPropertyValues(name);
    return values.size() == 1 ? View(values[0]) : std::string();
  };
  caller.principal = one(kPrincipalProperty);
  caller.worker = one(kWorkerProperty);
  absl::StatusOr<uint32_t> roles = ParseRoles(one(kRolesProperty));
  caller.roles = roles.ok() ? *roles : 0;
  return caller;
}

}  // namespace dstrain::coordinator
