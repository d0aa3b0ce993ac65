// GrpcStore: the Store of service mode, a client of the coordinator's StoreService
// (proto/store.proto). Trainers scope it with a PrefixStore per job and attempt.
//
// Blocking calls map onto the service's non-blocking Get plus its blocking Wait, each RPC with a
// deadline a little past the call's timeout, so a coordinator that stops answering gives
// kDeadlineExceeded or kUnavailable rather than a hang. Errors name the key, the RPC and the
// coordinator's address.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/store.grpc.pb.h"
#include "worker/store/store.h"

namespace dstrain::store {

// What a trainer presents with every call: its attempt's store prefix and the token the
// coordinator gave for it (coordinator/store/store_credentials.h).
struct StoreCredential {
  std::string scope;
  std::string token;
};

class GrpcStore final : public Store {
 public:
  // gRPC metadata keys of the credential.
  static constexpr char kScopeMetadata[] = "x-dstrain-store-scope";
  static constexpr char kTokenMetadata[] = "x-dstrain-store-token";

  // `address` is HOST:PORT of the coordinator, reached with `channel_credentials` (TLS with the
  // worker's certificate, or plaintext for an --insecure one); `rpc_timeout` bounds each
  // non-blocking RPC; `credential` goes with every call. No connection is made until the first
  // call.
  static std::unique_ptr<GrpcStore> Connect(
      const std::string& address, std::shared_ptr<grpc::ChannelCredentials> channel_credentials,
      StoreCredential credential, absl::Duration rpc_timeout = absl::Seconds(30));

  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Duration timeout) override;
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override;
  absl::StatusOr<std::string> CompareSet(absl::string_view key, absl::string_view expected,
                                         absl::string_view desired) override;
  absl::Status Wait(const std::vector<std::string>& keys, absl::Duration timeout) override;
  absl::StatusOr<bool> DeleteKey(absl::string_view key) override;

 private:
  GrpcStore(std::string address, std::shared_ptr<grpc::Channel> channel, StoreCredential credential,
            absl::Duration timeout);
  // A context for one call: the credential attached, a deadline `timeout` away (none when
  // infinite).
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout) const;

  const std::string address_;
  const StoreCredential credential_;
  std::unique_ptr<v1::StoreService::Stub> stub_;
  const absl::Duration rpc_timeout_;
};

}  // namespace dstrain::store
