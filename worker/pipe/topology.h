// The data × pipeline grid of a job's ranks, laid out as DeepSpeed's PipeDataParallelTopology:
// the pipeline axis outermost and the data axis innermost, so
//
//   rank = stage · data_parallel_size + data_rank
//
// and the ranks of one stage (its data-parallel group) are adjacent — on a host with several
// ranks they share the machine, and gradient reductions, the heaviest traffic, stay local — while
// a pipeline (one data rank's stages) strides across them.
#pragma once

#include <vector>

#include "absl/status/statusor.h"

namespace dstrain::pipe {

class Topology {
 public:
  // kInvalidArgument when stages does not divide world (naming pipeline.stages).
  static absl::StatusOr<Topology> Create(int world, int stages);

  int world() const { return world_; }
  int stages() const { return stages_; }
  int data_parallel_size() const { return world_ / stages_; }

  int StageOf(int rank) const { return rank / data_parallel_size(); }
  int DataRankOf(int rank) const { return rank % data_parallel_size(); }
  int RankOf(int stage, int data_rank) const { return stage * data_parallel_size() + data_rank; }
  // The ranks of stage `stage` (its data-parallel group), ascending.
  std::vector<int> StageRanks(int stage) const;
  // The ranks of data rank `data_rank`'s pipeline, stage by stage (ascending).
  std::vector<int> PipelineRanks(int data_rank) const;

 private:
  Topology(int world, int stages) : world_(world), stages_(stages) {}
  int world_, stages_;
};

}  // namespace dstrain::pipe
