// Text generation from a trained GPT: autoregressive sampling with temperature.
//
// Each new token re-runs the forward pass over the whole context (up to block_size tokens, the
// oldest dropped beyond that), as llm.c's CPU trainer does: simple, and cheap next to training
// for the few hundred tokens a progress sample needs. Not thread-safe (uses the model).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/random/rng.h"
#include "worker/model/gpt.h"

namespace dstrain::trainer {

// Appends `num_tokens` sampled ids to `prompt` and returns the new ids only. temperature <= 0
// picks the most likely token. Only the real vocabulary (not the padding) is sampled. `params` is
// the full flat f32 parameters on the model's device; the last position's logits come to the host
// for the draw.
absl::StatusOr<std::vector<int32_t>> Sample(model::Gpt& gpt, tensor::View params,
                                            std::vector<int32_t> prompt, int num_tokens,
                                            float temperature, Rng& rng);

}  // namespace dstrain::trainer
