#include "coordinator/store/store_service.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/grpc/grpc_status.h"
#include "worker/store/grpc_store.h"

namespace dstrain::coordinator {
namespace {

// How often a blocked Wait checks whether its client went away.
constexpr absl::Duration kCancelPoll = absl::Milliseconds(100);

grpc::Status InvalidArgument(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

grpc::Status CheckKey(const std::string& key, absl::string_view field) {
  if (key.empty()) return InvalidArgument(absl::StrCat(field, ": empty key"));
  if (key.size() > StoreServiceImpl::kMaxKeyBytes) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat(field, ": key of ", key.size(), " bytes is over the limit of ",
                                     StoreServiceImpl::kMaxKeyBytes, " (kMaxStoreKeyBytes)"));
  }
  return grpc::Status::OK;
}

grpc::Status CheckValue(const std::string& value, absl::string_view field) {
  if (value.size() > StoreServiceImpl::kMaxValueBytes) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat(field, ": value of ", value.size(), " bytes is over the limit of ",
                     StoreServiceImpl::kMaxValueBytes, " (kMaxStoreValueBytes)"));
  }
  return grpc::Status::OK;
}

// The scope of the call's store credential (GrpcStore's metadata), once the credential checked
// out (UNAUTHENTICATED otherwise) and `check` (may be null) admits the caller to it.
grpc::Status Scope(const StoreCredentials& credentials, const StoreServiceImpl::ScopeCheck& check,
                   const grpc::ServerContext* context, std::string* scope) {
  const auto& metadata = context->client_metadata();
  const auto scope_it = metadata.find(store::GrpcStore::kScopeMetadata);
  const auto token = metadata.find(store::GrpcStore::kTokenMetadata);
  if (scope_it == metadata.end() || token == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "no store credential: StoreService serves trainers with their attempt's "
                        "token");
  }
  scope->assign(scope_it->second.data(), scope_it->second.size());
  DT_GRPC_RETURN_IF_ERROR(ToGrpcStatus(
      credentials.Check(*scope, absl::string_view(token->second.data(), token->second.size()))));
  if (check == nullptr) return grpc::Status::OK;
  return ToGrpcStatus(check(*context, *scope));
}

// PERMISSION_DENIED naming `field` unless `key` lies beneath `scope`.
grpc::Status InScope(absl::string_view scope, const std::string& key, absl::string_view field) {
  if (StoreCredentials::InScope(scope, key)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat(field, ": \"", absl::CHexEscape(key.substr(0, 200)),
                                   "\" is outside \"", scope, "/\""));
}

// A call about one key: its credential, and the key beneath its scope.
grpc::Status Authorize(const StoreCredentials& credentials,
                       const StoreServiceImpl::ScopeCheck& check,
                       const grpc::ServerContext* context, const std::string& key,
                       absl::string_view field) {
  std::string scope;
  DT_GRPC_RETURN_IF_ERROR(Scope(credentials, check, context, &scope));
  return InScope(scope, key, field);
}

}  // namespace

grpc::Status StoreServiceImpl::Set(grpc::ServerContext* context, const v1::SetRequest* request,
                                   v1::SetResponse*) {
  DT_GRPC_RETURN_IF_ERROR(CheckKey(request->key(), "key"));
  DT_GRPC_RETURN_IF_ERROR(Authorize(*credentials_, scope_check_, context, request->key(), "key"));
  DT_GRPC_RETURN_IF_ERROR(CheckValue(request->value(), "value"));
  return ToGrpcStatus(store_->Set(request->key(), request->value()));
}

grpc::Status StoreServiceImpl::Get(grpc::ServerContext* context, const v1::GetRequest* request,
                                   v1::GetResponse* response) {
  DT_GRPC_RETURN_IF_ERROR(CheckKey(request->key(), "key"));
  DT_GRPC_RETURN_IF_ERROR(Authorize(*credentials_, scope_check_, context, request->key(), "key"));
  absl::StatusOr<std::string> value = store_->Get(request->key(), absl::ZeroDuration());
  if (value.ok()) {
    response->set_found(true);
    response->set_value(*std::move(value));
    return grpc::Status::OK;
  }
  if (value.status().code() == absl::StatusCode::kDeadlineExceeded) {
    response->set_found(false);
    return grpc::Status::OK;
  }
  return ToGrpcStatus(value.status());
}

grpc::Status StoreServiceImpl::Add(grpc::ServerContext* context, const v1::AddRequest* request,
                                   v1::AddResponse* response) {
  DT_GRPC_RETURN_IF_ERROR(CheckKey(request->key(), "key"));
  DT_GRPC_RETURN_IF_ERROR(Authorize(*credentials_, scope_check_, context, request->key(), "key"));
  absl::StatusOr<int64_t> value = store_->Add(request->key(), request->delta());
  if (!value.ok()) return ToGrpcStatus(value.status());
  response->set_value(*value);
  return grpc::Status::OK;
}

grpc::Status StoreServiceImpl::CompareSet(grpc::ServerContext* context,
                                          const v1::CompareSetRequest* request,
                                          v1::CompareSetResponse* response) {
  DT_GRPC_RETURN_IF_ERROR(CheckKey(request->key(), "key"));
  DT_GRPC_RETURN_IF_ERROR(Authorize(*credentials_, scope_check_, context, request->key(), "key"));
  DT_GRPC_RETURN_IF_ERROR(CheckValue(request->desired_value(), "desired_value"));
  absl::StatusOr<std::string> now =
      store_->CompareSet(request->key(), request->expected_value(), request->desired_value());
  if (!now.ok()) return ToGrpcStatus(now.status());
  response->set_swapped(*now == request->desired_value());
  response->set_current_value(*std::move(now));
  return grpc::Status::OK;
}

grpc::Status StoreServiceImpl::Wait(grpc::ServerContext* context, const v1::WaitRequest* request,
                                    v1::WaitResponse*) {
  std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  // One credential for the call; every key beneath its scope.
  std::string scope;
  DT_GRPC_RETURN_IF_ERROR(Scope(*credentials_, scope_check_, context, &scope));
  for (size_t i = 0; i < keys.size(); ++i) {
    DT_GRPC_RETURN_IF_ERROR(CheckKey(keys[i], absl::StrCat("keys[", i, "]")));
    DT_GRPC_RETURN_IF_ERROR(InScope(scope, keys[i], absl::StrCat("keys[", i, "]")));
  }
  absl::Duration timeout = max_wait_;
  if (request->has_timeout()) {
    timeout = std::min(max_wait_, absl::Seconds(request->timeout().seconds()) +
                                      absl::Nanoseconds(request->timeout().nanos()));
  }
  // Never past the caller's own deadline: nobody would be listening.
  const absl::Time deadline = absl::FromChrono(context->deadline());
  if (deadline != absl::InfiniteFuture()) {
    timeout = std::min(timeout, std::max(absl::ZeroDuration(), deadline - absl::Now()));
  }
  return ToGrpcStatus(store_->WaitOrCancel(
      keys, timeout, [context] { return context->IsCancelled(); }, kCancelPoll));
}

grpc::Status StoreServiceImpl::Delete(grpc::ServerContext* context,
                                      const v1::DeleteRequest* request,
                                      v1::DeleteResponse* response) {
  DT_GRPC_RETURN_IF_ERROR(CheckKey(request->key(), "key"));
  DT_GRPC_RETURN_IF_ERROR(Authorize(*credentials_, scope_check_, context, request->key(), "key"));
  absl::StatusOr<bool> deleted = store_->DeleteKey(request->key());
  if (!deleted.ok()) return ToGrpcStatus(deleted.status());
  response->set_deleted(*deleted);
  return grpc::Status::OK;
}

}  // namespace dstrain::coordinator
