#include "worker/pipe/topology.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dstrain::pipe {

absl::StatusOr<Topology> Topology::Create(int world, int stages) {
  if (world < 1 || stages < 1 || world % stages != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline.stages: ", stages, " does not divide the world size ", world));
  }
  return Topology(world, stages);
}

std::vector<int> Topology::StageRanks(int stage) const {
  std::vector<int> ranks;
  for (int d = 0; d < data_parallel_size(); ++d) ranks.push_back(RankOf(stage, d));
  return ranks;
}

std::vector<int> Topology::PipelineRanks(int data_rank) const {
  std::vector<int> ranks;
  for (int s = 0; s < stages_; ++s) ranks.push_back(RankOf(s, data_rank));
  return ranks;
}

}  // namespace dstrain::pipe
