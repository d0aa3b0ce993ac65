// The GPT's parameters as one flat fp32 buffer with named, shaped slices grouped into modules.
//
// One contiguous buffer makes the optimizer a single fused pass and lets ZeRO partition
// parameters, gradients and optimizer state as flat ranges later. Each parameter starts on a
// 16-float (64-byte) boundary so vector kernels see aligned rows; the few padding floats between
// parameters are zero and receive zero gradients. Modules are the unit ZeRO-3 gathers and
// releases: "embedding" (wte, wpe), "block.<l>" (the 12 tensors of layer l), "final" (lnfw, lnfb).
// The LM head is tied to wte, so the final module also reads the embedding module's wte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

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

struct ParamSpec {
  std::string name;            // "wte", "block.3.qkvw", "lnfw"
  std::vector<int64_t> shape;  // e.g. {3C, C}
  int64_t numel = 0;
  int64_t offset = 0;  // in floats, from the start of the flat buffer
  int module = 0;      // index into ParamLayout::modules()
};

struct ModuleSpec {
  std::string name;
  int64_t offset = 0;  // first float of the module's first parameter
  int64_t numel = 0;   // floats up to the end of its last parameter (padding included)
  std::vector<int> params;
};

class ParamLayout {
 public:
  static absl::StatusOr<ParamLayout> ForGpt(const GptConfig& config);

  const std::vector<ParamSpec>& params() const { return params_; }
  const std::vector<ModuleSpec>& modules() const { return modules_; }
  // Floats in the flat buffer, padding included.
  int64_t total() const { return total_; }
  // Sum of parameter sizes, padding excluded (the model's parameter count).
  int64_t num_parameters() const { return num_parameters_; }
  // The parameter called `name`, or null.
  const ParamSpec* Find(absl::string_view name) const;

 private:
  std::vector<ParamSpec> params_;
  std::vector<ModuleSpec> modules_;
  int64_t total_ = 0;
  int64_t num_parameters_ = 0;
};

// Offsets of one transformer block's parameters within the flat buffer.
struct BlockParams {
  int64_t ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb;
};
struct GptParamOffsets {
  int64_t wte, wpe, lnfw, lnfb;
  std::vector<BlockParams> blocks;
};
GptParamOffsets OffsetsOf(const ParamLayout& layout, int n_layer);

}  // namespace dstrain::model
