// The one place every call to the coordinator's TLS port is admitted or refused (docs/security.md):
// an AuthMetadataProcessor that gRPC runs after the handshake and before any handler. Each method
// has one rule (RuleFor); a call that meets it reaches its handler, which asks CallerOf who it is,
// and one that does not ends there:
//   - UNAUTHENTICATED: no bearer token where one is needed, a token not in the token file, or no
//     worker certificate on a workers' method;
//   - PERMISSION_DENIED: a valid token whose roles do not allow the method, or a method with no
//     rule (unknown to this coordinator).
// What a rule cannot see — which job or worker a request names — the Coordinator checks with the
// Caller (a submitter's own jobs, a worker's own id).
//
// Runs only on a TLS port (gRPC never calls a processor on plaintext): a coordinator started with
// --insecure admits everyone, and says so at start.
//
// Nothing is written into the AuthContext: gRPC hands the processor the connection's context,
// shared by every call on that connection, so a property added for one call would be read by the
// next (or by a concurrent call with another token). Handlers identify the caller again from the
// call's own metadata and the connection's verified certificate, with the same function.
//
// Thread safety: Process runs on gRPC's threads concurrently; the token table is immutable.
#pragma once

#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/auth/caller.h"
#include "coordinator/auth/token_table.h"

namespace dstrain::coordinator {

// Who may call a method.
enum class Rule {
  kAnyone,           // health checks
  kWorker,           // a verified worker certificate (CN worker:<id>)
  kAnyRole,          // a token with any role
  kWorkerOrAnyRole,  // either of the two
  kSubmitter,        // a token with role submitter or admin
};

// The rule of a full method name ("/dstrain.v1.JobService/SubmitJob"), or null when the method
// has none (refused).
const Rule* RuleFor(absl::string_view method);

class Authorizer : public grpc::AuthMetadataProcessor {
 public:
  explicit Authorizer(std::shared_ptr<const TokenTable> tokens) : tokens_(std::move(tokens)) {}

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata* response) override;

 private:
  const std::shared_ptr<const TokenTable> tokens_;
};

// Who a call is: the worker its connection's verified certificate names, and the principal and
// roles of its bearer token (`authorization`: the values of its authorization headers; none is
// no one, more than one or an unknown token UNAUTHENTICATED).
absl::StatusOr<Caller> Identify(const TokenTable& tokens,
                                const std::vector<absl::string_view>& authorization,
                                const grpc::AuthContext& context);

// The identity the Authorizer admitted a call with. `tokens`: the Authorizer's table, or null for
// an --insecure coordinator, whose callers are all Caller::Trusted().
Caller CallerOf(const grpc::ServerContext& context, const TokenTable* tokens);

}  // namespace dstrain::coordinator
