#include "worker/data/data_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/data/byte_tokenizer.h"
#include "worker/data/shuffle.h"

namespace dstrain::data {
namespace {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open text ", path));
  std::string text;
  absl::Status status;
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) text.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      status = absl::ErrnoToStatus(errno, absl::StrCat("read text ", path));
      break;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!status.ok()) return status;
  return text;
}

}  // namespace

void DataSource::AddPart(std::string part_name, absl::Span<const uint16_t> tokens) {
  num_tokens_ += tokens.size();
  parts_.push_back(Part{std::move(part_name), tokens});
}

absl::StatusOr<std::shared_ptr<const DataSource>> DataSource::Open(
    const std::string& pattern_or_txt_path, AccessHint hint) {
  std::shared_ptr<DataSource> source(new DataSource(pattern_or_txt_path));
  if (absl::EndsWith(pattern_or_txt_path, ".txt")) {
    DT_ASSIGN_OR_RETURN(const std::string text, ReadTextFile(pattern_or_txt_path));
    source->owned_ = ByteTokenizer::Encode(text);
    source->AddPart(pattern_or_txt_path, source->owned_);
  } else {
    DT_ASSIGN_OR_RETURN(const std::vector<std::string> paths,
                        ExpandShardPattern(pattern_or_txt_path));
    source->shards_.reserve(paths.size());
    for (const std::string& path : paths) {
      DT_ASSIGN_OR_RETURN(TokenShard shard, TokenShard::Open(path, hint));
      source->shards_.push_back(std::move(shard));
    }
    // Only now: shards_ no longer reallocates, though the spans point into the mappings anyway.
    for (const TokenShard& shard : source->shards_) source->AddPart(shard.path(), shard.tokens());
  }
  if (source->num_tokens_ == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data source ", pattern_or_txt_path, " holds no tokens"));
  }
  return std::shared_ptr<const DataSource>(std::move(source));
}

std::shared_ptr<const DataSource> DataSource::FromTokens(std::string name,
                                                         std::vector<uint16_t> tokens) {
  std::shared_ptr<DataSource> source(new DataSource(name));
  source->owned_ = std::move(tokens);
  source->AddPart(std::move(name), source->owned_);
  return source;
}

uint16_t DataSource::MaxToken() const {
  uint16_t max_token = 0;
  for (const Part& p : parts_) {
    for (uint16_t t : p.tokens) max_token = std::max(max_token, t);
  }
  return max_token;
}

absl::Status DataSource::CheckVocab(int64_t vocab_size) const {
  for (const Part& p : parts_) {
    for (size_t i = 0; i < p.tokens.size(); ++i) {
      if (p.tokens[i] >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(p.name, " holds token ", p.tokens[i], " at index ", i,
                         ", outside the model's vocab_size ", vocab_size));
      }
    }
  }
  return absl::OkStatus();
}

DataLoader::DataLoader(std::shared_ptr<const DataSource> source, const DataLoaderOptions& options)
    : source_(std::move(source)), options_(options) {}

absl::StatusOr<DataLoader> DataLoader::Create(std::shared_ptr<const DataSource> source,
                                              const DataLoaderOptions& options) {
  if (source == nullptr) return absl::InvalidArgumentError("data loader needs a data source");
  // Bounds keep every product below (B * world, B * T, window * T) far from uint64 overflow.
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (options.batch_size < 1 || options.batch_size > kMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be in [1, ", kMax, "], got ", options.batch_size));
  }
  if (options.seq_len < 1 || options.seq_len > kMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("seq_len must be in [1, ", kMax, "], got ", options.seq_len));
  }
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size must be >= 1, got ", options.world_size));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is outside [0, ", options.world_size, ")"));
  }

  DataLoader loader(std::move(source), options);
  const DataSource& src = *loader.source_;
  const uint64_t T = static_cast<uint64_t>(options.seq_len);
  loader.global_windows_ =
      static_cast<uint64_t>(options.batch_size) * static_cast<uint64_t>(options.world_size);
  loader.part_first_window_.reserve(src.num_parts() + 1);
  loader.part_first_window_.push_back(0);
  for (size_t i = 0; i < src.num_parts(); ++i) {
    const uint64_t n = src.part(i).size();
    const uint64_t windows = n == 0 ? 0 : (n - 1) / T;
    loader.num_windows_ += windows;
    loader.part_first_window_.push_back(loader.num_windows_);
  }
  if (loader.num_windows_ < loader.global_windows_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data source ", src.name(), " is too small: its ", src.num_tokens(), " tokens in ",
        src.num_parts(), " part(s) make ", loader.num_windows_, " windows of seq_len+1 = ", T + 1,
        " tokens (windows do not cross parts), but one global batch needs batch_size ",
        options.batch_size, " x world_size ", options.world_size, " = ", loader.global_windows_));
  }
  return loader;
}

const uint16_t* DataLoader::WindowStart(uint64_t w) const {
  // The part holding window w: the last part whose first window is <= w. Parts with no windows
  // repeat their successor's entry, and upper_bound skips past them.
  const auto it = std::upper_bound(part_first_window_.begin(), part_first_window_.end(), w);
  const size_t part = static_cast<size_t>(it - part_first_window_.begin()) - 1;
  const uint64_t local = w - part_first_window_[part];
  return source_->part(part).data() + local * static_cast<uint64_t>(options_.seq_len);
}

void DataLoader::EnsureOrder() {
  if (!options_.shuffle || (order_valid_ && order_epoch_ == state_.epoch)) return;
  order_.resize(num_windows_);
  std::iota(order_.begin(), order_.end(), uint64_t{0});
  Xoshiro256 rng(EpochSeed(options_.seed, state_.epoch));
  FisherYatesShuffle(rng, absl::MakeSpan(order_));
  order_epoch_ = state_.epoch;
  order_valid_ = true;
}

void DataLoader::NormalizeState() {
  if (num_windows_ - state_.index < global_windows_) {
    ++state_.epoch;
    state_.index = 0;
  }
}

void DataLoader::NextBatch(int32_t* inputs, int32_t* targets) {
  EnsureOrder();
  const size_t B = static_cast<size_t>(options_.batch_size);
  const size_t T = static_cast<size_t>(options_.seq_len);
  const uint64_t first = state_.index + static_cast<uint64_t>(options_.rank) * B;
  for (size_t b = 0; b < B; ++b) {
    const uint64_t pos = first + b;
    const uint16_t* window = WindowStart(options_.shuffle ? order_[pos] : pos);
    int32_t* in = inputs + b * T;
    int32_t* tg = targets + b * T;
    for (size_t t = 0; t < T; ++t) {
      in[t] = window[t];
      tg[t] = window[t + 1];
    }
  }
  state_.index += global_windows_;
  NormalizeState();
}

absl::Status DataLoader::Restore(const LoaderState& state) {
  if (state.index > num_windows_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loader state {epoch ", state.epoch, ", index ", state.index, "} is past the end of ",
        source_->name(), ", which has ", num_windows_, " windows of seq_len+1 = ",
        options_.seq_len + 1, " tokens: it was saved for other data or another seq_len"));
  }
  state_ = state;
  NormalizeState();
  return absl::OkStatus();
}

}  // namespace dstrain::data
