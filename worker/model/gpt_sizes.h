// The GPT's size table: every parameter and every activation of the model, with its shape as a
// function of the configuration and the micro-batch, in one place (llm.c keeps its
// fill_in_parameter_sizes / fill_in_activation_sizes likewise). Everything that needs a size
// derives it from here:
//   - ParamLayout (param_layout.h): the flat parameter buffer, grouped into modules;
//   - Gpt (gpt.h): the activation buffers it allocates and the parameters it reads;
//   - `dstrain estimate` (zero/estimate.h): activation bytes, by the same function the model uses;
//   - the llm.c model file (llmc_format.h): the parameter order of the file is this table's order.
// Adding a layer means adding its rows here and its calls in gpt.cc; nothing else hand-keeps a
// size (docs/architecture.md, "Adding a layer").
#pragma once

#include <cstdint>
#include <vector>

#include "common/types/dtype.h"

namespace dstrain::model {

// The GPT-2 shape (llm.c's GPT2Config plus a padded vocabulary).
struct GptConfig {
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;
  int vocab_size = 0;         // V: real tokens
  int padded_vocab_size = 0;  // Vp >= V: rows of wte, columns of the logits
  int block_size = 0;         // maxT: rows of wpe
};

// The blocks [first, end) a model instance runs: all of them, or a pipeline stage's slice. The
// first stage also embeds the tokens; the last applies the final LayerNorm, the tied head and
// the loss (and so also holds wte).
struct BlockRange {
  int first = 0;
  int end = -1;  // -1: through the last block
  int Count(int n_layer) const { return (end < 0 ? n_layer : end) - first; }
  int End(int n_layer) const { return end < 0 ? n_layer : end; }
  bool Embeds() const { return first == 0; }
  bool HasHead(int n_layer) const { return End(n_layer) == n_layer; }
};

// A size: `factor` × one of the model's dimensions.
enum class Dim { kOne, kC, kVp, kMaxT };
struct Extent {
  Dim dim;
  int64_t factor;
};
int64_t Resolve(Extent e, const GptConfig& c);

// ---- parameters ----
enum class Owner { kEmbedding, kBlock, kFinal };
struct ParamRow {
  const char* name;
  Owner owner;
  Extent rows, cols;  // cols {kOne, 0}: a vector of `rows` elements
  // Read only by matrix products or the embedding lookup, whose operations take 16-bit
  // weights directly: under bf16 storage it need not be widened to fp32 for compute.
  bool matrix;
  // Needed by the tied head as well as the embedding (a last pipeline stage holds it too).
  bool tied;
};

// In llm.c's file order. A module holds its owner's rows in table order.
inline constexpr ParamRow kGptParams[] = {
    {"wte", Owner::kEmbedding, {Dim::kVp, 1}, {Dim::kC, 1}, true, true},
    {"wpe", Owner::kEmbedding, {Dim::kMaxT, 1}, {Dim::kC, 1}, false, false},
    {"ln1w", Owner::kBlock, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
    {"ln1b", Owner::kBlock, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
    {"qkvw", Owner::kBlock, {Dim::kC, 3}, {Dim::kC, 1}, true, false},
    {"qkvb", Owner::kBlock, {Dim::kC, 3}, {Dim::kOne, 0}, false, false},
    {"attprojw", Owner::kBlock, {Dim::kC, 1}, {Dim::kC, 1}, true, false},
    {"attprojb", Owner::kBlock, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
    {"ln2w", Owner::kBlock, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
    {"ln2b", Owner::kBlock, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
    {"fcw", Owner::kBlock, {Dim::kC, 4}, {Dim::kC, 1}, true, false},
    {"fcb", Owner::kBlock, {Dim::kC, 4}, {Dim::kOne, 0}, false, false},
    {"fcprojw", Owner::kBlock, {Dim::kC, 1}, {Dim::kC, 4}, true, false},
    {"fcprojb", Owner::kBlock, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
    {"lnfw", Owner::kFinal, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
    {"lnfb", Owner::kFinal, {Dim::kC, 1}, {Dim::kOne, 0}, false, false},
};
inline constexpr int kNumGptParams = sizeof(kGptParams) / sizeof(kGptParams[0]);

// A parameter's position within its module (the order of its owner's rows above).
enum BlockParam : int {
  kLn1w,
  kLn1b,
  kQkvw,
  kQkvb,
  kAttprojw,
  kAttprojb,
  kLn2w,
  kLn2b,
  kFcw,
  kFcb,
  kFcprojw,
  kFcprojb,
  kNumBlockParams
};
enum EmbeddingParam : int { kWte, kWpe };
enum FinalParam : int { kLnfw, kLnfb };

// The shape of row `row` of kGptParams.
std::vector<int64_t> ParamShape(int row, const GptConfig& c);

// The parameter count of the whole model of shape `c` (every row of kGptParams, a block's once per
// layer), in double so that no shape overflows it. For readers of files that name a shape: they
// check that the file can hold that many parameters before they build a layout, whose work grows
// with n_layer (a damaged header may say 2^31 - 1).
double GptParameterCount(const GptConfig& c);

// ---- activations ----
// Which part of the model allocates a row, and how many copies (ActCopies).
enum class ActOwner {
  kEmbedding,    // first stage: the inputs and the embedding output (a later stage's input)
  kBlock,        // one per block in the range (with activation checkpointing: one, reused)
  kBlockOutput,  // one per block in the range, always: the block's output, the next one's input
  kHead,         // last stage: final LayerNorm, logits, losses
  kBackward,     // scratch of the backward pass, shared by the blocks and the buffers
};
// Rows whose size a device decides (device::Ops::AttentionStateElements / ...ScratchElements).
enum class ActSize { kPerToken, kAttentionState, kAttentionScratch };
struct ActRow {
  const char* name;
  ActOwner owner;
  ActSize size;
  Extent per_token;  // elements per token of the micro-batch (kPerToken rows)
  DType dtype;
  // Read only by matrix products (as their input, forward and weight gradient): under bf16
  // products the row may be kept in bf16 instead of `dtype` (ActDType), since the products round
  // it there anyway.
  bool product_input = false;
};

inline constexpr ActRow kGptActivations[] = {
    // First stage. encoded (B,T,C): wte[tokens] + wpe, the residual stream into the first block
    // (a later stage receives its input here).
    {"tokens", ActOwner::kEmbedding, ActSize::kPerToken, {Dim::kOne, 1}, DType::kI32},
    {"encoded", ActOwner::kEmbedding, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32},
    // Per block (B,T,·): the inputs every kernel's backward reads.
    {"ln1", ActOwner::kBlock, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32, true},
    {"ln1_mean", ActOwner::kBlock, ActSize::kPerToken, {Dim::kOne, 1}, DType::kF32},
    {"ln1_rstd", ActOwner::kBlock, ActSize::kPerToken, {Dim::kOne, 1}, DType::kF32},
    {"qkv", ActOwner::kBlock, ActSize::kPerToken, {Dim::kC, 3}, DType::kF32},
    {"atty", ActOwner::kBlock, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32, true},
    {"att", ActOwner::kBlock, ActSize::kAttentionState, {Dim::kOne, 0}, DType::kF32},
    {"residual2", ActOwner::kBlock, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32},
    {"ln2", ActOwner::kBlock, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32, true},
    {"ln2_mean", ActOwner::kBlock, ActSize::kPerToken, {Dim::kOne, 1}, DType::kF32},
    {"ln2_rstd", ActOwner::kBlock, ActSize::kPerToken, {Dim::kOne, 1}, DType::kF32},
    {"fch", ActOwner::kBlock, ActSize::kPerToken, {Dim::kC, 4}, DType::kF32},
    {"fch_gelu", ActOwner::kBlock, ActSize::kPerToken, {Dim::kC, 4}, DType::kF32, true},
    // The block's output: kept for every block even under activation checkpointing, which
    // recomputes a block's other activations from its input in the backward pass.
    {"residual3", ActOwner::kBlockOutput, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32},
    // Last stage. logits (B,T,Vp) become dlogits in a training forward.
    {"targets", ActOwner::kHead, ActSize::kPerToken, {Dim::kOne, 1}, DType::kI32},
    {"lnf", ActOwner::kHead, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32, true},
    {"lnf_mean", ActOwner::kHead, ActSize::kPerToken, {Dim::kOne, 1}, DType::kF32},
    {"lnf_rstd", ActOwner::kHead, ActSize::kPerToken, {Dim::kOne, 1}, DType::kF32},
    {"logits", ActOwner::kHead, ActSize::kPerToken, {Dim::kVp, 1}, DType::kF32},
    {"losses", ActOwner::kHead, ActSize::kPerToken, {Dim::kOne, 1}, DType::kF32},
    // Backward scratch. dstream (B,T,C) is the gradient of the residual stream (on a stage that
    // has no head, its caller puts the output's gradient there; on one that does not embed, it
    // holds the input's gradient afterwards).
    {"dstream", ActOwner::kBackward, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32},
    {"dbtc", ActOwner::kBackward, ActSize::kPerToken, {Dim::kC, 1}, DType::kF32},
    {"dqkv", ActOwner::kBackward, ActSize::kPerToken, {Dim::kC, 3}, DType::kF32},
    {"dfch", ActOwner::kBackward, ActSize::kPerToken, {Dim::kC, 4}, DType::kF32},
    {"att_scratch", ActOwner::kBackward, ActSize::kAttentionScratch, {Dim::kOne, 0}, DType::kF32},
};
inline constexpr int kNumGptActivations = sizeof(kGptActivations) / sizeof(kGptActivations[0]);

// Row indices of kGptActivations (checked against the names in gpt_sizes.cc).
enum Act : int {
  kTokens,
  kEncoded,
  kLn1,
  kLn1Mean,
  kLn1Rstd,
  kQkv,
  kAtty,
  kAtt,
  kResidual2,
  kLn2,
  kLn2Mean,
  kLn2Rstd,
  kFch,
  kFchGelu,
  kResidual3,
  kTargets,
  kLnf,
  kLnfMean,
  kLnfRstd,
  kLogits,
  kLosses,
  kDstream,
  kDbtc,
  kDqkv,
  kDfch,
  kAttScratch,
};

// What a device says of the rows it sizes (device::Ops), per block and micro-batch, and whether
// its layers take bf16 product inputs (device::Sizing::bf16_matmul_inputs).
struct DeviceSizes {
  int64_t attention_state = 0;    // elements per block
  int64_t attention_scratch = 0;  // elements, shared
  bool bf16_matmul_inputs = false;
};

// How a model holds its activations.
struct ActivationPlan {
  // Micro-batches in flight at once (a pipeline stage's activation buffers; 1 otherwise): every
  // row but the backward scratch is held once per buffer.
  int buffers = 1;
  // Activation checkpointing (pipeline.activation_checkpoint_interval, as DeepSpeed's
  // PipelineModule reads it): 0 keeps every activation. k > 0 cuts the model's blocks into
  // segments of k (the last one may be shorter); a segment keeps only its output (its last
  // block's kBlockOutput rows, the next segment's input) and recomputes its blocks from its input
  // in its backward pass, into scratch shared by every segment and buffer: k sets of kBlock rows
  // and the outputs of the k − 1 blocks inside a segment. The gradients are bitwise those without
  // it (the same operations on the same values). k = 1 keeps every block's output and one set of
  // scratch; k = √L roughly minimises the memory.
  int checkpoint_interval = 0;
  // activation_checkpointing.synchronize_checkpoint_boundary: wait for the device at every
  // segment boundary (forward and recompute), as DeepSpeed's synchronises CUDA there.
  bool synchronize = false;
  // activation_checkpointing.profile: time the recomputation (Gpt::recompute_seconds), the device
  // synchronised around it.
  bool profile = false;
  // Keep the rows only matrix products read (ActRow::product_input: the LayerNorm outputs, the
  // attention's output, GELU's output) in bf16 when the products are bf16 and the device takes
  // them: half their memory and no rounding pass before each product, the same results (the
  // products round exactly these values). false keeps them in fp32, for comparisons.
  bool bf16_matmul_inputs = true;

  bool checkpoint() const { return checkpoint_interval > 0; }
  // Segments of a model of `blocks` blocks (blocks itself without checkpointing).
  int Segments(int blocks) const;
  // The largest segment: blocks in scratch at once (0 without checkpointing).
  int SegmentBlocks(int blocks) const;
  bool operator==(const ActivationPlan& o) const {
    return buffers == o.buffers && checkpoint_interval == o.checkpoint_interval &&
           synchronize == o.synchronize && profile == o.profile &&
           bf16_matmul_inputs == o.bf16_matmul_inputs;
  }
};

// Copies of row `row` a model of `range` allocates under `plan`.
int ActCopies(int row, const GptConfig& c, BlockRange range, const ActivationPlan& plan = {});
// Elements of one copy of row `row` for a micro-batch of B × T tokens.
int64_t ActElements(int row, const GptConfig& c, int B, int T, const DeviceSizes& device);
// The dtype row `row` is kept in when the matrix products' operands are `matmul` (kF32 or kBF16,
// Model::set_matmul_precision): bf16 for a product input under bf16 products where the plan and
// the device allow it, else the table's dtype.
DType ActDType(int row, const ActivationPlan& plan, DType matmul, const DeviceSizes& device);
// Bytes of every activation a model of `range` allocates for B × T micro-batches under `plan`
// with products on `matmul` operands: what the allocator shows under kActivations while it runs.
int64_t ActivationBytes(const GptConfig& c, int B, int T, BlockRange range,
                        const DeviceSizes& device, const ActivationPlan& plan = {},
                        DType matmul = DType::kF32);

}  // namespace dstrain::model
