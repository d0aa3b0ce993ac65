// The DurableStore's log in the coordinator's `kv` table (synced writes).
#pragma once

#include "coordinator/state/state.h"
#include "coordinator/store/durable_store.h"

namespace dstrain::coordinator {

class StateKvLog final : public KvLog {
 public:
  explicit StateKvLog(CoordinatorState* state) : state_(state) {}
  absl::Status Put(absl::string_view key, absl::string_view value) override {
    return state_->KvPut(key, value);
  }
  absl::Status Delete(absl::string_view key) override { return state_->KvDelete(key); }

 private:
  CoordinatorState* const state_;
};

}  // namespace dstrain::coordinator
