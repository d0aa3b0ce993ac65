// The one place every call to the coordinator's TLS port is admitted or refused (docs/security.md):
// an AuthMetadataProcessor that gRPC runs after the handshake and before any handler. Each method
// has one rule (RuleFor); a call that meets it reaches its handler with the caller's identity in
// its AuthContext (CallerOf reads it back), one that does not ends there:
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
// Thread safety: Process runs on gRPC's threads concurrently; the token table is immutable.
#pragma once

#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/auth_metadata_processor.h>

#include <string>

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
  explicit Authorizer(TokenTable tokens) : tokens_(std::move(tokens)) {}

  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata* response) override;

 private:
  const TokenTable tokens_;
};

// The identity Authorizer admitted the call with. `enforced`: the port runs the Authorizer (TLS);
// false for an --insecure coordinator, whose callers are all Caller::Trusted().
Caller CallerOf(const grpc::AuthContext& context, bool enforced);

}  // namespace dstrain::coordinator
