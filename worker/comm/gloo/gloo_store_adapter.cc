#include "worker/comm/gloo/gloo_store_adapter.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "gloo/common/error.h"

namespace dstrain::comm {

GlooStoreAdapter::GlooStoreAdapter(dstrain::store::Store* store, absl::Duration timeout)
    : store_(store), timeout_(timeout) {}

void GlooStoreAdapter::Throw(absl::Status status) {
  std::string message = status.ToString();
  {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) error_ = std::move(status);
  }
  throw gloo::IoException(message);
}

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  absl::Status s = store_->Set(key, absl::string_view(data.data(), data.size()));
  if (!s.ok()) Throw(std::move(s));
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  absl::StatusOr<std::string> value = store_->Get(key, timeout_);
  if (!value.ok()) Throw(value.status());
  return std::vector<char>(value->begin(), value->end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys) {
  wait(keys, std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout_)));
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // Gloo passes its context timeout; never wait longer than the adapter's own.
  const absl::Duration t = std::min(absl::Milliseconds(timeout.count()), timeout_);
  absl::Status s = store_->Wait(keys, t);
  if (!s.ok()) Throw(std::move(s));
}

absl::Status GlooStoreAdapter::error() const {
  absl::MutexLock lock(&mu_);
  return error_;
}

}  // namespace dstrain::comm
