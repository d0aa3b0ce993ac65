// ByteSource: bytes consumed in order into the caller's memory, from a string or a file. Loaders of
// large state (checkpoint shards of hundreds of MB) read through it so the bytes land once, in
// their final place, whether they come from memory or straight from disk.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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
  // Moves past the next `n` bytes (kDataLoss when fewer are left), for loaders that need only some
  // ranges of a source. This default reads them in bounded pieces and discards them.
  virtual absl::Status Skip(uint64_t n) {
    if (n > remaining()) {
      return absl::DataLossError(
          absl::StrCat("truncated: skipping ", n, " bytes, ", remaining(), " left"));
    }
    std::vector<char> scratch(std::min<uint64_t>(n, uint64_t{1} << 20));
    while (n > 0) {
      const size_t step = std::min<uint64_t>(n, scratch.size());
      absl::Status read = Read(scratch.data(), step);
      if (!read.ok()) return read;
      n -= step;
    }
    return absl::OkStatus();
  }
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
  absl::Status Skip(uint64_t n) override {
    if (n > data_.size()) {
      return absl::DataLossError(
          absl::StrCat("truncated: skipping ", n, " bytes, ", data_.size(), " left"));
    }
    data_.remove_prefix(n);
    return absl::OkStatus();
  }

 private:
  absl::string_view data_;
};

// ChunkSource: bytes produced in order, chunk by chunk, for writers of state too large to hold in
// memory at once (a checkpoint of optimizer state that lives on NVMe). Each call returns the next
// chunk, valid until the next call; an empty chunk ends the stream.
using ChunkSource = std::function<absl::StatusOr<absl::string_view>()>;

// The non-empty `pieces` one after the other; the memory they point to must outlive the source.
inline ChunkSource PiecesSource(std::vector<absl::string_view> pieces) {
  auto next = std::make_shared<size_t>(0);
  return [pieces = std::move(pieces), next]() -> absl::StatusOr<absl::string_view> {
    while (*next < pieces.size() && pieces[*next].empty()) ++*next;
    if (*next == pieces.size()) return absl::string_view();
    return pieces[(*next)++];
  };
}

}  // namespace dstrain::env
