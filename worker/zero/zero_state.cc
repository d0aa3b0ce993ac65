#include "worker/zero/zero_state.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status/status_macros.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/zero/stage0.h"
#include "worker/zero/stage3.h"
#include "worker/zero/stage_1_and_2.h"

namespace dstrain::zero {

using tensor::MemoryCategory;
using tensor::Tensor;
using tensor::View;

absl::StatusOr<std::unique_ptr<ZeroState>> ZeroState::Create(
    const model::ParamLayout& layout, const config::ZeroConfig& config, comm::Communicator* dp,
    comm::CommOptions comm, device::Ops* ops, DType storage, GradientReduction reduction,
    OffloadContext offload) {
  if (config.stage < 0 || config.stage > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("zero_optimization.stage: ", config.stage, " is not 0, 1, 2 or 3"));
  }
  if (storage != DType::kF32 && storage != DType::kBF16 && storage != DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter storage must be f32, bf16 or f16, not ", DTypeName(storage)));
  }
  if (reduction.dtype != DType::kF32 && storage != DType::kF32 && reduction.dtype != storage) {
    return absl::InvalidArgumentError(
        absl::StrCat("communication_data_type: ", DTypeName(reduction.dtype), " with ",
                     DTypeName(storage), " storage"));
  }
  reduction.accumulate = GradAccumulationDType(reduction.accumulate, storage, config.stage);
  if (*reduction.accumulate != DType::kF32 && *reduction.accumulate != storage) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_types.grad_accum_dtype: ", DTypeName(*reduction.accumulate), " with ",
                     DTypeName(storage), " storage"));
  }
  if (!(reduction.predivide > 0)) {
    return absl::InvalidArgumentError("gradient_predivide_factor: must be > 0");
  }
  const int world = dp != nullptr ? dp->size() : 1;
  const int rank = dp != nullptr ? dp->rank() : 0;
  Partition partition =
      Partition::ForStage(layout, config.stage, world, rank, config.reduce_bucket_size);
  std::unique_ptr<ZeroState> z;
  switch (config.stage) {
    case 0:
      z = std::make_unique<Stage0>(layout, config, dp, comm, ops, std::move(partition), storage,
                                   reduction);
      break;
    case 1:
    case 2:
      z = std::make_unique<Stage1And2>(layout, config, dp, comm, ops, std::move(partition), storage,
                                       reduction);
      break;
    default:
      z = std::make_unique<Stage3>(layout, config, dp, comm, ops, std::move(partition), storage,
                                   reduction);
      break;
  }
  DT_RETURN_IF_ERROR(z->Allocate(offload));
  return z;
}

absl::Status AllReduceScalar(comm::Communicator& group, device::Ops& ops,
                             tensor::Tensor* device_scalar, float* value, comm::ReduceOp op,
                             const comm::CommOptions& options) {
  return AllReduceHostFloats(group, ops, device_scalar, value, 1, op, options);
}

absl::Status AllReduceHostFloats(comm::Communicator& group, device::Ops& ops,
                                 tensor::Tensor* device_buffer, float* values, int64_t n,
                                 comm::ReduceOp op, const comm::CommOptions& options) {
  View buffer = View::Flat(values, DType::kF32, n);
  if (!ops.host_accessible()) {
    if (!device_buffer->defined() || device_buffer->numel() != n) {
      DT_ASSIGN_OR_RETURN(*device_buffer, Tensor::Empty(ops.allocator(), DType::kF32, {n},
                                                        MemoryCategory::kCommBuffers));
    }
    buffer = device_buffer->view();
    ops.CopyFromHost(buffer, values);
  }
  ops.WaitFor(device::Stream::kComm, device::Stream::kCompute);
  DT_ASSIGN_OR_RETURN(
      auto work, group.AllReduce(comm::CommBuffer{buffer.data(), n, DType::kF32, buffer.device(),
                                                  ops.NativeStream(device::Stream::kComm)},
                                 op, options));
  DT_RETURN_IF_ERROR(work->Wait());
  ops.WaitFor(device::Stream::kCompute, device::Stream::kComm);
  if (!ops.host_accessible()) ops.CopyToHost(values, buffer);
  return ops.status();
}

absl::Status AllGatherHostFloats(comm::Communicator& group, device::Ops& ops, float* all,
                                 int64_t per_rank, const comm::CommOptions& options) {
  const int64_t n = per_rank * group.size();
  View buffer = View::Flat(all, DType::kF32, n);
  Tensor staging;
  if (!ops.host_accessible()) {
    DT_ASSIGN_OR_RETURN(
        staging, Tensor::Empty(ops.allocator(), DType::kF32, {n}, MemoryCategory::kCommBuffers));
    buffer = staging.view();
    ops.CopyFromHost(buffer, all);
  }
  const View mine = buffer.Sub(per_rank * group.rank(), per_rank);
  ops.WaitFor(device::Stream::kComm, device::Stream::kCompute);
  void* stream = ops.NativeStream(device::Stream::kComm);
  DT_ASSIGN_OR_RETURN(
      auto work,
      group.AllGather(comm::CommBuffer{mine.data(), per_rank, DType::kF32, mine.device(), stream},
                      comm::CommBuffer{buffer.data(), n, DType::kF32, buffer.device(), stream},
                      options));
  DT_RETURN_IF_ERROR(work->Wait());
  ops.WaitFor(device::Stream::kCompute, device::Stream::kComm);
  if (!ops.host_accessible()) ops.CopyToHost(all, buffer);
  return ops.status();
}

ZeroState::ZeroState(const model::ParamLayout& layout, const config::ZeroConfig& config,
                     comm::Communicator* dp, comm::CommOptions comm, device::Ops* ops,
                     Partition partition, DType storage, GradientReduction reduction,
                     bool params_partitioned, bool grads_partitioned)
    : layout_(layout),
      config_(config),
      dp_(dp),
      comm_(comm),
      ops_(ops),
      partition_(std::move(partition)),
      storage_(storage),
      grads_dtype_(GradAccumulationDType(reduction.accumulate, storage, config.stage)),
      reduction_(reduction),
      params_partitioned_(params_partitioned),
      grads_partitioned_(grads_partitioned),
      modules_(layout.modules().size()) {
  // DeepSpeed's three ways to average: a plain mean, prescaling (1/N before the sum) and
  // predivision (1/f before, f/N after). The mean is one kAvg collective (the sum in f32 inside
  // the backend, divided once); the other two scale around a kSum.
  const int n = dp != nullptr ? dp->size() : 1;
  if (reduction.prescale) {
    reduce_op_ = comm::ReduceOp::kSum;
    pre_scale_ = 1.0 / n;
  } else if (reduction.predivide != 1.0) {
    reduce_op_ = comm::ReduceOp::kSum;
    pre_scale_ = 1.0 / reduction.predivide;
    post_scale_ = reduction.predivide / n;
  }
}

ZeroState::~ZeroState() {
  (void)WaitStreamedGrads();
  // Under offload_param params_ comes from own_host_, which is declared (so destroyed) after it.
  params_ = Tensor();
}

absl::Status ZeroState::Allocate(const OffloadContext& offload) {
  tensor::Allocator* a = ops_->allocator();
  const int64_t param_elems =
      params_partitioned_ ? partition_.owned_total() : partition_.padded_total();
  const int64_t grad_elems =
      grads_partitioned_ ? partition_.owned_total() : partition_.padded_total();
  const int64_t owned = partition_.owned_total();
  const config::OffloadOptimizerConfig& o = config_.offload_optimizer;
  const config::OffloadParamConfig& op = config_.offload_param;
  if (op.device != config::OffloadDevice::kNone && !params_partitioned_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "zero_optimization.offload_param.device: parameter offload needs ZeRO stage 3 (this is "
        "stage ",
        config_.stage, ")"));
  }
  // The host memory of an offload on a GPU rank, page-locked where either block asks.
  auto ensure_host = [&]() -> absl::Status {
    if (host_ != nullptr) return absl::OkStatus();
    if (offload.host != nullptr) {
      host_ = offload.host;
    } else if (o.pin_memory || op.pin_memory) {
      DT_ASSIGN_OR_RETURN(own_host_, ops_->NewPinnedHostAllocator());
      host_ = own_host_.get();
    } else {
      own_host_ = std::make_unique<tensor::CpuAllocator>();
      host_ = own_host_.get();
    }
    host_ops_ = std::make_unique<device::CpuOps>(host_);
    return absl::OkStatus();
  };
  if (op.device == config::OffloadDevice::kCpu && ops_->host_accessible()) {
    if (offload.log) {
      offload.log(
          "note: zero_optimization.offload_param.device \"cpu\": this rank computes on the CPU, "
          "its parameters are in host memory already (no copy)");
    }
  } else if (op.device == config::OffloadDevice::kCpu) {
    DT_RETURN_IF_ERROR(ensure_host());
    params_on_host_ = true;
    if (offload.log) {
      offload.log(absl::StrFormat(
          "offload: parameters in host memory (%.1f MB%s; each gather copies its chunk to the "
          "device)",
          static_cast<double>(param_elems) * DTypeSize(storage_) / 1e6,
          op.pin_memory || o.pin_memory ? ", page-locked" : ""));
    }
  }
  DT_RETURN_IF_ERROR(AllocateCommWindow(offload, param_elems));
  windows_ = UpdateWindows();  // before the swap files: the optimizer's follows this cut
  if (op.device == config::OffloadDevice::kNvme) {
    // The buffers are host memory: the rank's own on a CPU rank, else the offload's.
    if (!ops_->host_accessible()) DT_RETURN_IF_ERROR(ensure_host());
    DT_RETURN_IF_ERROR(AllocateParamSwap(offload, ops_->host_accessible() ? a : host_));
  } else {
    // Stages 1-3 gather parameters: from the shared window where there is one.
    tensor::Allocator* params_alloc = params_on_host_        ? host_
                                      : ParamsInCommWindow() ? comm_allocator()
                                                             : a;
    DT_ASSIGN_OR_RETURN(
        params_, Tensor::Zeros(params_alloc, storage_, {param_elems}, MemoryCategory::kParams));
  }
  // Stages 0-1 reduce grads_ itself unless the reduction converts it (ReductionBuffer).
  tensor::Allocator* grads_alloc =
      !grads_partitioned_ && reduction_.dtype == grads_dtype_ ? comm_allocator() : a;
  DT_ASSIGN_OR_RETURN(
      grads_, Tensor::Zeros(grads_alloc, grads_dtype_, {grad_elems}, MemoryCategory::kGrads));
  const int n_windows = static_cast<int>(windows_.size());
  bool offloaded = o.device != config::OffloadDevice::kNone;
  if (offloaded && ops_->host_accessible()) {
    host_ = ops_->allocator();  // a CPU rank's memory is host memory
  } else if (offloaded) {
    // DeepSpeed's partial offload: the first int((1 - ratio) * n) of the n sub-groups keep their
    // state on the device, the rest go to the host (ratio 1: all of them).
    first_home_window_ = FirstOffloadedWindow(n_windows, o.ratio);
    if (first_home_window_ == n_windows && n_windows > 0) {
      offloaded = false;
      first_home_window_ = 0;
      if (offload.log) {
        offload.log(absl::StrFormat(
            "note: zero_optimization.offload_optimizer.ratio %g of %d sub-groups offloads none of "
            "them; the optimizer state stays on the device",
            o.ratio, n_windows));
      }
    }
  }
  if (offloaded && !ops_->host_accessible()) {
    DT_RETURN_IF_ERROR(ensure_host());
    int64_t most = 0;
    for (int i = first_home_window_; i < n_windows; ++i) most = std::max(most, windows_[i].len);
    // Stages 2-3 reduce gradients during backward: they stream to the host as they are ready.
    stream_grads_ = grads_partitioned_;
    if (stream_grads_) {
      const int64_t home_floats =
          owned - (first_home_window_ < n_windows ? windows_[first_home_window_].owned_at : owned);
      DT_ASSIGN_OR_RETURN(host_grads_, Tensor::Empty(host_, grads_dtype_, {home_floats},
                                                     MemoryCategory::kCommBuffers));
    }
    for (int slot = 0; slot < 2; ++slot) {
      if (!stream_grads_) {
        DT_ASSIGN_OR_RETURN(host_grad_[slot], Tensor::Empty(host_, grads_dtype_, {most},
                                                            MemoryCategory::kCommBuffers));
      }
      DT_ASSIGN_OR_RETURN(host_param_[slot],
                          Tensor::Empty(host_, storage_, {most}, MemoryCategory::kCommBuffers));
    }
  }
  if (offloaded && o.device == config::OffloadDevice::kNvme) {
    DT_RETURN_IF_ERROR(AllocateSwap(offload));
  } else if (offloaded && o.device == config::OffloadDevice::kCpu && !ops_->host_accessible()) {
    DT_RETURN_IF_ERROR(AllocateHost(offload));
  } else if (offloaded && o.device == config::OffloadDevice::kCpu && offload.log) {
    offload.log(absl::StrCat(
        "note: zero_optimization.offload_optimizer.device \"cpu\": this rank computes on the CPU, "
        "its optimizer state is in host memory already (no copy",
        o.ratio != 1.0 || o.pin_memory ? "; ratio and pin_memory change nothing here" : "", ")"));
  }
  device_state_ = home_ == nullptr                 ? owned
                  : first_home_window_ < n_windows ? windows_[first_home_window_].owned_at
                                                   : owned;
  if (home_ != nullptr && device_state_ == 0) return absl::OkStatus();
  if (mixed()) {
    DT_ASSIGN_OR_RETURN(
        master_, Tensor::Zeros(a, DType::kF32, {device_state_}, MemoryCategory::kOptimizerState));
  }
  DT_ASSIGN_OR_RETURN(
      exp_avg_, Tensor::Zeros(a, DType::kF32, {device_state_}, MemoryCategory::kOptimizerState));
  DT_ASSIGN_OR_RETURN(
      exp_avg_sq_, Tensor::Zeros(a, DType::kF32, {device_state_}, MemoryCategory::kOptimizerState));
  return absl::OkStatus();
}

// The cut is partition.h's (CutUpdateWindows); the update is elementwise, so it changes no bit.
std::vector<ZeroState::UpdateWindow> ZeroState::UpdateWindows() const {
  std::vector<UpdateWindow> out;
  for (const UpdateWindowCut& w : CutUpdateWindows(
           partition_, params_partitioned_ && grads_partitioned_, config_.sub_group_size)) {
    if (w.unit < 0) {
      out.push_back({w.owned_at, w.len, w.owned_at, w.owned_at});
    } else {
      const Unit& unit = partition_.units()[w.unit];
      out.push_back({w.owned_at, w.len, ParamChunk(unit) + w.within, GradChunk(unit) + w.within});
    }
  }
  return out;
}

absl::Status ZeroState::EnsureSwapEngine(const OffloadContext& offload) {
  if (swap_engine_ != nullptr) return absl::OkStatus();
  offload::SwapEngine::Options engine_options = offload::SwapEngine::OptionsFromAio(offload.aio);
  engine_options.make_queue = offload.make_queue;
  DT_ASSIGN_OR_RETURN(swap_engine_, offload::SwapEngine::Create(std::move(engine_options)));
  return absl::OkStatus();
}

absl::Status ZeroState::AllocateParamSwap(const OffloadContext& offload, tensor::Allocator* host) {
  const config::OffloadParamConfig& op = config_.offload_param;
  const config::OffloadOptimizerConfig& o = config_.offload_optimizer;
  std::vector<int64_t> chunks;
  for (const Unit& unit : partition_.units()) chunks.push_back(unit.chunk);
  const int64_t elem = DTypeSize(storage_);
  const int rank = offload.rank >= 0 ? offload.rank : partition_.rank();
  if (op.nvme_path.empty()) {
    return absl::InvalidArgumentError(
        "zero_optimization.offload_param.nvme_path: needed with offload_param.device \"nvme\"");
  }
  DT_RETURN_IF_ERROR(EnsureSwapEngine(offload));
  const int64_t file_bytes = ParamSwap::FileBytes(chunks, elem);
  // One directory per job and rank under a path (its lock): with the optimizer's files under
  // the same nvme_path it holds both, and the space check counts both.
  const bool shared = o.device == config::OffloadDevice::kNvme && o.nvme_path == op.nvme_path;
  int64_t needed = file_bytes;
  if (shared) {
    std::vector<int64_t> lengths;
    for (const UpdateWindow& w : windows_) lengths.push_back(w.len);
    needed += OptimizerSwap::FileBytes(lengths, mixed() ? 3 : 2);
  }
  std::unique_ptr<offload::SwapDir>& dir = shared ? swap_dir_ : param_dir_;
  DT_ASSIGN_OR_RETURN(dir, offload::SwapDir::Prepare(op.nvme_path, offload.job, rank, needed));
  DT_ASSIGN_OR_RETURN(param_swap_,
                      ParamSwap::Create(chunks, elem, {op.buffer_count, op.buffer_size},
                                        swap_engine_.get(), *dir, host));
  std::string measured;
  if (!shared) {  // the optimizer's swap tests a shared directory itself
    DT_ASSIGN_OR_RETURN(const offload::Bandwidth bw,
                        offload::MeasureBandwidth(*swap_engine_, *dir,
                                                  std::min(file_bytes, kParamSelfTestBytes), host));
    measured = absl::StrFormat("; self-test %.1f MB: write %.0f MB/s, read %.0f MB/s",
                               bw.bytes / 1e6, bw.write_mb_s, bw.read_mb_s);
  }
  if (offload.log) {
    offload.log(absl::StrFormat(
        "offload: parameters on NVMe at %s (%.1f MB in %d chunks; %d buffers in host memory, "
        "each gather reads its chunk%s)",
        dir->path(), param_swap_->file_bytes() / 1e6, static_cast<int>(chunks.size()),
        static_cast<int>(param_swap_->buffer_count()), measured));
  }
  return absl::OkStatus();
}

absl::Status ZeroState::AllocateSwap(const OffloadContext& offload) {
  const config::OffloadOptimizerConfig& o = config_.offload_optimizer;
  std::vector<int64_t> lengths;
  for (size_t i = first_home_window_; i < windows_.size(); ++i) lengths.push_back(windows_[i].len);
  const int arrays = mixed() ? 3 : 2;
  const int rank = offload.rank >= 0 ? offload.rank : partition_.rank();
  DT_RETURN_IF_ERROR(EnsureSwapEngine(offload));
  const int64_t file_bytes = OptimizerSwap::FileBytes(lengths, arrays);
  if (swap_dir_ == nullptr) {  // else made for both offloads (AllocateParamSwap)
    DT_ASSIGN_OR_RETURN(swap_dir_,
                        offload::SwapDir::Prepare(o.nvme_path, offload.job, rank, file_bytes));
  }
  OptimizerSwap::Options so;
  so.arrays = arrays;
  so.buffer_count = o.buffer_count;
  so.pipeline_read = o.pipeline_read;
  so.pipeline_write = o.pipeline_write;
  so.fast_init = o.fast_init;
  DT_ASSIGN_OR_RETURN(
      std::unique_ptr<OptimizerSwap> swap,
      OptimizerSwap::Create(std::move(lengths), so, swap_engine_.get(), *swap_dir_, host_));
  swap_ = swap.get();
  home_ = std::move(swap);
  // Before the parameters arrive (SetParams): the test overwrites the state with zeros.
  DT_ASSIGN_OR_RETURN(const offload::Bandwidth bw, swap_->SelfTest(kSwapSelfTestBytes));
  if (offload.log) {
    offload.log(absl::StrFormat(
        "offload: optimizer state on NVMe at %s (%.1f MB in %d sub-groups; %d buffers, %.1f MB "
        "in all; %s, queue depth %d x %d threads); self-test %.1f MB: write %.0f MB/s, read "
        "%.0f MB/s",
        swap_dir_->path(), swap_->file_bytes() / 1e6, static_cast<int>(windows_.size()),
        static_cast<int>(swap_->buffer_count()), swap_->buffer_bytes() / 1e6,
        swap_engine_->backend(), offload.aio.queue_depth, offload.aio.intra_op_parallelism,
        bw.bytes / 1e6, bw.write_mb_s, bw.read_mb_s));
  }
  return absl::OkStatus();
}

absl::Status ZeroState::AllocateHost(const OffloadContext& offload) {
  std::vector<int64_t> lengths;
  int64_t floats = 0;
  for (size_t i = first_home_window_; i < windows_.size(); ++i) {
    lengths.push_back(windows_[i].len);
    floats += windows_[i].len;
  }
  DT_ASSIGN_OR_RETURN(home_, HostOptimizerState::Create(lengths, mixed() ? 3 : 2, host_));
  if (offload.log) {
    offload.log(absl::StrFormat(
        "offload: optimizer state in host memory (%.1f MB in %d of %d sub-groups; the update runs "
        "on the CPU for those, gradients and weights cross per sub-group)",
        static_cast<double>(floats) * 4 * (mixed() ? 3 : 2) / 1e6, static_cast<int>(lengths.size()),
        static_cast<int>(windows_.size())));
  }
  return absl::OkStatus();
}

int64_t ZeroState::swap_file_bytes() const { return swap_ ? swap_->file_bytes() : 0; }
double ZeroState::swap_wait_seconds() const { return home_ ? home_->last_wait_seconds() : 0; }

comm::CommBuffer ZeroState::Buf(const View& v) const {
  return comm::CommBuffer{v.data(), v.numel(), v.dtype(), v.device(),
                          ops_->NativeStream(device::Stream::kComm)};
}

absl::Status ZeroState::Wait(std::unique_ptr<comm::Work>& work) {
  if (!work) return absl::OkStatus();
  // Time blocked here is communication the computation did not hide.
  const absl::Time start = absl::Now();
  absl::Status status = work->Wait();
  traffic_.wait_seconds += absl::ToDoubleSeconds(absl::Now() - start);
  work.reset();
  ops_->WaitFor(device::Stream::kCompute, device::Stream::kComm);
  return status;
}

// zero_optimization.reduce_scatter (stages 1-2): each rank needs only its chunk of the average,
// which a reduce-scatter delivers at half an all-reduce's traffic; false all-reduces the whole
// unit as DeepSpeed then does. Stage 3 always reduce-scatters, as DeepSpeed's does.
absl::StatusOr<std::unique_ptr<comm::Work>> ZeroState::ReduceUnit(const View& whole,
                                                                  const View& mine) {
  const int n = world();
  if (config_.reduce_scatter || config_.stage >= 3) {
    traffic_.reduce_scatter +=
        static_cast<int64_t>(DTypeSize(whole.dtype())) * mine.numel() * (n - 1);
    return dp_->ReduceScatter(Buf(whole), Buf(mine), reduce_op_, comm_);
  }
  traffic_.all_reduce += static_cast<int64_t>(whole.bytes()) * 2 * (n - 1) / n;
  return dp_->AllReduce(Buf(whole), reduce_op_, comm_);
}

void ZeroState::PreScale(const View& v) const {
  if (pre_scale_ != 1.0) ops_->Scale(v, pre_scale_);
}

void ZeroState::PostScale(const View& v) const {
  if (post_scale_ != 1.0) ops_->Scale(v, post_scale_);
}

// DeepSpeed's stage 1-2 parameter gather: all-gathers (allgather_partitions) or one broadcast
// per owner, covering at most allgather_bucket_size elements at a time. A unit that fits is
// gathered in place, several such in flight together; a larger one goes piece by piece through a
// staging buffer of at most allgather_bucket_size elements. Pure data movement: every way gives
// the same bits.
absl::Status ZeroState::GatherOwnedChunks() {
  const View params = params_.view();
  const int n = world();
  const int64_t bucket = std::max<int64_t>(n, config_.allgather_bucket_size);
  const int64_t elem = DTypeSize(storage_);
  std::deque<std::pair<std::unique_ptr<comm::Work>, int64_t>> in_flight;  // work, elements
  int64_t in_flight_elements = 0;
  auto drain_to = [&](int64_t limit) -> absl::Status {
    while (!in_flight.empty() && in_flight_elements > limit) {
      DT_RETURN_IF_ERROR(Wait(in_flight.front().first));
      in_flight_elements -= in_flight.front().second;
      in_flight.pop_front();
    }
    return absl::OkStatus();
  };
  BeforeCollective();
  for (int u = 0; u < static_cast<int>(partition_.units().size()); ++u) {
    const Unit& unit = partition_.units()[u];
    const int64_t whole = partition_.padded_numel(u);
    if (!config_.allgather_partitions) {
      // Each owner broadcasts its chunk, in pieces of at most `bucket` elements.
      for (int root = 0; root < n; ++root) {
        for (int64_t at = 0; at < unit.chunk; at += bucket) {
          const int64_t len = std::min(bucket, unit.chunk - at);
          DT_RETURN_IF_ERROR(drain_to(bucket - len));
          DT_ASSIGN_OR_RETURN(
              auto work,
              dp_->Broadcast(Buf(params.Sub(unit.padded_offset + root * unit.chunk + at, len)),
                             root, comm_));
          in_flight.emplace_back(std::move(work), len);
          in_flight_elements += len;
          traffic_.broadcast += elem * len * (n - 1) / n;
        }
      }
      continue;
    }
    if (whole <= bucket) {
      DT_RETURN_IF_ERROR(drain_to(bucket - whole));
      DT_ASSIGN_OR_RETURN(auto work,
                          dp_->AllGather(Buf(params.Sub(ParamChunk(unit), unit.chunk)),
                                         Buf(params.Sub(unit.padded_offset, whole)), comm_));
      in_flight.emplace_back(std::move(work), whole);
      in_flight_elements += whole;
      traffic_.all_gather += elem * unit.chunk * (n - 1);
      continue;
    }
    // Too large for one all-gather: `piece` elements of every rank's chunk at a time.
    DT_RETURN_IF_ERROR(drain_to(0));
    const int64_t piece = bucket / n;
    DT_ASSIGN_OR_RETURN(Tensor staging, Tensor::Empty(ops_->allocator(), storage_, {n * piece},
                                                      MemoryCategory::kCommBuffers));
    for (int64_t at = 0; at < unit.chunk; at += piece) {
      const int64_t len = std::min(piece, unit.chunk - at);
      const View gathered = staging.view().Sub(0, n * len);
      DT_ASSIGN_OR_RETURN(auto work, dp_->AllGather(Buf(params.Sub(ParamChunk(unit) + at, len)),
                                                    Buf(gathered), comm_));
      DT_RETURN_IF_ERROR(Wait(work));
      traffic_.all_gather += elem * len * (n - 1);
      for (int r = 0; r < n; ++r) {
        if (r == partition_.rank()) continue;
        ops_->Copy(params.Sub(unit.padded_offset + r * unit.chunk + at, len),
                   gathered.Sub(r * len, len));
      }
      // The next piece's all-gather overwrites the staging buffer: copies first.
      BeforeCollective();
    }
  }
  DT_RETURN_IF_ERROR(drain_to(0));
  return ops_->status();
}

absl::StatusOr<View> ZeroState::FlatOnDevice(const float* host, Tensor& staging) {
  if (ops_->host_accessible()) return View::Flat(host, DType::kF32, layout_.total());
  DT_ASSIGN_OR_RETURN(staging, Tensor::Empty(ops_->allocator(), DType::kF32, {layout_.total()},
                                             MemoryCategory::kCommBuffers));
  ops_->CopyFromHost(staging.view(), host);
  return staging.view();
}

absl::Status ZeroState::FillParamsFromFlat(const View& flat) {
  // The 16-bit working copy of this rank's chunks is the rounding of its master weights.
  if (mixed() && params_partitioned_) return ParamsFromMaster();
  DT_RETURN_IF_ERROR(ZeroParams());
  for (const Piece& p :
       params_partitioned_ ? partition_.OwnedPieces() : partition_.PaddedPieces()) {
    DT_RETURN_IF_ERROR(ParamsFromF32(p.at, flat.Sub(p.flat, p.count)));
  }
  return ops_->status();
}

absl::Status ZeroState::ZeroParams() {
  if (param_swap_ == nullptr) {
    // Host-resident parameters may still feed a gather's queued copy (Stage3::StartGather).
    if (params_on_host_) DT_RETURN_IF_ERROR(ops_->Synchronize());
    ParamOps().Fill(params_.view(), 0.f);
    return ops_->status();
  }
  const int64_t n = param_swap_->owned_elements();
  const std::vector<char> zeros(std::min(n, kStoreStagingFloats) * DTypeSize(storage_), 0);
  for (int64_t at = 0; at < n; at += kStoreStagingFloats) {
    DT_RETURN_IF_ERROR(
        param_swap_->WriteRange(at, std::min(kStoreStagingFloats, n - at), zeros.data()));
  }
  return absl::OkStatus();
}

absl::Status ZeroState::ParamsFromSource(env::ByteSource& source, int64_t at, int64_t n) {
  const int64_t elem = DTypeSize(storage_);
  std::vector<char> staging(std::min(n, kStoreStagingFloats) * elem);
  for (int64_t done = 0; done < n;) {
    const int64_t len = std::min<int64_t>(n - done, kStoreStagingFloats);
    DT_RETURN_IF_ERROR(source.Read(staging.data(), len * elem));
    DT_RETURN_IF_ERROR(param_swap_->WriteRange(at + done, len, staging.data()));
    done += len;
  }
  return absl::OkStatus();
}

ZeroState::ParamSwapTraffic ZeroState::TakeParamSwapTraffic() {
  if (param_swap_ == nullptr) return {};
  const int64_t moved = param_swap_->bytes_read() + param_swap_->bytes_written();
  ParamSwapTraffic t{moved - param_swap_bytes_seen_, param_swap_->TakeWaitSeconds()};
  param_swap_bytes_seen_ = moved;
  return t;
}

absl::Status ZeroState::ParamsFromF32(int64_t at, const View& src) {
  if (param_swap_ != nullptr) {
    // Rounded on the device (a copy of the f32 under fp32), then through the host into the swap.
    DT_ASSIGN_OR_RETURN(Tensor rounded, Tensor::Empty(ops_->allocator(), storage_, {src.numel()},
                                                      MemoryCategory::kCommBuffers));
    ops_->Convert(rounded.view(), src);
    std::vector<char> host(rounded.view().bytes());
    ops_->CopyToHost(host.data(), rounded.view());
    DT_RETURN_IF_ERROR(ops_->status());
    return param_swap_->WriteRange(at, src.numel(), host.data());
  }
  const View dst = params_.view().Sub(at, src.numel());
  if (!params_on_host_) {
    ops_->Convert(dst, src);
    return ops_->status();
  }
  if (storage_ == DType::kF32) {
    ops_->CopyToHost(dst.data(), src);
    return ops_->status();
  }
  DT_ASSIGN_OR_RETURN(Tensor rounded, Tensor::Empty(ops_->allocator(), storage_, {src.numel()},
                                                    MemoryCategory::kCommBuffers));
  ops_->Convert(rounded.view(), src);
  ops_->CopyToHost(dst.data(), rounded.view());
  return ops_->status();
}

View ZeroState::PaddedModule(const Tensor& buffer, int module) const {
  const Unit& unit = partition_.units()[partition_.unit_of_module(module)];
  const int64_t off = layout_.modules()[module].offset - unit.begin;
  return buffer.view().Sub(unit.padded_offset + off, ModuleFloats(module));
}

absl::Status ZeroState::PaddedParamsInto(const View& flat) {
  if (mixed()) return GatherMasterInto(flat);
  if (flat.empty()) return absl::OkStatus();
  for (const Piece& p : partition_.PaddedPieces()) {
    ops_->Copy(flat.Sub(p.flat, p.count), params_.view().Sub(p.at, p.count));
  }
  return ops_->status();
}

absl::Status ZeroState::AllocateCommWindow(const OffloadContext& offload, int64_t param_elems) {
  if (!distributed() || !ops_->host_accessible() || !dp_->SharesHostBuffers()) {
    return absl::OkStatus();
  }
  // The room each block takes in the window (colouring included); the same on every rank.
  auto block_bytes = [](int64_t bytes) {
    return static_cast<int64_t>(tensor::ArenaAllocator::BlockBytes(static_cast<size_t>(bytes)));
  };
  // What AllocateCommWindow's callers carve from it (zero_state.h); the same on every rank.
  int64_t bytes = 0;
  if (ParamsInCommWindow()) {
    bytes += block_bytes(param_elems * static_cast<int64_t>(DTypeSize(storage_)));
  }
  const int64_t reduced = static_cast<int64_t>(DTypeSize(reduction_.dtype));
  if (!grads_partitioned_) {
    bytes += block_bytes(partition_.padded_total() * reduced);
  } else {
    // The gradient buckets alive at once: the one filling, and those in flight (GradientBuckets);
    // any beyond come from the device's allocator and are staged.
    int64_t most = 0;
    const int units = static_cast<int>(partition_.units().size());
    for (int u = 0; u < units; ++u) most = std::max(most, partition_.padded_numel(u));
    bytes += std::min(units, config_.overlap_comm ? 4 : 2) * block_bytes(most * reduced);
  }
  if (bytes == 0) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<comm::HostBuffer>> window = dp_->AllocateHostBuffer(bytes, comm_);
  if (window.status().code() == absl::StatusCode::kResourceExhausted) {
    // No room in /dev/shm (a container's default is 64 MB): every rank hears it from rank 0, and
    // all train on with their own memory, staging the collectives.
    if (offload.log && dp_->rank() == 0) {
      offload.log(absl::StrCat("note: comm: no room for ", bytes,
                               " bytes of memory shared by the group, so its collectives are "
                               "staged (",
                               window.status().message(), ")"));
    }
    return absl::OkStatus();
  }
  DT_RETURN_IF_ERROR(window.status());
  comm_window_ = *std::move(window);
  comm_arena_ = std::make_unique<tensor::ArenaAllocator>(static_cast<char*>(comm_window_->data()),
                                                         bytes, ops_->allocator());
  if (offload.log && dp_->rank() == 0) {  // the same on every rank: said once
    offload.log(absl::StrFormat(
        "comm: %s%s in %s of memory shared by the group's %d ranks (collectives on them skip the "
        "staging copies)",
        ParamsInCommWindow() ? "parameters and " : "",
        grads_partitioned_ ? "gradient buckets" : "gradients",
        bytes < 1000000 ? absl::StrFormat("%.1f kB", bytes / 1e3)
                        : absl::StrFormat("%.1f MB", bytes / 1e6),
        dp_->size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<View> ZeroState::ReductionBuffer(Tensor& copy) {
  if (reduction_.dtype == grads_dtype_) return grads_.view();
  DT_ASSIGN_OR_RETURN(copy, Tensor::Empty(comm_allocator(), reduction_.dtype, {grads_.numel()},
                                          MemoryCategory::kCommBuffers));
  ops_->Convert(copy.view(), grads_.view());
  return copy.view();
}

void ZeroState::ReducedIntoGrads(const View& grads, const View& reduced) {
  if (reduced.data() != grads.data()) ops_->Convert(grads, reduced);
}

absl::Status ZeroState::GatherMasterInto(const View& flat) {
  for (int u = 0; u < static_cast<int>(partition_.units().size()); ++u) {
    const Unit& unit = partition_.units()[u];
    const int64_t n = partition_.padded_numel(u);
    Tensor swapped;  // offload: the chunk read in
    View mine;
    if (home_ != nullptr) {
      DT_ASSIGN_OR_RETURN(swapped, Tensor::Empty(ops_->allocator(), DType::kF32, {unit.chunk},
                                                 MemoryCategory::kCommBuffers));
      mine = swapped.view();
      DT_RETURN_IF_ERROR(ReadMaster(unit.owned_offset, mine));
    } else {
      mine = master_.view().Sub(unit.owned_offset, unit.chunk);
    }
    DT_ASSIGN_OR_RETURN(Tensor whole, Tensor::Empty(ops_->allocator(), DType::kF32, {n},
                                                    MemoryCategory::kCommBuffers));
    if (distributed() && config_.stage > 0) {
      BeforeCollective();
      DT_ASSIGN_OR_RETURN(auto work, dp_->AllGather(Buf(mine), Buf(whole.view()), comm_));
      DT_RETURN_IF_ERROR(Wait(work));
      traffic_.all_gather += int64_t{4} * unit.chunk * (world() - 1);
    } else {
      ops_->Copy(whole.view(), mine);  // one rank's chunk is the whole unit
    }
    if (!flat.empty())
      ops_->Copy(flat.Sub(unit.begin, unit.numel()), whole.view().Sub(0, unit.numel()));
  }
  return ops_->status();
}

absl::Status ZeroState::SetParams(View flat) {
  if (distributed()) {
    const int64_t n = layout_.total();
    BeforeCollective();
    DT_ASSIGN_OR_RETURN(auto work, dp_->Broadcast(Buf(flat), /*root=*/0, comm_));
    DT_RETURN_IF_ERROR(Wait(work));
    traffic_.broadcast += n * 4 * (dp_->size() - 1) / dp_->size();
  }
  if (mixed()) {
    // The master weights take this rank's chunks; the 16-bit working copy is their rounding, in
    // the layout the strategy keeps. A home's padding is zero from its creation (or the last
    // Zero()).
    if (device_state_ > 0) ops_->Fill(master_.view(), 0.f);
    for (const Piece& p : partition_.OwnedPieces()) {
      DT_RETURN_IF_ERROR(ViewToState(0, p.at, flat.Sub(p.flat, p.count)));
    }
  }
  DT_RETURN_IF_ERROR(FillParamsFromFlat(flat));
  return ops_->status();
}

absl::Status ZeroState::ReadMaster(int64_t at, const View& dst) { return StateToView(0, at, dst); }

View ZeroState::DeviceState(int which) const {
  return (which == 0 ? master_ : which == 1 ? exp_avg_ : exp_avg_sq_).view();
}

absl::Status ZeroState::StateToView(int which, int64_t at, const View& dst) {
  const int64_t n = dst.numel();
  const int64_t on_device = std::clamp(device_state_ - at, int64_t{0}, n);
  if (on_device > 0) ops_->Copy(dst.Sub(0, on_device), DeviceState(which).Sub(at, on_device));
  if (on_device == n) return ops_->status();
  return HomeToView(which, at + on_device - device_state_, dst.Sub(on_device, n - on_device));
}

absl::Status ZeroState::ViewToState(int which, int64_t at, const View& src) {
  const int64_t n = src.numel();
  const int64_t on_device = std::clamp(device_state_ - at, int64_t{0}, n);
  if (on_device > 0) ops_->Copy(DeviceState(which).Sub(at, on_device), src.Sub(0, on_device));
  if (on_device == n) return ops_->status();
  return ViewToHome(which, at + on_device - device_state_, src.Sub(on_device, n - on_device));
}

absl::Status ZeroState::HomeToView(int which, int64_t at, const View& dst) {
  DT_RETURN_IF_ERROR(ops_->status());
  if (ops_->host_accessible()) {
    return home_->ReadRange(SwapArray(which), at, dst.numel(), dst.as<float>());
  }
  std::vector<float> staging(std::min(dst.numel(), kStoreStagingFloats));
  for (int64_t done = 0; done < dst.numel();) {
    const int64_t n = std::min<int64_t>(dst.numel() - done, staging.size());
    DT_RETURN_IF_ERROR(home_->ReadRange(SwapArray(which), at + done, n, staging.data()));
    ops_->CopyFromHost(dst.Sub(done, n), staging.data());
    DT_RETURN_IF_ERROR(ops_->status());
    done += n;
  }
  return absl::OkStatus();
}

absl::Status ZeroState::ViewToHome(int which, int64_t at, const View& src) {
  DT_RETURN_IF_ERROR(ops_->status());
  if (ops_->host_accessible()) {
    return home_->WriteRange(SwapArray(which), at, src.numel(), src.as<float>());
  }
  std::vector<float> staging(std::min(src.numel(), kStoreStagingFloats));
  for (int64_t done = 0; done < src.numel();) {
    const int64_t n = std::min<int64_t>(src.numel() - done, staging.size());
    ops_->CopyToHost(staging.data(), src.Sub(done, n));
    DT_RETURN_IF_ERROR(ops_->status());
    DT_RETURN_IF_ERROR(home_->WriteRange(SwapArray(which), at + done, n, staging.data()));
    done += n;
  }
  return absl::OkStatus();
}

absl::Status ZeroState::ParamsFromMaster() {
  if (home_ == nullptr && !params_on_host_ && param_swap_ == nullptr) {
    for (const Unit& unit : partition_.units()) {
      ops_->Convert(params_.view().Sub(ParamChunk(unit), unit.chunk),
                    master_.view().Sub(unit.owned_offset, unit.chunk));
    }
    return ops_->status();
  }
  // From the home through a bounded staging buffer.
  const int64_t most = std::min(partition_.owned_total(), kStoreStagingFloats);
  if (most == 0) return ops_->status();
  DT_ASSIGN_OR_RETURN(Tensor staging, Tensor::Empty(ops_->allocator(), DType::kF32, {most},
                                                    MemoryCategory::kCommBuffers));
  for (const Unit& unit : partition_.units()) {
    for (int64_t at = 0; at < unit.chunk; at += most) {
      const int64_t n = std::min(most, unit.chunk - at);
      const View part = staging.view().Sub(0, n);
      DT_RETURN_IF_ERROR(ReadMaster(unit.owned_offset + at, part));
      DT_RETURN_IF_ERROR(ParamsFromF32(ParamChunk(unit) + at, part));
    }
  }
  return ops_->status();
}

void ZeroState::ExcludeFromNorm(int module) { norm_excluded_ = module; }

std::vector<View> ZeroState::LocalNormViews() {
  if (norm_excluded_ < 0) return NormViews();
  const model::ModuleSpec& m = layout_.modules()[norm_excluded_];
  const int64_t cut_begin = m.offset, cut_end = m.offset + m.numel;
  std::vector<View> views;
  for (const Unit& unit : partition_.units()) {
    // This rank's chunk of the unit holds flat [first, first + chunk) (padding past unit.end).
    const int64_t first = unit.begin + partition_.rank() * unit.chunk;
    const View chunk = grads_.view().Sub(GradChunk(unit), unit.chunk);
    const int64_t a = std::clamp(cut_begin - first, int64_t{0}, unit.chunk);
    const int64_t b = std::clamp(cut_end - first, int64_t{0}, unit.chunk);
    if (a > 0) views.push_back(chunk.Sub(0, a));
    if (b < unit.chunk) views.push_back(chunk.Sub(b, unit.chunk - b));
  }
  return views;
}

absl::Status ZeroState::ReduceParamGrads(const model::ParamSpec& param, comm::Communicator& group) {
  if (grads_partitioned_) {
    return absl::FailedPreconditionError(
        "tied gradients need whole gradients until the boundary: ZeRO stage 0 or 1");
  }
  if (group.size() <= 1) return absl::OkStatus();
  const int64_t within = param.offset - layout_.modules()[param.module].offset;
  const View grads = PaddedModule(grads_, param.module).Sub(within, param.numel);
  BeforeCollective();
  DT_ASSIGN_OR_RETURN(auto work, group.AllReduce(Buf(grads), comm::ReduceOp::kSum, comm_));
  DT_RETURN_IF_ERROR(Wait(work));
  traffic_.all_reduce +=
      static_cast<int64_t>(grads.bytes()) * 2 * (group.size() - 1) / group.size();
  return ops_->status();
}

absl::StatusOr<double> ZeroState::GradSquaredNorm() {
  DT_ASSIGN_OR_RETURN(const double local, ops_->SumSquares(LocalNormViews()));
  if (!distributed()) return local;
  // inf and NaN survive the sum, so every rank sees any rank's overflow.
  float sum = static_cast<float>(local);
  const absl::Time start = absl::Now();
  DT_RETURN_IF_ERROR(AllReduceScalar(*dp_, *ops_, &scalar_, &sum, comm::ReduceOp::kSum, comm_));
  traffic_.wait_seconds += absl::ToDoubleSeconds(absl::Now() - start);
  traffic_.all_reduce += int64_t{4} * 2 * (dp_->size() - 1) / dp_->size();
  return static_cast<double>(sum);
}

absl::Status ZeroState::AdamW(const device::AdamWArgs& args) {
  const View params = params_.view(), grads = grads_.view();
  optimizer_sub_groups_ = static_cast<int64_t>(windows_.size());
  Tensor on_device;  // offload_param: a window's parameters on the device while it is updated
  Tensor staging;    // offload_param "nvme": a piece of a window's parameters in host memory
  auto update = [&](const UpdateWindow& w, const View& master, const View& m,
                    const View& v) -> absl::Status {
    const View g = grads.Sub(w.grad_at, w.len);
    if (param_swap_ != nullptr) {
      return AdamWSwappedParams(w.param_at, master, g, m, v, args, staging, on_device);
    }
    View p = params.Sub(w.param_at, w.len);
    if (params_on_host_) {
      if (on_device.numel() < w.len) {
        auto t = Tensor::Empty(ops_->allocator(), storage_, {w.len}, MemoryCategory::kCommBuffers);
        if (!t.ok()) return t.status();
        on_device = *std::move(t);
      }
      const View host = p;
      p = on_device.view().Sub(0, w.len);
      ops_->CopyFromHost(p, host.data());
      ops_->AdamW(
          mixed() ? device::AdamWViews{master, g, m, v, p} : device::AdamWViews{p, g, m, v, View()},
          args);
      ops_->CopyToHost(host.data(), p);
      return ops_->status();
    }
    ops_->AdamW(
        mixed() ? device::AdamWViews{master, g, m, v, p} : device::AdamWViews{p, g, m, v, View()},
        args);
    return absl::OkStatus();
  };
  if (home_ != nullptr && !ops_->host_accessible()) {
    // Partial offload: the windows whose state stayed on the device first, queued ahead of the
    // host's copies.
    for (int i = 0; i < first_home_window_; ++i) {
      const UpdateWindow& w = windows_[i];
      DT_RETURN_IF_ERROR(update(w, mixed() ? master_.view().Sub(w.owned_at, w.len) : View(),
                                exp_avg_.view().Sub(w.owned_at, w.len),
                                exp_avg_sq_.view().Sub(w.owned_at, w.len)));
    }
    return AdamWOnHost(args);
  }
  if (home_ != nullptr) {
    // A CPU rank's state from NVMe: each window is updated in its buffer and goes back; the
    // CPU's kernels have finished when they return, before the write-back starts.
    DT_RETURN_IF_ERROR(home_->Update([&](int i, float* const* arrays) -> absl::Status {
      const UpdateWindow& w = windows_[i];
      auto array = [&](int which) {
        return View::Flat(arrays[SwapArray(which)], DType::kF32, w.len);
      };
      DT_RETURN_IF_ERROR(update(w, mixed() ? array(0) : View(), array(1), array(2)));
      return ops_->status();
    }));
    return ops_->status();
  }
  for (const UpdateWindow& w : windows_) {
    DT_RETURN_IF_ERROR(update(w, mixed() ? master_.view().Sub(w.owned_at, w.len) : View(),
                              exp_avg_.view().Sub(w.owned_at, w.len),
                              exp_avg_sq_.view().Sub(w.owned_at, w.len)));
  }
  return ops_->status();
}

// The update of a window whose parameters live in the swap (docs/offload.md, "Parameters on
// NVMe"): a piece at a time, the parameters come into host memory, are updated (on a GPU rank on
// the device, crossing both ways) and go back. AdamW is elementwise, so cutting the window into
// pieces changes no bit.
absl::Status ZeroState::AdamWSwappedParams(int64_t param_at, const View& master, const View& g,
                                           const View& m, const View& v,
                                           const device::AdamWArgs& args, Tensor& staging,
                                           Tensor& on_device) {
  const int64_t len = g.numel();
  const int64_t piece = std::min(len, kParamUpdatePieceFloats);
  // Made once per update, grown for a longer window.
  if (staging.numel() < piece) {
    tensor::Allocator* host = ops_->host_accessible() ? ops_->allocator() : host_;
    staging = Tensor();
    DT_ASSIGN_OR_RETURN(staging,
                        Tensor::Empty(host, storage_, {piece}, MemoryCategory::kCommBuffers));
  }
  if (!ops_->host_accessible() && on_device.numel() < piece) {
    on_device = Tensor();
    DT_ASSIGN_OR_RETURN(on_device, Tensor::Empty(ops_->allocator(), storage_, {piece},
                                                 MemoryCategory::kCommBuffers));
  }
  for (int64_t at = 0; at < len; at += piece) {
    const int64_t n = std::min(piece, len - at);
    void* staged = staging.raw();
    DT_RETURN_IF_ERROR(param_swap_->ReadRange(param_at + at, n, staged));
    View p = View::Flat(staged, storage_, n);
    if (!ops_->host_accessible()) {
      p = on_device.view().Sub(0, n);
      ops_->CopyFromHost(p, staged);
    }
    const View gp = g.Sub(at, n), mp = m.Sub(at, n), vp = v.Sub(at, n);
    ops_->AdamW(mixed() ? device::AdamWViews{master.Sub(at, n), gp, mp, vp, p}
                        : device::AdamWViews{p, gp, mp, vp, View()},
                args);
    if (!ops_->host_accessible()) ops_->CopyToHost(staged, p);
    DT_RETURN_IF_ERROR(ops_->status());
    DT_RETURN_IF_ERROR(param_swap_->WriteRange(param_at + at, n, staged));
  }
  return absl::OkStatus();
}

// ZeRO-Offload's step (docs/offload.md, "Host offload"): the gradients of a window, already
// reduced, cross to the host (stages 2-3: streamed there during backward, StreamUnitGrads), to be
// unscaled by args.grad_scale and clipped there; the CPU's AdamW
// updates the window's state in its home (fp32: the weights cross too); the new weights cross back
// (mixed: their 16-bit rounding, which the CPU kernel writes as the GPU's does). The arithmetic is
// the same kernel's as on the GPU (kernels/adamw), element for element.
//
// The copies overlap the host's arithmetic through two staging slots: while window i is updated
// from slot i % 2, window i + 1's bytes cross into the other slot, and window i's new weights cross
// back while window i + 1 is updated. Both directions are queued on the compute stream, in order,
// so a slot's outgoing weights have left before the copy that refills it lands; the host touches
// a slot only after waiting for the fence of the copy that filled it. With page-locked staging
// (pin_memory) the copies run beside the host; with pageable memory the same code runs them one
// after the other.
absl::Status ZeroState::AdamWOnHost(const device::AdamWArgs& args) {
  const View params = params_.view(), grads = grads_.view();
  // The home's window i is windows_[first_home_window_ + i].
  const UpdateWindow* const home_windows = windows_.data() + first_home_window_;
  const int n = static_cast<int>(windows_.size()) - first_home_window_;
  int fetched[2] = {-1, -1};  // each slot's fence for the copy that filled it, until waited for
  // Stages 2-3: the gradients are on the host already (streamed during backward).
  DT_RETURN_IF_ERROR(WaitStreamedGrads());
  auto fetch = [&](int i) {
    const UpdateWindow& w = home_windows[i];
    const int slot = i % 2;
    if (!stream_grads_) ops_->CopyToHostAsync(host_grad_[slot].raw(), grads.Sub(w.grad_at, w.len));
    if (!mixed() && !params_on_host_ && param_swap_ == nullptr) {
      ops_->CopyToHostAsync(host_param_[slot].raw(), params.Sub(w.param_at, w.len));
    }
    fetched[slot] = ops_->RecordFence();
  };
  // Every fence recorded is waited for, also when the update stops early.
  auto drain = [&] {
    for (int& fence : fetched) {
      if (fence >= 0) ops_->WaitFence(fence).IgnoreError();  // status() keeps the first error
      fence = -1;
    }
  };
  if (n > 0) fetch(0);
  const absl::Status updated = home_->Update([&](int i, float* const* arrays) -> absl::Status {
    const UpdateWindow& w = home_windows[i];
    const int slot = i % 2;
    DT_RETURN_IF_ERROR(ops_->WaitFence(fetched[slot]));
    fetched[slot] = -1;
    if (i + 1 < n) fetch(i + 1);
    const View g = stream_grads_ ? host_grads_.view().Sub(w.grad_at - device_state_, w.len)
                                 : host_grad_[slot].view().Sub(0, w.len);
    // offload_param: the parameters are updated where they live, in host memory; from NVMe
    // they come into the slot and go back after the update.
    const View p =
        params_on_host_ ? params.Sub(w.param_at, w.len) : host_param_[slot].view().Sub(0, w.len);
    if (param_swap_ != nullptr) {
      DT_RETURN_IF_ERROR(param_swap_->ReadRange(w.param_at, w.len, p.data()));
    }
    auto array = [&](int which) {
      return View::Flat(arrays[SwapArray(which)], DType::kF32, w.len);
    };
    host_ops_->AdamW(mixed() ? device::AdamWViews{array(0), g, array(1), array(2), p}
                             : device::AdamWViews{p, g, array(1), array(2), View()},
                     args);
    DT_RETURN_IF_ERROR(host_ops_->status());
    if (param_swap_ != nullptr) return param_swap_->WriteRange(w.param_at, w.len, p.data());
    // The slot is not refilled before this copy has read it (the next fetch into it is queued
    // after it).
    if (!params_on_host_) ops_->CopyFromHostAsync(params.Sub(w.param_at, w.len), p.data());
    return ops_->status();
  });
  drain();
  DT_RETURN_IF_ERROR(updated);
  return ops_->status();
}

void ZeroState::SkipStep() {
  (void)WaitStreamedGrads();  // released; an error stays in ops_
  ops_->Fill(grads_.view(), 0.f);
}

void ZeroState::StreamUnitGrads(const Unit& unit) {
  if (!stream_grads_ || !boundary_backward_) return;
  const int64_t begin = std::max(unit.owned_offset, device_state_);
  const int64_t end = unit.owned_offset + unit.chunk;
  if (begin >= end) return;
  char* dst = static_cast<char*>(host_grads_.raw()) +
              (begin - device_state_) * static_cast<int64_t>(DTypeSize(grads_dtype_));
  ops_->CopyToHostAsync(dst, grads_.view().Sub(begin, end - begin));
  streamed_fences_.push_back(ops_->RecordFence());
}

absl::Status ZeroState::WaitStreamedGrads() {
  absl::Status first;
  for (int fence : streamed_fences_) first.Update(ops_->WaitFence(fence));
  streamed_fences_.clear();
  return first;
}

void ZeroState::PoisonGradientsForTesting() {
  ops_->Fill(grads_.view().Sub(0, 1), std::numeric_limits<float>::infinity());
}

// ---- ParamAccess ----

bool ZeroState::Direct16(int param) const {
  // The CPU and CUDA matrix products take bf16 weights; fp16 ones are widened like the rest.
  return storage_ == DType::kBF16 && layout_.params()[param].matrix;
}

absl::StatusOr<model::ModuleParams> ZeroState::AcquireParams(int module, model::Pass pass) {
  DT_ASSIGN_OR_RETURN(const View stored, ModuleStorage(module, pass));
  const Device device = ops_->device();
  if (!mixed()) {
    return model::ModuleParams{
        model::ModuleViews(layout_, module, stored.data(), storage_, device)};
  }
  // Mixed: the model computes on an fp32 widening of the module, made on first use, except for
  // the 16-bit matrix weights it takes as they are.
  model::ModuleParams out{model::ModuleViews(layout_, module, stored.data(), storage_, device)};
  ModuleState& ms = modules_[module];
  if (ms.users++ == 0) {
    DT_ASSIGN_OR_RETURN(ms.widened,
                        Tensor::Empty(ops_->allocator(), DType::kF32, {ModuleFloats(module)},
                                      MemoryCategory::kGatheredParams));
  }
  const std::vector<View> wide =
      model::ModuleViews(layout_, module, ms.widened.raw(), DType::kF32, device);
  const std::vector<int>& params = layout_.modules()[module].params;
  for (size_t i = 0; i < params.size(); ++i) {
    if (Direct16(params[i])) continue;
    if (ms.users == 1) ops_->Convert(wide[i], out.views[i]);
    out.views[i] = wide[i];
  }
  DT_RETURN_IF_ERROR(ops_->status());
  return out;
}

absl::Status ZeroState::ReleaseParams(int module, model::Pass) {
  if (mixed()) {
    ModuleState& ms = modules_[module];
    if (ms.users <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "ReleaseParams: module ", layout_.modules()[module].name, " is not acquired"));
    }
    if (--ms.users == 0) ms.widened = Tensor();
  }
  return ParamsReleased(module);
}

absl::StatusOr<model::ModuleGrads> ZeroState::AcquireGrads(int module) {
  bool unwritten = false;
  DT_ASSIGN_OR_RETURN(const View target, GradTarget(module, &unwritten));
  const Device device = ops_->device();
  if (target.dtype() == DType::kF32) {
    return model::ModuleGrads{
        model::ModuleViews(layout_, module, target.data(), DType::kF32, device), unwritten};
  }
  // A 16-bit destination: the model accumulates in an fp32 scratch that ReleaseGrads rounds
  // into it. The scratch is private to this micro-batch, so the matrix products overwrite their
  // parts (fresh) and only the rest is zeroed.
  Tensor& scratch = modules_[module].grad_scratch;
  DT_ASSIGN_OR_RETURN(scratch, Tensor::Empty(ops_->allocator(), DType::kF32, {ModuleFloats(module)},
                                             MemoryCategory::kCommBuffers));
  const View s = scratch.view();
  ZeroAroundMatrices(s, layout_.modules()[module].offset, module, module + 1);
  DT_RETURN_IF_ERROR(ops_->status());
  return model::ModuleGrads{model::ModuleViews(layout_, module, s.data(), DType::kF32, device),
                            /*fresh=*/true};
}

void ZeroState::ZeroAroundMatrices(const View& buffer, int64_t base, int first_module,
                                   int end_module) {
  int64_t cursor = 0;  // the first element not yet zeroed or skipped
  for (int m = first_module; m < end_module; ++m) {
    for (int i : layout_.modules()[m].params) {
      const model::ParamSpec& p = layout_.params()[i];
      if (!p.matrix) continue;
      const int64_t first = p.offset - base;
      if (first > cursor) ops_->Fill(buffer.Sub(cursor, first - cursor), 0.f);
      cursor = first + p.numel;
    }
  }
  if (cursor < buffer.numel()) ops_->Fill(buffer.Sub(cursor, buffer.numel() - cursor), 0.f);
}

absl::Status ZeroState::ReleaseGrads(int module) {
  Tensor& scratch = modules_[module].grad_scratch;
  if (scratch.defined()) {
    DT_ASSIGN_OR_RETURN(const View target, GradTarget(module, nullptr));
    ops_->AddInto(target, scratch.view());
    scratch = Tensor();
  }
  DT_RETURN_IF_ERROR(GradsDone(module));
  return ops_->status();
}

}  // namespace dstrain::zero
