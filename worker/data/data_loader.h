// Training data for causal language models: a token source and a deterministic, rank-aware loader.
//
// DataSource is the corpus: either a glob(3) pattern of llm.c token shards, each memory-mapped, or
// a `.txt` file, read and byte-tokenized in memory at open (handy for small corpora; no prepare
// step). It is a list of parts (one per shard, or one for the text) that windows never straddle:
// a shard is a document boundary, and a sequence spanning two would teach nothing true.
//
// DataLoader cuts every part into windows of T+1 tokens at stride T — window w of a part covers
// tokens [w*T, w*T + T], so consecutive windows share their boundary token and every token after
// the first is a target exactly once per epoch. (Stride T rather than T+1 is llm.c's reading: its
// batch is B*T+1 consecutive tokens, inputs the first B*T, targets the last B*T. Unshuffled, world
// 1, this loader yields exactly llm.c's batches.) A part of n tokens has floor((n-1)/T) windows;
// the tail after the last window is unused.
//
// An epoch is an order of all windows of all parts: the identity when unshuffled, else a
// Fisher-Yates permutation seeded by (seed, epoch) with shuffle.h's portable generator — the same
// on every rank, machine and standard library. Global batch g of an epoch is the windows at
// positions [g*B*world, (g+1)*B*world) of the order, and rank r takes the contiguous B of them at
// [g*B*world + r*B, g*B*world + (r+1)*B). So the union over ranks of a global batch depends only on
// B*world: N processes with micro batch B see exactly the sequences one process with micro batch
// N*B sees, which is what makes data-parallel training equal single-process training. When fewer
// than B*world windows remain in the order the epoch ends and they are skipped (drop-last; each
// epoch's permutation drops different ones). Row b of a batch is window order[...+b]: inputs are
// its first T tokens, targets its last T, widened to int32.
//
// Position for checkpoints is LoaderState {epoch, index}, index counting the windows of the epoch's
// order already consumed by all ranks together (not batches), so a state restores onto a different
// world size or micro batch: a job resharded from 4 ranks x B=8 to 2 ranks x B=8 x 2 accumulation
// steps resumes at the same sequence.
//
// Memory: a shuffled loader holds its epoch's order, 8 bytes per window (e.g. 80 MB for 10 B
// tokens at T=1024); the tokens stay in the page cache / mapping.
//
// Thread-safety: a DataSource is immutable after Open and may be shared by any number of loaders
// and threads. A DataLoader is not thread-safe: one per thread, or synchronise externally.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/data/token_shard.h"

namespace dstrain::data {

class DataSource {
 public:
  // `pattern_or_txt_path` ending in ".txt" is a text file, byte-tokenized (ByteTokenizer) into
  // memory. Anything else is a shard pattern for ExpandShardPattern: each matching shard is mapped
  // with `hint` and validated (token_shard.h errors, naming the file). InvalidArgument when the
  // source holds no tokens at all.
  static absl::StatusOr<std::shared_ptr<const DataSource>> Open(
      const std::string& pattern_or_txt_path, AccessHint hint = AccessHint::kRandom);

  // An in-memory source of one part, for tests and generated data.
  static std::shared_ptr<const DataSource> FromTokens(std::string name,
                                                      std::vector<uint16_t> tokens);

  // What it was opened from (pattern, path or FromTokens name), for messages.
  const std::string& name() const { return name_; }
  size_t num_parts() const { return parts_.size(); }
  absl::Span<const uint16_t> part(size_t i) const { return parts_[i].tokens; }
  // The shard path, or the text path / FromTokens name.
  const std::string& part_name(size_t i) const { return parts_[i].name; }
  uint64_t num_tokens() const { return num_tokens_; }

  // The largest token id in the source (0 when empty). Reads every token: O(num_tokens()).
  uint16_t MaxToken() const;
  // InvalidArgument naming the first part holding a token >= vocab_size, the token and its index;
  // a model would index past its embedding table with it. Reads every token.
  absl::Status CheckVocab(int64_t vocab_size) const;

  DataSource(const DataSource&) = delete;
  DataSource& operator=(const DataSource&) = delete;

 private:
  struct Part {
    std::string name;
    absl::Span<const uint16_t> tokens;
  };
  explicit DataSource(std::string name) : name_(std::move(name)) {}
  void AddPart(std::string part_name, absl::Span<const uint16_t> tokens);

  std::string name_;
  std::vector<TokenShard> shards_;  // owns the mappings parts_ point into
  std::vector<uint16_t> owned_;     // owns the tokens of a text or FromTokens source
  std::vector<Part> parts_;
  uint64_t num_tokens_ = 0;
};

struct DataLoaderOptions {
  int64_t batch_size = 0;  // B: sequences per rank per NextBatch, >= 1
  int64_t seq_len = 0;     // T: tokens per sequence, >= 1
  int rank = 0;            // this process's data-parallel rank, in [0, world_size)
  int world_size = 1;      // data-parallel ranks
  uint64_t seed = 0;       // same on every rank
  bool shuffle = true;     // false: windows in file order, every epoch the same
};

// A position in the stream of global batches.
struct LoaderState {
  uint64_t epoch = 0;
  // Windows of this epoch's order consumed by all ranks together; always a position from which a
  // whole global batch still fits (the loader moves to the next epoch otherwise).
  uint64_t index = 0;

  friend bool operator==(const LoaderState& a, const LoaderState& b) {
    return a.epoch == b.epoch && a.index == b.index;
  }
  friend bool operator!=(const LoaderState& a, const LoaderState& b) { return !(a == b); }
};

class DataLoader {
 public:
  // InvalidArgument for options out of range, or a source with fewer windows of T+1 tokens than
  // one global batch (B * world_size) needs.
  static absl::StatusOr<DataLoader> Create(std::shared_ptr<const DataSource> source,
                                           const DataLoaderOptions& options);

  DataLoader(DataLoader&&) = default;
  DataLoader& operator=(DataLoader&&) = default;

  // Fills inputs and targets, each B*T int32 in row-major (B, T) order, with this rank's slice of
  // the next global batch; targets[b][t] = inputs[b][t+1] within the window. Moves to the next
  // epoch by itself.
  void NextBatch(int32_t* inputs, int32_t* targets);

  // The position of the next batch.
  LoaderState State() const { return state_; }
  // Continues from `state` (from State() of a loader on the same data, T and seed; its B and
  // world_size may differ). InvalidArgument when state.index exceeds this data's window count.
  absl::Status Restore(const LoaderState& state);
  // Back to {0, 0}: a validation loader calls it before each evaluation to score the same batches.
  void Reset() { state_ = LoaderState{}; }

  const DataLoaderOptions& options() const { return options_; }
  const DataSource& source() const { return *source_; }
  // Windows of T+1 tokens in the whole source.
  uint64_t num_windows() const { return num_windows_; }
  // Global batches per epoch: num_windows() / (B * world_size).
  uint64_t batches_per_epoch() const { return num_windows_ / global_windows_; }

 private:
  DataLoader(std::shared_ptr<const DataSource> source, const DataLoaderOptions& options);
  // Makes order_ the order of state_.epoch (lazily: Restore and rollover only move state_).
  void EnsureOrder();
  // Points at the first token of window `w` (an index into the whole source).
  const uint16_t* WindowStart(uint64_t w) const;
  // Moves to the next epoch when a whole global batch no longer fits in this one.
  void NormalizeState();

  std::shared_ptr<const DataSource> source_;
  DataLoaderOptions options_;
  uint64_t global_windows_ = 0;  // B * world_size
  uint64_t num_windows_ = 0;
  std::vector<uint64_t> part_first_window_;  // size num_parts + 1; prefix sums of window counts
  LoaderState state_;
  std::vector<uint64_t> order_;  // shuffled only: the permutation of order_epoch_
  uint64_t order_epoch_ = 0;
  bool order_valid_ = false;
};

}  // namespace dstrain::data
