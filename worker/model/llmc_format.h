// llm.c's GPT-2 model file: 256 little-endian int32 header, then fp32 parameters.
//
// Header: [0] 20240326 magic, [1] 3 (fp32), [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp.
// Parameters follow grouped by kind across layers, in the size table's order (gpt_sizes.h):
// wte (Vp,C), wpe (maxT,C), ln1w (L,C), ln1b (L,C), qkvw (L,3C,C), qkvb (L,3C), attprojw (L,C,C),
// attprojb (L,C), ln2w, ln2b, fcw (L,4C,C), fcb (L,4C), fcprojw (L,C,4C), fcprojb (L,C),
// lnfw (C), lnfb (C).
// This is the consolidated export format (`dstrain export`) and a way to start training from
// existing weights (model.init_from). Our flat layout groups by layer instead; these functions
// convert between the two.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/env/env.h"
#include "worker/model/param_layout.h"

namespace dstrain::model {

inline constexpr int kLlmcModelMagic = 20240326;
inline constexpr int kLlmcModelVersionF32 = 3;

// The file's bytes as pieces to write one after the other: `*header` (filled here; keep it alive
// and unchanged), then every parameter's floats in file order straight from `params` (no staging
// copy of the model). For writers with their own path to the disk (a checkpoint's model.bin,
// checksummed as it is written).
absl::StatusOr<std::vector<absl::string_view>> LlmcModelPieces(const GptConfig& config,
                                                               const ParamLayout& layout,
                                                               const float* params,
                                                               std::vector<int32_t>* header);

// Writes `params` (layout.total() floats in ParamLayout order, host memory) to `path` atomically
// through `env` (the POSIX one when null): env::WriteFileAtomically's contract, so `path` holds
// the old file or the whole new one, never a torn one.
absl::Status WriteLlmcModel(const std::string& path, const GptConfig& config,
                            const ParamLayout& layout, const float* params,
                            env::Env* env = nullptr);

struct LlmcModel {
  GptConfig config;
  std::vector<float> params;  // in ParamLayout::ForGpt(config) order, padding zeroed
};

// Reads and validates a model file (magic, version, sizes, exact file length).
absl::StatusOr<LlmcModel> ReadLlmcModel(const std::string& path);

}  // namespace dstrain::model
