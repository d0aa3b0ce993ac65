#include "worker/model/param_layout.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dstrain::model {
namespace {

constexpr int64_t kAlignFloats = 16;

int64_t AlignUp(int64_t x) { return (x + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

}  // namespace

absl::StatusOr<ParamLayout> ParamLayout::ForGpt(const GptConfig& c) {
  if (c.n_layer <= 0 || c.n_head <= 0 || c.n_embd <= 0 || c.vocab_size <= 0 || c.block_size <= 0) {
    return absl::InvalidArgumentError("GPT sizes must be positive");
  }
  if (c.n_embd % c.n_head != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_embd ", c.n_embd, " is not divisible by n_head ", c.n_head));
  }
  if (c.padded_vocab_size < c.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("padded_vocab_size ", c.padded_vocab_size, " < vocab_size ", c.vocab_size));
  }
  const int64_t C = c.n_embd, Vp = c.padded_vocab_size, maxT = c.block_size;
  ParamLayout layout;
  auto begin_module = [&](std::string name) {
    layout.modules_.push_back(ModuleSpec{std::move(name), layout.total_, 0, {}});
  };
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    ParamSpec p;
    p.name = std::move(name);
    p.numel = 1;
    for (int64_t d : shape) p.numel *= d;
    p.shape = std::move(shape);
    p.offset = layout.total_;
    p.module = static_cast<int>(layout.modules_.size()) - 1;
    layout.total_ = AlignUp(layout.total_ + p.numel);
    layout.num_parameters_ += p.numel;
    ModuleSpec& m = layout.modules_.back();
    m.params.push_back(static_cast<int>(layout.params_.size()));
    m.numel = layout.total_ - m.offset;
    layout.params_.push_back(std::move(p));
  };
  begin_module("embedding");
  add("wte", {Vp, C});
  add("wpe", {maxT, C});
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string b = absl::StrCat("block.", l, ".");
    begin_module(absl::StrCat("block.", l));
    add(b + "ln1w", {C});
    add(b + "ln1b", {C});
    add(b + "qkvw", {3 * C, C});
    add(b + "qkvb", {3 * C});
    add(b + "attprojw", {C, C});
    add(b + "attprojb", {C});
    add(b + "ln2w", {C});
    add(b + "ln2b", {C});
    add(b + "fcw", {4 * C, C});
    add(b + "fcb", {4 * C});
    add(b + "fcprojw", {C, 4 * C});
    add(b + "fcprojb", {C});
  }
  begin_module("final");
  add("lnfw", {C});
  add("lnfb", {C});
  return layout;
}

const ParamSpec* ParamLayout::Find(absl::string_view name) const {
  for (const ParamSpec& p : params_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

GptParamOffsets OffsetsOf(const ParamLayout& layout, int n_layer) {
  // ForGpt adds parameters in a fixed order; read the offsets back by position.
  const auto& p = layout.params();
  GptParamOffsets o;
  o.wte = p[0].offset;
  o.wpe = p[1].offset;
  for (int l = 0; l < n_layer; ++l) {
    const int i = 2 + 12 * l;
    o.blocks.push_back(BlockParams{p[i].offset, p[i + 1].offset, p[i + 2].offset, p[i + 3].offset,
                                   p[i + 4].offset, p[i + 5].offset, p[i + 6].offset,
                                   p[i + 7].offset, p[i + 8].offset, p[i + 9].offset,
                                   p[i + 10].offset, p[i + 11].offset});
  }
  o.lnfw = p[2 + 12 * n_layer].offset;
  o.lnfb = p[3 + 12 * n_layer].offset;
  return o;
}

}  // namespace dstrain::model
