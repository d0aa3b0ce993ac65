// StoreService (proto/store.proto) over a DurableStore: the rendezvous store trainers reach in
// service mode through GrpcStore (worker/store/grpc_store.h).
//
// Get never blocks (found=false for an absent key: ranks poll during rendezvous); Wait blocks up
// to its timeout, the call's deadline and kMaxWait, whichever comes first (DEADLINE_EXCEEDED;
// GrpcStore waits longer by asking again), and gives up as soon as the client cancels, so no
// caller holds a server thread for long. Keys must be non-empty (INVALID_ARGUMENT) and at most
// kMaxKeyBytes, values at most kMaxValueBytes, which a request carrying them fits in below the
// server's receive limit (common/limits), so an oversized one is this service's
// RESOURCE_EXHAUSTED naming the field and the limit, not a transport error.
#pragma once

#include <cstddef>
#include <functional>

#include "absl/time/time.h"
#include "common/limits/limits.h"
#include "coordinator/store/durable_store.h"
#include "coordinator/store/store_credentials.h"
#include "proto/store.grpc.pb.h"

namespace dstrain::coordinator {

class StoreServiceImpl final : public v1::StoreService::Service {
 public:
  static constexpr size_t kMaxKeyBytes = limits::kMaxStoreKeyBytes;
  static constexpr size_t kMaxValueBytes = limits::kMaxStoreValueBytes;
  static constexpr absl::Duration kMaxWait = absl::Seconds(limits::kMaxStoreWaitSeconds);

  // Who, beyond a holder of the scope's token, may use a scope: OK or PERMISSION_DENIED. With
  // TLS the coordinator binds each attempt's keys to the workers that hold its ranks
  // (Coordinator::MayUseStoreScope, by the caller's certificate).
  using ScopeCheck =
      std::function<absl::Status(const grpc::ServerContext& context, absl::string_view scope)>;

  // Every call must carry a credential `credentials` accepts for each of its keys
  // (store_credentials.h): UNAUTHENTICATED without a valid one, PERMISSION_DENIED naming the
  // field for a key outside its scope, or when `scope_check` (null: none) refuses the caller.
  // `max_wait` bounds every Wait (tests shorten it). Neither pointer is owned; both outlive the
  // service.
  StoreServiceImpl(DurableStore* store, const StoreCredentials* credentials,
                   absl::Duration max_wait = kMaxWait, ScopeCheck scope_check = nullptr)
      : store_(store),
        credentials_(credentials),
        max_wait_(max_wait),
        scope_check_(std::move(scope_check)) {}

  grpc::Status Set(grpc::ServerContext* context, const v1::SetRequest* request,
                   v1::SetResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const v1::GetRequest* request,
                   v1::GetResponse* response) override;
  grpc::Status Add(grpc::ServerContext* context, const v1::AddRequest* request,
                   v1::AddResponse* response) override;
  grpc::Status CompareSet(grpc::ServerContext* context, const v1::CompareSetRequest* request,
                          v1::CompareSetResponse* response) override;
  grpc::Status Wait(grpc::ServerContext* context, const v1::WaitRequest* request,
                    v1::WaitResponse* response) override;
  grpc::Status Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                      v1::DeleteResponse* response) override;

 private:
  DurableStore* const store_;
  const StoreCredentials* const credentials_;
  const absl::Duration max_wait_;
  const ScopeCheck scope_check_;
};

}  // namespace dstrain::coordinator
