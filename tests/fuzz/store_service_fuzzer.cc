// Fuzzes the request checks of the coordinator's StoreService handlers
// (coordinator/store/store_service.h): key and value bounds, the call's credential and every key's
// scope, each handler called in-process over a fresh DurableStore (no server). Input: byte 0
// picks the handler (Set, Get, Add, CompareSet, Wait, Delete), byte 1 the credential the call
// carries (none, its attempt's scope and token, that scope with a wrong token, a scope alone),
// the rest is the serialized request. Bad requests must be an error status, never a crash; a call
// that succeeds must have carried the right token and touched only keys beneath its scope.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "coordinator/store/durable_store.h"
#include "coordinator/store/store_credentials.h"
#include "coordinator/store/store_service.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/server_context.h"
#include "grpcpp/test/server_context_test_spouse.h"
#include "worker/store/grpc_store.h"

namespace {

namespace v1 = dstrain::v1;
using dstrain::coordinator::StoreCredentials;

// Accepts every write, like a healthy database.
class NullLog final : public dstrain::coordinator::KvLog {
 public:
  absl::Status Put(absl::string_view, absl::string_view) override { return absl::OkStatus(); }
  absl::Status Delete(absl::string_view) override { return absl::OkStatus(); }
};

template <typename Request, typename Response, typename Handler>
grpc::Status Call(const uint8_t* data, size_t size, grpc::ServerContext* context, Handler handler,
                  std::vector<std::string>* keys) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "not a request");
  }
  if constexpr (std::is_same_v<Request, v1::WaitRequest>) {
    keys->assign(request.keys().begin(), request.keys().end());
  } else {
    keys->push_back(request.key());
  }
  Response response;
  return handler(context, &request, &response);
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; mutated inputs hold many.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const StoreCredentials* const credentials = new StoreCredentials(std::string(32, 's'));
  static const std::string* const scope = new std::string(StoreCredentials::ScopeOf("job-a", 1));
  NullLog log;
  dstrain::coordinator::DurableStore store(&log, {{*scope + "/present", "1"}});
  // Waits give up at once: the checks before them are what is fuzzed.
  dstrain::coordinator::StoreServiceImpl service(&store, credentials, absl::ZeroDuration());

  grpc::ServerContext context;
  grpc::testing::ServerContextTestSpouse spouse(&context);
  const int credential = data[1] % 4;
  if (credential == 1 || credential == 2 || credential == 3) {
    spouse.AddClientMetadata(dstrain::store::GrpcStore::kScopeMetadata, *scope);
  }
  if (credential == 1) {
    spouse.AddClientMetadata(dstrain::store::GrpcStore::kTokenMetadata,
                             credentials->TokenFor(*scope));
  } else if (credential == 2) {
    spouse.AddClientMetadata(dstrain::store::GrpcStore::kTokenMetadata, "00");
  }

  data += 2;
  size -= 2;
  std::vector<std::string> keys;
  grpc::Status status;
  using S = dstrain::coordinator::StoreServiceImpl;
  switch (data[-2] % 6) {
    case 0:
      status = Call<v1::SetRequest, v1::SetResponse>(
          data, size, &context, [&](auto... a) { return service.Set(a...); }, &keys);
      break;
    case 1:
      status = Call<v1::GetRequest, v1::GetResponse>(
          data, size, &context, [&](auto... a) { return service.Get(a...); }, &keys);
      break;
    case 2:
      status = Call<v1::AddRequest, v1::AddResponse>(
          data, size, &context, [&](auto... a) { return service.Add(a...); }, &keys);
      break;
    case 3:
      status = Call<v1::CompareSetRequest, v1::CompareSetResponse>(
          data, size, &context, [&](auto... a) { return service.CompareSet(a...); }, &keys);
      break;
    case 4:
      status = Call<v1::WaitRequest, v1::WaitResponse>(
          data, size, &context, [&](auto... a) { return service.Wait(a...); }, &keys);
      break;
    default:
      status = Call<v1::DeleteRequest, v1::DeleteResponse>(
          data, size, &context, [&](auto... a) { return service.Delete(a...); }, &keys);
      break;
  }
  if (!status.ok()) return 0;
  bool allowed = credential == 1;
  for (const std::string& key : keys) {
    allowed = allowed && !key.empty() && key.size() <= S::kMaxKeyBytes &&
              StoreCredentials::InScope(*scope, key);
  }
  if (!allowed) {
    std::fprintf(stderr, "a StoreService call succeeded without the right credential or scope\n");
    std::abort();
  }
  return 0;
}
