// Which blocks each pipeline stage runs (DeepSpeed's PipelineModule partition_method).
//
// The model is a list of layers: "embedding", "block.0" .. "block.<L-1>", "final" (the final
// LayerNorm and the tied head with the loss). Stages take contiguous runs, the first always with
// the embedding and the last with "final"; each stage gets at least one block. A method gives each
// layer a weight, and the cut minimises the heaviest stage (the pipeline's bottleneck), taking the
// earliest such cut:
//   "parameters"  a layer weighs its parameter count (DeepSpeed's default)
//   "uniform"     a block weighs 1, embedding and final 0: the blocks are spread evenly
//   "type:REGEX"  a layer weighs 1 when REGEX matches its name (search, case-insensitive), else
//                 0: the matching layers are spread evenly
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/gpt_sizes.h"

namespace dstrain::pipe {

struct StagePartition {
  model::BlockRange blocks;  // the stage's blocks
  int64_t weight = 0;        // its layers' weight under the method
  int64_t parameters = 0;    // its parameters (a non-first last stage counts the tied wte too)
};

// Errors (kInvalidArgument, naming the key): more stages than blocks
// ("pipeline.stages"), an unknown method or a regex that does not compile or matches no layer
// ("pipeline.partition").
absl::StatusOr<std::vector<StagePartition>> PartitionLayers(const model::GptConfig& config,
                                                            int stages, absl::string_view method);

// "stage 0: blocks [0, 3) (embedding), 1.23M parameters; ...": printed at start.
std::string DescribePartition(const std::vector<StagePartition>& stages, int n_layer);

}  // namespace dstrain::pipe
