// ByteSource: bytes consumed in order into the caller's memory, from a string or a file. Loaders of
// large state (checkpoint shards of hundreds of MB) read through it so the bytes land once, in
// their final place, whether they come from memory or straight from disk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace dstrain::env {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Copies the next `n` bytes to `dst`; kDataLoss when fewer than `n` are left.
  virtual absl::Status Read(void* dst, size_t n) = 0;
  // Bytes not read yet.
  virtual uint64_t remaining() const = 0;
};

// A ByteSource over memory the caller keeps alive.
class StringSource final : public ByteSource {
 public:
  explicit StringSource(absl::string_view data) : data_(data) {}

  absl::Status Read(void* dst, size_t n) override {
    if (n > data_.size()) {
      return absl::DataLossError(
          absl::StrCat("truncated: ", n, " bytes wanted, ", data_.size(), " left"));
    }
    std::memcpy(dst, data_.data(), n);
    data_.remove_prefix(n);
    return absl::OkStatus();
  }
  uint64_t remaining() const override { return data_.size(); }

 private:
  absl::string_view data_;
};

}  // namespace dstrain::env
