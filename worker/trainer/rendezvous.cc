#include "worker/trainer/rendezvous.h"

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status/status_macros.h"
#include "common/tls/tls.h"
#include "worker/store/grpc_store.h"
#include "worker/store/prefix_store.h"
#include "worker/store/tcp_store.h"

namespace dstrain::trainer {

absl::StatusOr<Rendezvous> Rendezvous::Parse(absl::string_view flag, std::string prefix) {
  Rendezvous r;
  r.prefix = std::move(prefix);
  if (flag.empty()) return r;
  if (absl::ConsumePrefix(&flag, "grpc://")) {
    if (flag.empty()) return absl::InvalidArgumentError("--store: grpc:// needs HOST:PORT");
    r.kind = Kind::kCoordinator;
    r.address = std::string(flag);
    return r;
  }
  const size_t colon = flag.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(flag.substr(colon + 1), &r.port) || r.port <= 0 || r.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--store: expected HOST:PORT or grpc://HOST:PORT, got '", flag, "'"));
  }
  r.kind = Kind::kTcp;
  r.host = std::string(flag.substr(0, colon));
  return r;
}

std::string Rendezvous::DebugString() const {
  std::string s = kind == Kind::kTcp           ? absl::StrCat("tcp://", host, ":", port)
                  : kind == Kind::kCoordinator ? absl::StrCat("grpc://", address)
                                               : "none";
  if (!prefix.empty()) absl::StrAppend(&s, "/", prefix);
  return s;
}

absl::StatusOr<ConnectedStore> ConnectStore(const Rendezvous& r, absl::Duration timeout) {
  ConnectedStore out;
  std::unique_ptr<store::Store>& base = out.base;
  switch (r.kind) {
    case Rendezvous::Kind::kNone:
      return absl::InvalidArgumentError("no rendezvous store to connect to");
    case Rendezvous::Kind::kCoordinator: {
      // As the worker that started this trainer (its certificate, from the environment).
      DT_ASSIGN_OR_RETURN(tls::TlsConfig tls,
                          tls::ConfigFromProcessEnvironment(tls::Role::kClient));
      DT_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                          tls::ChannelCredentials(tls));
      base = store::GrpcStore::Connect(r.address, std::move(credentials),
                                       store::StoreCredential{r.prefix, r.token});
      break;
    }
    case Rendezvous::Kind::kTcp: {
      DT_ASSIGN_OR_RETURN(std::unique_ptr<store::TcpStoreClient> client,
                          store::TcpStoreClient::Connect(r.host, r.port, timeout));
      base = std::move(client);
      break;
    }
  }
  if (!r.prefix.empty()) out.scoped = std::make_unique<store::PrefixStore>(r.prefix, base.get());
  return out;
}

}  // namespace dstrain::trainer
