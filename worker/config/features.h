// What dstrain implements today, in one place (internal to worker/config).
//
// The schema in keys.cc knows every DeepSpeed key, but some of them switch on a feature dstrain
// does not have yet (tensor parallelism, offload, monitors, ...). Each such key is marked "gated"
// in the schema and listed here with a human name and whether it is implemented. A config that
// turns on an unimplemented feature is rejected before anything starts ("tensor_parallel: tensor
// parallelism is not supported yet"), instead of being silently ignored as DeepSpeed ignores what
// it does not know. Enabling a feature is one line in features.cc once the engine supports it.
//
// Thread-safety: immutable tables.
#pragma once

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace dstrain::config::internal {

struct FeatureSwitch {
  const char* path;     // key path of the switch, e.g. "fp16.enabled"
  const char* feature;  // what it turns on, for error messages
  bool implemented;
};

// Highest zero_optimization.stage the engine runs (0 = plain data parallelism).
int ImplementedMaxZeroStage();

// The switch for `path`, or nullptr when the table lacks it (a bug in keys.cc or features.cc,
// caught by config_test's consistency check).
const FeatureSwitch* FindFeatureSwitch(absl::string_view path);

absl::Span<const FeatureSwitch> AllFeatureSwitches();

}  // namespace dstrain::config::internal
