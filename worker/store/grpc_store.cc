#include "worker/store/grpc_store.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc/grpc_status.h"
#include "common/status/status_macros.h"

namespace dstrain::store {
namespace {

// A blocking RPC may return this much after its own timeout before the client gives up on it.
constexpr absl::Duration kDeadlineSlack = absl::Seconds(5);
// One Wait request at most (below the service's StoreServiceImpl::kMaxWait of 10 minutes).
constexpr absl::Duration kWaitRound = absl::Minutes(5);

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

std::string Printable(absl::string_view key) { return absl::CHexEscape(key); }

}  // namespace

std::unique_ptr<GrpcStore> GrpcStore::Connect(
    const std::string& address, std::shared_ptr<grpc::ChannelCredentials> channel_credentials,
    StoreCredential credential, absl::Duration rpc_timeout) {
  return std::unique_ptr<GrpcStore>(
      new GrpcStore(address, grpc::CreateChannel(address, std::move(channel_credentials)),
                    std::move(credential), rpc_timeout));
}

GrpcStore::GrpcStore(std::string address, std::shared_ptr<grpc::Channel> channel,
                     StoreCredential credential, absl::Duration timeout)
    : address_(std::move(address)),
      credential_(std::move(credential)),
      stub_(v1::StoreService::NewStub(channel)),
      rpc_timeout_(timeout) {}

std::unique_ptr<grpc::ClientContext> GrpcStore::NewContext(absl::Duration timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->AddMetadata(kScopeMetadata, credential_.scope);
  context->AddMetadata(kTokenMetadata, credential_.token);
  SetDeadline(context.get(), timeout);
  return context;
}

absl::Status GrpcStore::Set(absl::string_view key, absl::string_view value) {
  const std::unique_ptr<grpc::ClientContext> context = NewContext(rpc_timeout_);
  v1::SetRequest request;
  request.set_key(std::string(key));
  request.set_value(std::string(value));
  v1::SetResponse response;
  return FromGrpcStatus(stub_->Set(context.get(), request, &response),
                        absl::StrCat("store Set \"", Printable(key), "\" at ", address_));
}

absl::StatusOr<std::string> GrpcStore::Get(absl::string_view key, absl::Duration timeout) {
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
  while (true) {
    const std::unique_ptr<grpc::ClientContext> context = NewContext(rpc_timeout_);
    v1::GetRequest request;
    request.set_key(std::string(key));
    v1::GetResponse response;
    DT_RETURN_IF_ERROR(
        FromGrpcStatus(stub_->Get(context.get(), request, &response),
                       absl::StrCat("store Get \"", Printable(key), "\" at ", address_)));
    if (response.found()) return std::move(*response.mutable_value());
    // Absent: wait for it, then read again (it may be deleted in between).
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat("store Get: key \"", Printable(key), "\" not set within ",
                       absl::FormatDuration(timeout), " at ", address_));
    }
    absl::Status waited = Wait({std::string(key)}, left);
    if (absl::IsDeadlineExceeded(waited)) {
      return absl::DeadlineExceededError(
          absl::StrCat("store Get: key \"", Printable(key), "\" not set within ",
                       absl::FormatDuration(timeout), " at ", address_));
    }
    DT_RETURN_IF_ERROR(waited);
  }
}

absl::StatusOr<int64_t> GrpcStore::Add(absl::string_view key, int64_t delta) {
  const std::unique_ptr<grpc::ClientContext> context = NewContext(rpc_timeout_);
  v1::AddRequest request;
  request.set_key(std::string(key));
  request.set_delta(delta);
  v1::AddResponse response;
  DT_RETURN_IF_ERROR(
      FromGrpcStatus(stub_->Add(context.get(), request, &response),
                     absl::StrCat("store Add \"", Printable(key), "\" at ", address_)));
  return response.value();
}

absl::StatusOr<std::string> GrpcStore::CompareSet(absl::string_view key, absl::string_view expected,
                                                  absl::string_view desired) {
  const std::unique_ptr<grpc::ClientContext> context = NewContext(rpc_timeout_);
  v1::CompareSetRequest request;
  request.set_key(std::string(key));
  request.set_expected_value(std::string(expected));
  request.set_desired_value(std::string(desired));
  v1::CompareSetResponse response;
  DT_RETURN_IF_ERROR(
      FromGrpcStatus(stub_->CompareSet(context.get(), request, &response),
                     absl::StrCat("store CompareSet \"", Printable(key), "\" at ", address_)));
  return std::move(*response.mutable_current_value());
}

absl::Status GrpcStore::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  // The service bounds one Wait (StoreServiceImpl::kMaxWait); a longer one is asked in rounds.
  const absl::Time start = absl::Now();
  const absl::Duration total = std::max(timeout, absl::ZeroDuration());
  for (absl::Duration left = total;;
       left = std::max(total - (absl::Now() - start), absl::ZeroDuration())) {
    const absl::Duration round = std::min(left, kWaitRound);
    const std::unique_ptr<grpc::ClientContext> context = NewContext(round + kDeadlineSlack);
    v1::WaitRequest request;
    for (const std::string& key : keys) request.add_keys(key);
    request.mutable_timeout()->set_seconds(absl::ToInt64Seconds(round));
    request.mutable_timeout()->set_nanos(static_cast<int32_t>(
        absl::ToInt64Nanoseconds(round - absl::Seconds(absl::ToInt64Seconds(round)))));
    v1::WaitResponse response;
    const grpc::Status status = stub_->Wait(context.get(), request, &response);
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && round < left) continue;
    // The service's message names the keys still missing.
    return FromGrpcStatus(status, absl::StrCat("store Wait at ", address_));
  }
}

absl::StatusOr<bool> GrpcStore::DeleteKey(absl::string_view key) {
  const std::unique_ptr<grpc::ClientContext> context = NewContext(rpc_timeout_);
  v1::DeleteRequest request;
  request.set_key(std::string(key));
  v1::DeleteResponse response;
  DT_RETURN_IF_ERROR(
      FromGrpcStatus(stub_->Delete(context.get(), request, &response),
                     absl::StrCat("store Delete \"", Printable(key), "\" at ", address_)));
  return response.deleted();
}

}  // namespace dstrain::store
