#include "worker/model/param_layout.h"

#include <algorithm>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dstrain::model {
namespace {

constexpr int64_t kAlignFloats = 16;

int64_t AlignUp(int64_t x) { return (x + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

}  // namespace

absl::StatusOr<ParamLayout> ParamLayout::ForGpt(const GptConfig& c, BlockRange range) {
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
  const int end = range.End(c.n_layer);
  if (range.first < 0 || range.first >= end || end > c.n_layer) {
    return absl::InvalidArgumentError(absl::StrCat("block range [", range.first, ", ", end,
                                                   ") is not within the ", c.n_layer, " blocks"));
  }
  ParamLayout layout;
  // One module of `owner`'s rows (only the tied ones when `tied_only`), for block `layer`.
  auto add_module = [&](Owner owner, int layer, bool tied_only) {
    ModuleSpec m;
    m.name = owner == Owner::kBlock       ? absl::StrCat("block.", layer)
             : owner == Owner::kEmbedding ? "embedding"
                                          : "final";
    m.owner = owner;
    m.layer = layer;
    m.offset = layout.total_;
    const int module = static_cast<int>(layout.modules_.size());
    for (int row = 0; row < kNumGptParams; ++row) {
      const ParamRow& r = kGptParams[row];
      if (r.owner != owner || (tied_only && !r.tied)) continue;
      ParamSpec p;
      p.name = owner == Owner::kBlock ? absl::StrCat(m.name, ".", r.name) : r.name;
      p.shape = ParamShape(row, c);
      p.numel = 1;
      for (int64_t d : p.shape) p.numel *= d;
      p.row = row;
      p.layer = layer;
      p.matrix = r.matrix;
      layout.Append(std::move(p), module, &m);
    }
    m.numel = layout.total_ - m.offset;
    layout.modules_.push_back(std::move(m));
  };
  if (range.Embeds() || range.HasHead(c.n_layer)) {
    add_module(Owner::kEmbedding, -1, /*tied_only=*/!range.Embeds());
  }
  for (int l = range.first; l < end; ++l) add_module(Owner::kBlock, l, false);
  if (range.HasHead(c.n_layer)) add_module(Owner::kFinal, -1, false);
  return layout;
}

absl::StatusOr<ParamLayout> ParamLayout::FromDeclared(const std::vector<DeclaredModule>& modules) {
  if (modules.empty()) return absl::InvalidArgumentError("the model declares no parameter");
  ParamLayout layout;
  std::set<std::string> names, module_names;
  for (const DeclaredModule& d : modules) {
    if (d.name.empty()) return absl::InvalidArgumentError("a module without a name");
    if (!module_names.insert(d.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("module '", d.name, "' declared twice"));
    }
    if (d.params.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("module '", d.name, "' has no parameter"));
    }
    ModuleSpec m;
    m.name = d.name;
    m.owner = Owner::kBlock;
    m.offset = layout.total_;
    const int module = static_cast<int>(layout.modules_.size());
    for (const DeclaredParam& dp : d.params) {
      if (dp.name.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("module '", d.name, "': a parameter without a name"));
      }
      if (!names.insert(dp.name).second) {
        return absl::InvalidArgumentError(absl::StrCat("parameter '", dp.name, "' declared twice"));
      }
      if (dp.shape.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("parameter '", dp.name, "': no shape"));
      }
      ParamSpec p;
      p.name = dp.name;
      p.shape = dp.shape;
      p.numel = 1;
      for (int64_t dim : p.shape) {
        if (dim < 1 || dim > (int64_t{1} << 40) / std::max<int64_t>(p.numel, 1)) {
          return absl::InvalidArgumentError(absl::StrCat("parameter '", dp.name, "': dimension ",
                                                         dim, " outside [1, 2^40 elements]"));
        }
        p.numel *= dim;
      }
      p.matrix = dp.matrix;
      layout.Append(std::move(p), module, &m);
    }
    m.numel = layout.total_ - m.offset;
    layout.modules_.push_back(std::move(m));
  }
  return layout;
}

void ParamLayout::Append(ParamSpec p, int module, ModuleSpec* m) {
  p.offset = total_;
  p.module = module;
  total_ = AlignUp(total_ + p.numel);
  num_parameters_ += p.numel;
  m->params.push_back(static_cast<int>(params_.size()));
  params_.push_back(std::move(p));
}

const ParamSpec* ParamLayout::Find(absl::string_view name) const {
  for (const ParamSpec& p : params_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace dstrain::model
