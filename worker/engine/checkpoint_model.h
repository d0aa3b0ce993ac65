// Internal to checkpoint_io: what a checkpoint's manifest records about its model (meta.model),
// and the checks a load makes against it (docs/checkpoints.md, "Manifest").
//
//   the built-in GPT: its shape, {"n_layer": L, "n_head": NH, "n_embd": C, "vocab_size": V,
//                     "padded_vocab_size": Vp, "block_size": T}
//   any other model:  {"type": "module", "modules": [{"name": M, "params": [{"name": P,
//                     "shape": [...], "matrix": bool}, ...]}, ...]} — its declared layout
//                     (model::ParamLayout::FromDeclared), which places every parameter, so
//                     names and shapes are all a load must compare.
#pragma once

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "worker/checkpoint/commit.h"
#include "worker/engine/engine.h"
#include "worker/model/gpt_sizes.h"
#include "worker/model/param_layout.h"

namespace dstrain::engine::internal {

// meta.model for the engine's model.
nlohmann::json ModelToJson(Engine& engine);

// Whether the checkpoint holds a module (meta.model.type "module") rather than the GPT.
bool HoldsModule(const checkpoint::CheckpointReader& reader);

// The GPT shape meta.model records. kDataLoss naming the manifest when a field is missing;
// kFailedPrecondition when the checkpoint holds a module.
absl::StatusOr<model::GptConfig> ShapeFromManifest(const checkpoint::CheckpointReader& reader);

// The declared layout a module checkpoint records. kDataLoss naming the manifest for a damaged
// record; kFailedPrecondition when the checkpoint holds the GPT.
absl::StatusOr<model::ParamLayout> ModuleLayoutFromManifest(
    const checkpoint::CheckpointReader& reader);

// kFailedPrecondition naming every difference between the checkpoint's model and the engine's
// (a GPT shape field; a module's parameter missing, extra, or of another shape or kind).
absl::Status CheckSavedModel(const checkpoint::CheckpointReader& reader, Engine& engine);

}  // namespace dstrain::engine::internal
