#include "worker/pipe/layer_partition.h"

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/status/status_macros.h"
#include "re2/re2.h"
#include "worker/model/param_layout.h"

namespace dstrain::pipe {
namespace {

// Layer names in order: embedding, block.0 .. block.<L-1>, final.
std::vector<std::string> LayerNames(int n_layer) {
  std::vector<std::string> names = {"embedding"};
  for (int l = 0; l < n_layer; ++l) names.push_back(absl::StrCat("block.", l));
  names.push_back("final");
  return names;
}

// Parameters of each layer; "final" counts the tied wte, which its head multiplies with.
absl::StatusOr<std::vector<int64_t>> LayerParameters(const model::GptConfig& c) {
  DT_ASSIGN_OR_RETURN(const model::ParamLayout layout, model::ParamLayout::ForGpt(c));
  std::vector<int64_t> params(c.n_layer + 2, 0);
  for (const model::ParamSpec& p : layout.params()) {
    const model::ModuleSpec& m = layout.modules()[p.module];
    if (m.owner == model::Owner::kBlock) params[1 + m.layer] += p.numel;
    if (m.owner == model::Owner::kEmbedding) params[0] += p.numel;
    if (m.owner == model::Owner::kFinal) params[c.n_layer + 1] += p.numel;
    if (model::kGptParams[p.row].tied) params[c.n_layer + 1] += p.numel;
  }
  return params;
}

absl::StatusOr<std::vector<int64_t>> LayerWeights(const model::GptConfig& c,
                                                  absl::string_view method) {
  const int layers = c.n_layer + 2;
  if (method == "parameters") return LayerParameters(c);
  std::vector<int64_t> w(layers, 0);
  if (method == "uniform") {
    for (int l = 1; l <= c.n_layer; ++l) w[l] = 1;
    return w;
  }
  absl::string_view pattern = method;
  if (!absl::ConsumePrefix(&pattern, "type:")) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline.partition: '", method,
                                                   "' is not parameters, uniform or type:REGEX"));
  }
  // RE2, not std::regex: matching is linear in the input whatever the pattern, so a job file's
  // pattern cannot make the trainer's start-up hang or overflow the stack.
  RE2::Options options;
  options.set_case_sensitive(false);
  options.set_log_errors(false);
  const RE2 re(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (!re.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline.partition: bad regex '", pattern, "': ", re.error()));
  }
  const std::vector<std::string> names = LayerNames(c.n_layer);
  bool any = false;
  for (int i = 0; i < layers; ++i) {
    w[i] = RE2::PartialMatch(names[i], re) ? 1 : 0;
    any |= w[i] != 0;
  }
  if (!any) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline.partition: '", pattern,
                                                   "' matches no layer (layers: embedding, "
                                                   "block.0 .. block.",
                                                   c.n_layer - 1, ", final)"));
  }
  return w;
}

}  // namespace

absl::StatusOr<std::vector<StagePartition>> PartitionLayers(const model::GptConfig& c, int S,
                                                            absl::string_view method) {
  const int L = c.n_layer;
  if (S < 1 || S > L) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline.stages: ", S, " stages for ", L,
                                                   " blocks (each stage needs at least one)"));
  }
  DT_ASSIGN_OR_RETURN(const std::vector<int64_t> w, LayerWeights(c, method));
  DT_ASSIGN_OR_RETURN(const std::vector<int64_t> params, LayerParameters(c));
  // Weight of stage k holding blocks [a, b).
  auto stage_weight = [&](const std::vector<int64_t>& v, int k, int a, int b) {
    int64_t sum = 0;
    for (int l = a; l < b; ++l) sum += v[1 + l];
    if (k == 0) sum += v[0];
    if (k == S - 1) sum += v[L + 1];
    return sum;
  };
  // best[k][a]: the smallest bottleneck of stages k.. S-1 holding blocks [a, L).
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> best(S + 1, std::vector<int64_t>(L + 1, kInf));
  best[S][L] = 0;
  for (int k = S - 1; k >= 0; --k) {
    for (int a = 0; a < L; ++a) {
      for (int b = a + 1; b <= L - (S - 1 - k); ++b) {
        if (best[k + 1][b] == kInf) continue;
        best[k][a] = std::min(best[k][a], std::max(stage_weight(w, k, a, b), best[k + 1][b]));
      }
    }
  }
  // Each stage in turn takes as many blocks as the optimum allows: earlier stages fuller.
  std::vector<StagePartition> out;
  const int64_t bottleneck = best[0][0];
  int a = 0;
  for (int k = 0; k < S; ++k) {
    int end = a + 1;
    for (int b = L - (S - 1 - k); b > a; --b) {
      if (best[k + 1][b] != kInf &&
          std::max(stage_weight(w, k, a, b), best[k + 1][b]) <= bottleneck) {
        end = b;
        break;
      }
    }
    out.push_back(
        {model::BlockRange{a, end}, stage_weight(w, k, a, end), stage_weight(params, k, a, end)});
    a = end;
  }
  return out;
}

std::string DescribePartition(const std::vector<StagePartition>& stages, int n_layer) {
  std::string out;
  for (size_t k = 0; k < stages.size(); ++k) {
    const model::BlockRange r = stages[k].blocks;
    absl::StrAppend(&out, k ? "; " : "", "stage ", k, ": blocks [", r.first, ", ", r.End(n_layer),
                    ")", k == 0 ? " + embedding" : "",
                    k + 1 == stages.size() ? " + final/head" : "",
                    absl::StrFormat(", %.2fM parameters", stages[k].parameters / 1e6));
  }
  return out;
}

}  // namespace dstrain::pipe
