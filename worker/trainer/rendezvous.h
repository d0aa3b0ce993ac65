// Where the ranks of a job meet: the rendezvous store their communicators are built through.
//
//   kNone        one rank: no store, no group
//   kTcp         `dstrain launch` serves a TCP store (worker/store/tcp_store.h) at host:port
//   kCoordinator service mode: the coordinator's StoreService at `address` (HOST:PORT)
//
// Every key goes under `prefix` when it is set (service mode: one prefix per job attempt, so a
// restarted attempt never reads a dead one's addresses).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/store/store.h"

namespace dstrain::trainer {

struct Rendezvous {
  enum class Kind { kNone, kTcp, kCoordinator };
  Kind kind = Kind::kNone;
  std::string host;     // kTcp
  int port = 0;         // kTcp
  std::string address;  // kCoordinator: HOST:PORT
  std::string prefix;   // scopes every key; empty: none
  std::string token;    // kCoordinator: the attempt's store credential for `prefix`

  // The command line's spelling (`--store`): "" (none), "HOST:PORT" (a TCP store) or
  // "grpc://HOST:PORT" (the coordinator). kInvalidArgument naming --store otherwise.
  static absl::StatusOr<Rendezvous> Parse(absl::string_view flag, std::string prefix = "");
  // "tcp://HOST:PORT", "grpc://HOST:PORT" or "none", with "/PREFIX" when scoped.
  std::string DebugString() const;
};

// A connection to a rendezvous store, seen through its prefix.
struct ConnectedStore {
  std::unique_ptr<store::Store> base;
  std::unique_ptr<store::Store> scoped;  // `base` under the prefix, when there is one
  store::Store* get() const { return scoped != nullptr ? scoped.get() : base.get(); }
};

// Connects to the store of `rendezvous` (a TCP store: retrying within `timeout`).
// kInvalidArgument for kNone.
absl::StatusOr<ConnectedStore> ConnectStore(const Rendezvous& rendezvous, absl::Duration timeout);

}  // namespace dstrain::trainer
