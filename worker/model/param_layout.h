// The GPT's parameters as one flat fp32 buffer with named, shaped slices grouped into modules.
//
// One contiguous buffer makes the optimizer a single fused pass and lets ZeRO partition
// parameters, gradients and optimizer state as flat ranges later. Each parameter starts on a
// 16-float (64-byte) boundary so vector kernels see aligned rows; the few padding floats between
// parameters are zero and receive zero gradients. Modules are the unit ZeRO-3 gathers and
// releases: "embedding" (wte, wpe), "block.<l>" (the 12 tensors of layer l), "final" (lnfw, lnfb),
// each holding its owner's rows of the size table (gpt_sizes.h) in table order. The LM head is
// tied to wte, so the final module also reads the embedding module's wte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/gpt_sizes.h"

namespace dstrain::model {

struct ParamSpec {
  std::string name;            // "wte", "block.3.qkvw", "lnfw"
  std::vector<int64_t> shape;  // e.g. {3C, C}
  int64_t numel = 0;
  int64_t offset = 0;  // in floats, from the start of the flat buffer
  int module = 0;      // index into ParamLayout::modules()
  int row = 0;         // the GPT's: its row of kGptParams (gpt_sizes.h); 0 for other models
  int layer = -1;      // its block, or -1
  // A matrix-product operand: held 16-bit under bf16 mixed precision and handed to the matrix
  // products as such (the GPT's size table's `matrix` column; declared by other models).
  bool matrix = false;
};

struct ModuleSpec {
  std::string name;  // "embedding", "block.<l>", "final"
  Owner owner = Owner::kEmbedding;
  int layer = -1;      // block modules: the block
  int64_t offset = 0;  // first float of the module's first parameter
  int64_t numel = 0;   // floats up to the end of its last parameter (padding included)
  std::vector<int> params;
};

class ParamLayout {
 public:
  // The parameters a model of `range` holds (gpt_sizes.h): the embedding module on the first
  // stage, block.<l> for each block in range, and on the last stage the final module and, when
  // it does not embed, a module "embedding" holding the tied rows (wte) alone.
  static absl::StatusOr<ParamLayout> ForGpt(const GptConfig& config, BlockRange range = {});

  const std::vector<ParamSpec>& params() const { return params_; }
  const std::vector<ModuleSpec>& modules() const { return modules_; }
  // A layout of declared parameters (another model than the GPT): modules in the order of their
  // first parameter; each parameter of `modules[m]` with its name, shape and `matrix`. Errors:
  // kInvalidArgument naming the parameter or module for an empty or repeated name, a module
  // without parameters or a dimension < 1.
  struct DeclaredParam {
    std::string name;
    std::vector<int64_t> shape;
    bool matrix = false;
  };
  struct DeclaredModule {
    std::string name;
    std::vector<DeclaredParam> params;
  };
  static absl::StatusOr<ParamLayout> FromDeclared(const std::vector<DeclaredModule>& modules);

  // Floats in the flat buffer, padding included.
  int64_t total() const { return total_; }
  // Sum of parameter sizes, padding excluded (the model's parameter count).
  int64_t num_parameters() const { return num_parameters_; }
  // The parameter called `name`, or null.
  const ParamSpec* Find(absl::string_view name) const;

 private:
  // Places `p` (numel set) at the end of the buffer, aligned, as parameter of `module` (`m`, not
  // yet in modules_).
  void Append(ParamSpec p, int module, ModuleSpec* m);

  std::vector<ParamSpec> params_;
  std::vector<ModuleSpec> modules_;
  int64_t total_ = 0;
  int64_t num_parameters_ = 0;
};

}  // namespace dstrain::model
