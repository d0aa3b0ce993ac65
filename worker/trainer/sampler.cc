#include "worker/trainer/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "common/status/status_macros.h"

namespace dstrain::trainer {

absl::StatusOr<std::vector<int32_t>> Sample(model::Gpt& gpt, tensor::View params,
                                            std::vector<int32_t> prompt, int num_tokens,
                                            float temperature, Rng& rng) {
  if (prompt.empty()) return absl::InvalidArgumentError("sampling needs a non-empty prompt");
  const int maxT = gpt.config().block_size, V = gpt.config().vocab_size;
  const int Vp = gpt.config().padded_vocab_size;
  std::vector<int32_t> out;
  std::vector<double> probs(V);
  std::vector<float> last(Vp);
  for (int n = 0; n < num_tokens; ++n) {
    const int T = std::min<int>(prompt.size(), maxT);
    const int32_t* context = prompt.data() + prompt.size() - T;
    DT_RETURN_IF_ERROR(gpt.Forward(params, context, nullptr, 1, T).status());
    gpt.ops().CopyToHost(last.data(), gpt.logits().Sub(int64_t{T - 1} * Vp, Vp));  // last position
    DT_RETURN_IF_ERROR(gpt.ops().status());
    const float* logits = last.data();
    int32_t next = 0;
    if (temperature <= 0.f) {
      next = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
    } else {
      const double mx = *std::max_element(logits, logits + V);
      double sum = 0;
      for (int v = 0; v < V; ++v) sum += probs[v] = std::exp((logits[v] - mx) / temperature);
      double u = rng.Uniform() * sum;
      next = V - 1;
      for (int v = 0; v < V; ++v) {
        if ((u -= probs[v]) < 0) {
          next = v;
          break;
        }
      }
    }
    prompt.push_back(next);
    out.push_back(next);
  }
  return out;
}

}  // namespace dstrain::trainer
