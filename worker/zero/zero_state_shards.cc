// ZeroState's checkpoint shards: what a rank saves, loads and stores when resharding
// (zero_state.h, "checkpoint shards"; docs/checkpoints.md).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/zero/zero_state.h"

namespace dstrain::zero {

using tensor::MemoryCategory;
using tensor::Tensor;
using tensor::View;

// The shard header: what must match for the bytes after it to mean the same thing.
struct ShardHeader {
  char magic[8] = {'d', 's', 'z', 'e', 'r', 'o', '0', '1'};
  int32_t stage = 0, world = 0, rank = 0, storage = 0;
  int64_t layout_total = 0, owned_total = 0, units = 0;
};

namespace {

ShardHeader MakeHeader(int stage, const Partition& p, DType storage, int64_t layout_total) {
  ShardHeader h;
  h.stage = stage;
  h.world = p.world();
  h.rank = p.rank();
  h.storage = static_cast<int32_t>(storage);
  h.layout_total = layout_total;
  h.owned_total = p.owned_total();
  h.units = static_cast<int64_t>(p.units().size());
  return h;
}

}  // namespace

absl::StatusOr<env::ChunkSource> ZeroState::ShardChunks(std::string* head) {
  if (!Idle()) return absl::FailedPreconditionError("checkpoint shard: only between steps");
  const ShardHeader h = MakeHeader(config_.stage, partition_, storage_, layout_.total());
  head->append(reinterpret_cast<const char*>(&h), sizeof(h));
  const int64_t n = partition_.owned_total();
  // Parameters: this rank's chunks in unit order (mixed: the fp32 master weights), then m, v.
  if (home_ != nullptr || param_swap_ != nullptr) return SwappedShardChunks();
  std::vector<View> views;
  if (mixed()) {
    views.push_back(master_.view());
  } else {
    for (const Unit& unit : partition_.units()) {
      views.push_back(params_.view().Sub(ParamChunk(unit), unit.chunk));
    }
  }
  views.push_back(exp_avg_.view().Sub(0, n));
  views.push_back(exp_avg_sq_.view().Sub(0, n));
  DT_ASSIGN_OR_RETURN(std::vector<absl::string_view> pieces, HostPieces(views));
  return env::PiecesSource(std::move(pieces));
}

absl::StatusOr<std::vector<absl::string_view>> ZeroState::HostPieces(
    const std::vector<View>& views) {
  auto on_host = [&](const View& v) { return ops_->host_accessible() || v.device().is_cpu(); };
  size_t staged = 0;
  for (const View& v : views) staged += on_host(v) ? 0 : v.bytes();
  host_staging_.resize(staged);
  std::vector<absl::string_view> pieces;
  size_t at = 0;
  for (const View& v : views) {
    if (on_host(v)) {
      pieces.emplace_back(static_cast<const char*>(v.data()), v.bytes());
      continue;
    }
    ops_->CopyToHost(host_staging_.data() + at, v);
    pieces.emplace_back(host_staging_.data() + at, v.bytes());
    at += v.bytes();
  }
  DT_RETURN_IF_ERROR(ops_->status());
  return pieces;
}

absl::Status ZeroState::LoadShard(env::ByteSource& shard) {
  const ShardHeader want = MakeHeader(config_.stage, partition_, storage_, layout_.total());
  const int64_t n = partition_.owned_total();
  if (shard.remaining() != sizeof(ShardHeader) + 12 * static_cast<uint64_t>(n)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard has ", shard.remaining(), " bytes, expected ", sizeof(ShardHeader) + 12 * n));
  }
  ShardHeader got;
  DT_RETURN_IF_ERROR(shard.Read(&got, sizeof(got)));
  if (std::memcmp(got.magic, want.magic, sizeof(got.magic)) != 0) {
    return absl::FailedPreconditionError("not a ZeRO state shard (bad magic)");
  }
  if (got.stage != want.stage || got.world != want.world || got.rank != want.rank ||
      got.storage != want.storage || got.layout_total != want.layout_total ||
      got.units != want.units) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard written at stage ", got.stage, ", rank ", got.rank, " of ", got.world, ", storage ",
        DTypeName(static_cast<DType>(got.storage)), " cannot load into stage ", want.stage,
        ", rank ", want.rank, " of ", want.world, ", storage ", DTypeName(storage_),
        " (LoadCheckpoint reshards such a checkpoint)"));
  }
  DropGathered();  // stale: the parameters change
  // Host-resident parameters may still feed a gather's queued copy (Stage3::StartGather).
  if (params_on_host_) DT_RETURN_IF_ERROR(ops_->Synchronize());
  // The next v.bytes() of the shard into v: straight into device memory the host can reach.
  auto read = [&](const View& v) -> absl::Status {
    if (ops_->host_accessible() || v.device().is_cpu()) return shard.Read(v.data(), v.bytes());
    host_staging_.resize(v.bytes());
    DT_RETURN_IF_ERROR(shard.Read(host_staging_.data(), v.bytes()));
    ops_->CopyFromHost(v, host_staging_.data());
    return ops_->status();
  };
  if (mixed()) {
    DT_RETURN_IF_ERROR(SourceToState(shard, 0, 0, n));
    DT_RETURN_IF_ERROR(ParamsFromMaster());
  } else if (param_swap_ != nullptr) {
    DT_RETURN_IF_ERROR(ParamsFromSource(shard, 0, n));  // stage 3: the chunks are the owned space
  } else {
    for (const Unit& unit : partition_.units()) {
      DT_RETURN_IF_ERROR(read(params_.view().Sub(ParamChunk(unit), unit.chunk)));
    }
  }
  DT_RETURN_IF_ERROR(SourceToState(shard, 1, 0, n));
  DT_RETURN_IF_ERROR(SourceToState(shard, 2, 0, n));
  ops_->Fill(grads_.view(), 0.f);
  return ops_->status();
}

absl::StatusOr<ZeroState::ShardLayout> ZeroState::ReadShardHeader(const model::ParamLayout& layout,
                                                                  env::ByteSource& shard,
                                                                  int64_t reduce_bucket_size) {
  ShardHeader h;
  if (shard.remaining() < sizeof(h)) return absl::DataLossError("ZeRO shard: truncated header");
  DT_RETURN_IF_ERROR(shard.Read(&h, sizeof(h)));
  if (std::memcmp(h.magic, ShardHeader().magic, sizeof(h.magic)) != 0) {
    return absl::DataLossError("not a ZeRO state shard (bad magic)");
  }
  if (h.layout_total != layout.total()) {
    return absl::FailedPreconditionError(absl::StrCat("shard of a model with ", h.layout_total,
                                                      " floats; this model has ", layout.total()));
  }
  const DType storage = static_cast<DType>(h.storage);
  if (h.stage < 0 || h.stage > 3 || h.world <= 0 || h.rank < 0 || h.rank >= h.world ||
      (storage != DType::kF32 && storage != DType::kBF16 && storage != DType::kF16)) {
    return absl::DataLossError(absl::StrCat("ZeRO shard: bad header (stage ", h.stage, ", rank ",
                                            h.rank, " of ", h.world, ", storage ", h.storage, ")"));
  }
  ShardLayout out{h.stage, storage,
                  Partition::ForStage(layout, h.stage, h.world, h.rank, reduce_bucket_size)};
  const int64_t n = out.partition.owned_total();
  if (n != h.owned_total || static_cast<int64_t>(out.partition.units().size()) != h.units ||
      shard.remaining() != 12 * static_cast<uint64_t>(n)) {
    return absl::DataLossError(
        absl::StrCat("shard of rank ", h.rank, " of ", h.world, " at stage ", h.stage,
                     " does not match the partition its writer used (reduce_bucket_size ",
                     reduce_bucket_size, ")"));
  }
  return out;
}

absl::Status ZeroState::BeginStoreOwned() {
  if (!Idle()) return absl::FailedPreconditionError("loading a checkpoint: only between steps");
  DropGathered();  // stale: the parameters change
  store_pieces_ = partition_.OwnedPieces();
  // Zero first: padding (and, stages 1-2, the chunks other ranks own until the gather) stays 0.
  DT_RETURN_IF_ERROR(ZeroParams());
  ops_->Fill(grads_.view(), 0.f);
  if (device_state_ > 0) {
    if (mixed()) ops_->Fill(master_.view(), 0.f);
    ops_->Fill(exp_avg_.view(), 0.f);
    ops_->Fill(exp_avg_sq_.view(), 0.f);
  }
  DT_RETURN_IF_ERROR(ops_->status());
  return home_ != nullptr ? home_->Zero() : absl::OkStatus();
}

absl::Status ZeroState::StoreOwned(int array, int64_t flat, int64_t count,
                                   env::ByteSource& source) {
  if (count == 0) return absl::OkStatus();
  // The last piece starting at or before `flat` (an empty piece shares its flat with the next).
  const auto next = std::upper_bound(store_pieces_.begin(), store_pieces_.end(), flat,
                                     [](int64_t f, const Piece& p) { return f < p.flat; });
  if (array < 0 || array > 2 || count < 0 || next == store_pieces_.begin() ||
      flat + count > std::prev(next)->flat + std::prev(next)->count) {
    return absl::InternalError(absl::StrCat("StoreOwned: array ", array, ", floats [", flat, ", ",
                                            flat + count, ") are not within this rank's share"));
  }
  const Piece& piece = *std::prev(next);
  const Unit& unit = partition_.units()[std::prev(next) - store_pieces_.begin()];
  const int64_t into = flat - piece.flat;
  if (array > 0 || mixed()) return SourceToState(source, array, piece.at + into, count);
  if (param_swap_ != nullptr) return ParamsFromSource(source, ParamChunk(unit) + into, count);
  return ReadIntoView(source, params_.view().Sub(ParamChunk(unit) + into, count));
}

absl::Status ZeroState::ReadIntoView(env::ByteSource& source, const View& dst) {
  const int64_t count = dst.numel();
  if (ops_->host_accessible() || dst.device().is_cpu()) return source.Read(dst.data(), dst.bytes());
  std::vector<float> staging(std::min(count, kStoreStagingFloats));
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min<int64_t>(count - done, staging.size());
    DT_RETURN_IF_ERROR(source.Read(staging.data(), n * sizeof(float)));
    ops_->CopyFromHost(dst.Sub(done, n), staging.data());
    DT_RETURN_IF_ERROR(ops_->status());
    done += n;
  }
  return absl::OkStatus();
}

absl::Status ZeroState::FinishStoreOwned() {
  store_pieces_ = {};
  // The 16-bit working copy of this rank's chunks is the rounding of its master weights.
  if (mixed()) return ParamsFromMaster();
  return ops_->status();
}

absl::Status ZeroState::SourceToState(env::ByteSource& source, int which, int64_t at, int64_t n) {
  const int64_t on_device = std::clamp(device_state_ - at, int64_t{0}, n);
  if (on_device > 0) {
    DT_RETURN_IF_ERROR(ReadIntoView(source, DeviceState(which).Sub(at, on_device)));
  }
  if (on_device == n) return absl::OkStatus();
  return SwapInFrom(source, which, at + on_device - device_state_, n - on_device);
}

// Offload: the state goes through host memory in pieces of at most kStoreStagingFloats.
absl::Status ZeroState::SwapInFrom(env::ByteSource& source, int which, int64_t at, int64_t n) {
  std::vector<float> staging(std::min(n, kStoreStagingFloats));
  for (int64_t done = 0; done < n;) {
    const int64_t len = std::min<int64_t>(n - done, staging.size());
    DT_RETURN_IF_ERROR(source.Read(staging.data(), len * sizeof(float)));
    DT_RETURN_IF_ERROR(home_->WriteRange(SwapArray(which), at + done, len, staging.data()));
    done += len;
  }
  return absl::OkStatus();
}

// Offload: the shard's arrays come out of their home a piece at a time (from NVMe through the
// swap's own buffer; docs/offload.md, "Checkpoints"), so a save holds no more of the optimizer
// state in memory than the training does. What the device holds (fp32: the parameters; partial
// offload: the first device_state_ floats of each optimizer array) goes first, through the host
// on a GPU rank.
absl::StatusOr<env::ChunkSource> ZeroState::SwappedShardChunks() {
  const int64_t n = partition_.owned_total();
  const int first_array = mixed() ? 0 : 1;
  std::vector<View> views;
  if (!mixed() && param_swap_ == nullptr) {
    for (const Unit& unit : partition_.units()) {
      views.push_back(params_.view().Sub(ParamChunk(unit), unit.chunk));
    }
  }
  const size_t param_views = views.size();
  if (device_state_ > 0) {
    for (int a = first_array; a <= 2; ++a) views.push_back(DeviceState(a));
  }
  DT_ASSIGN_OR_RETURN(const std::vector<absl::string_view> staged, HostPieces(views));
  struct Cursor {
    env::ChunkSource params;
    bool params_done = false;
    std::vector<absl::string_view> device_parts;  // by array, from first_array
    int which;  // the optimizer array being read: 0 (mixed: master), 1 (m), 2 (v); 3: done
    int64_t at = 0;
  };
  env::ChunkSource params = env::PiecesSource(
      std::vector<absl::string_view>(staged.begin(), staged.begin() + param_views));
  if (!mixed() && param_swap_ != nullptr) {
    // fp32 parameters on NVMe (stage 3: the owned space in order), a piece at a time.
    auto staging = std::make_shared<std::vector<char>>(std::min(n, kStoreStagingFloats) * 4);
    auto next = std::make_shared<int64_t>(0);
    params = [this, n, staging, next]() -> absl::StatusOr<absl::string_view> {
      const int64_t len = std::min(n - *next, kStoreStagingFloats);
      if (len == 0) return absl::string_view();
      DT_RETURN_IF_ERROR(param_swap_->ReadRange(*next, len, staging->data()));
      *next += len;
      return absl::string_view(staging->data(), len * 4);
    };
  }
  auto cursor = std::make_shared<Cursor>(Cursor{
      std::move(params), false,
      std::vector<absl::string_view>(staged.begin() + param_views, staged.end()), first_array});
  return [this, n, first_array, cursor]() -> absl::StatusOr<absl::string_view> {
    if (!cursor->params_done) {
      DT_ASSIGN_OR_RETURN(const absl::string_view piece, cursor->params());
      if (!piece.empty()) return piece;
      cursor->params_done = true;
    }
    while (cursor->which <= 2 && cursor->at == n) {
      ++cursor->which;
      cursor->at = 0;
    }
    if (cursor->which > 2) return absl::string_view();
    if (cursor->at < device_state_) {
      cursor->at = device_state_;
      return cursor->device_parts[cursor->which - first_array];
    }
    DT_ASSIGN_OR_RETURN(
        const absl::Span<const float> chunk,
        home_->ReadChunk(SwapArray(cursor->which), cursor->at - device_state_, n - cursor->at));
    cursor->at += static_cast<int64_t>(chunk.size());
    return absl::string_view(reinterpret_cast<const char*>(chunk.data()),
                             chunk.size() * sizeof(float));
  };
}

}  // namespace dstrain::zero
