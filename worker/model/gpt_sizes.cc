#include "worker/model/gpt_sizes.h"

#include <algorithm>
#include <string_view>

namespace dstrain::model {
namespace {

// The enums above name table rows by position; these checks keep the two in step.
constexpr bool RowIs(const ActRow* rows, int i, std::string_view name) {
  return std::string_view(rows[i].name) == name;
}
constexpr int PositionInOwner(int row) {
  int position = 0;
  for (int i = 0; i < row; ++i) position += kGptParams[i].owner == kGptParams[row].owner;
  return position;
}
constexpr int RowOf(std::string_view name) {
  for (int i = 0; i < kNumGptParams; ++i) {
    if (std::string_view(kGptParams[i].name) == name) return i;
  }
  return -1;
}
static_assert(PositionInOwner(RowOf("wte")) == kWte && PositionInOwner(RowOf("wpe")) == kWpe);
static_assert(PositionInOwner(RowOf("ln1w")) == kLn1w && PositionInOwner(RowOf("qkvw")) == kQkvw);
static_assert(PositionInOwner(RowOf("attprojb")) == kAttprojb &&
              PositionInOwner(RowOf("ln2b")) == kLn2b);
static_assert(PositionInOwner(RowOf("fcw")) == kFcw &&
              PositionInOwner(RowOf("fcprojb")) == kFcprojb);
static_assert(PositionInOwner(RowOf("fcprojb")) + 1 == kNumBlockParams);
static_assert(PositionInOwner(RowOf("lnfw")) == kLnfw && PositionInOwner(RowOf("lnfb")) == kLnfb);
static_assert(RowIs(kGptActivations, kTokens, "tokens") &&
              RowIs(kGptActivations, kEncoded, "encoded"));
static_assert(RowIs(kGptActivations, kLn1, "ln1") && RowIs(kGptActivations, kAtt, "att"));
static_assert(RowIs(kGptActivations, kFchGelu, "fch_gelu") &&
              RowIs(kGptActivations, kResidual3, "residual3"));
static_assert(RowIs(kGptActivations, kTargets, "targets") &&
              RowIs(kGptActivations, kLosses, "losses"));
static_assert(RowIs(kGptActivations, kDstream, "dstream") &&
              RowIs(kGptActivations, kAttScratch, "att_scratch"));
static_assert(kAttScratch + 1 == kNumGptActivations);

}  // namespace

int64_t Resolve(Extent e, const GptConfig& c) {
  switch (e.dim) {
    case Dim::kOne:
      return e.factor;
    case Dim::kC:
      return e.factor * c.n_embd;
    case Dim::kVp:
      return e.factor * c.padded_vocab_size;
    case Dim::kMaxT:
      return e.factor * c.block_size;
  }
  return 0;
}

std::vector<int64_t> ParamShape(int row, const GptConfig& c) {
  const ParamRow& r = kGptParams[row];
  if (r.cols.factor == 0) return {Resolve(r.rows, c)};
  return {Resolve(r.rows, c), Resolve(r.cols, c)};
}

double GptParameterCount(const GptConfig& c) {
  double total = 0;
  for (int row = 0; row < kNumGptParams; ++row) {
    double n = 1;
    for (const int64_t d : ParamShape(row, c)) n *= static_cast<double>(d);
    total += kGptParams[row].owner == Owner::kBlock ? n * c.n_layer : n;
  }
  return total;
}

int ActivationPlan::Segments(int blocks) const {
  return checkpoint() ? (blocks + checkpoint_interval - 1) / checkpoint_interval : blocks;
}

int ActivationPlan::SegmentBlocks(int blocks) const {
  return checkpoint() ? std::min(checkpoint_interval, blocks) : 0;
}

int ActCopies(int row, const GptConfig& c, BlockRange range, const ActivationPlan& plan) {
  const int blocks = range.Count(c.n_layer);
  switch (kGptActivations[row].owner) {
    case ActOwner::kEmbedding:
      // A later stage receives its input in `encoded`; only the first has tokens.
      return (row == kTokens ? range.Embeds() : 1) * plan.buffers;
    case ActOwner::kBlock:
      return plan.checkpoint() ? plan.SegmentBlocks(blocks) : blocks * plan.buffers;
    case ActOwner::kBlockOutput:
      // Kept: each segment's output per buffer; scratch: the outputs inside one segment.
      return plan.checkpoint() ? std::max(0, plan.Segments(blocks) * plan.buffers +
                                                 plan.SegmentBlocks(blocks) - 1)
                               : blocks * plan.buffers;
    case ActOwner::kHead:
      return range.HasHead(c.n_layer) * plan.buffers;
    case ActOwner::kBackward:
      return 1;
  }
  return 0;
}

int64_t ActElements(int row, const GptConfig& c, int B, int T, const DeviceSizes& device) {
  const ActRow& r = kGptActivations[row];
  switch (r.size) {
    case ActSize::kPerToken:
      return int64_t{B} * T * Resolve(r.per_token, c);
    case ActSize::kAttentionState:
      return device.attention_state;
    case ActSize::kAttentionScratch:
      return device.attention_scratch;
  }
  return 0;
}

DType ActDType(int row, const ActivationPlan& plan, DType matmul, const DeviceSizes& device) {
  const ActRow& r = kGptActivations[row];
  const bool bf16 = r.product_input && matmul == DType::kBF16 && plan.bf16_matmul_inputs &&
                    device.bf16_matmul_inputs;
  return bf16 ? DType::kBF16 : r.dtype;
}

int64_t ActivationBytes(const GptConfig& c, int B, int T, BlockRange range,
                        const DeviceSizes& device, const ActivationPlan& plan, DType matmul) {
  int64_t bytes = 0;
  for (int row = 0; row < kNumGptActivations; ++row) {
    bytes += ActCopies(row, c, range, plan) * ActElements(row, c, B, T, device) *
             static_cast<int64_t>(DTypeSize(ActDType(row, plan, matmul, device)));
  }
  return bytes;
}

}  // namespace dstrain::model
