#include "worker/model/llmc_format.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "worker/env/env.h"
#include "worker/model/gpt_sizes.h"

namespace dstrain::model {
namespace {

// Calls fn(spec) for every parameter in llm.c file order: the size table's rows in order, a
// block row once per layer (gpt_sizes.h).
template <typename Fn>
absl::Status ForEachInFileOrder(const ParamLayout& layout, int n_layer, Fn fn) {
  for (const ParamRow& row : kGptParams) {
    const bool per_layer = row.owner == Owner::kBlock;
    for (int l = 0; l < (per_layer ? n_layer : 1); ++l) {
      const std::string name = per_layer ? absl::StrCat("block.", l, ".", row.name) : row.name;
      const ParamSpec* p = layout.Find(name);
      if (p == nullptr) return absl::InternalError(absl::StrCat("no parameter ", name));
      DT_RETURN_IF_ERROR(fn(*p));
    }
  }
  return absl::OkStatus();
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::vector<absl::string_view>> LlmcModelPieces(const GptConfig& c,
                                                               const ParamLayout& layout,
                                                               const float* params,
                                                               std::vector<int32_t>* header) {
  header->assign(256, 0);
  (*header)[0] = kLlmcModelMagic;
  (*header)[1] = kLlmcModelVersionF32;
  (*header)[2] = c.block_size;
  (*header)[3] = c.vocab_size;
  (*header)[4] = c.n_layer;
  (*header)[5] = c.n_head;
  (*header)[6] = c.n_embd;
  (*header)[7] = c.padded_vocab_size;
  std::vector<absl::string_view> pieces = {absl::string_view(
      reinterpret_cast<const char*>(header->data()), header->size() * sizeof(int32_t))};
  DT_RETURN_IF_ERROR(ForEachInFileOrder(layout, c.n_layer, [&](const ParamSpec& p) {
    pieces.emplace_back(reinterpret_cast<const char*>(params + p.offset), p.numel * sizeof(float));
    return absl::OkStatus();
  }));
  return pieces;
}

absl::Status WriteLlmcModel(const std::string& path, const GptConfig& c, const ParamLayout& layout,
                            const float* params, env::Env* env) {
  std::vector<int32_t> header;
  DT_ASSIGN_OR_RETURN(const std::vector<absl::string_view> pieces,
                      LlmcModelPieces(c, layout, params, &header));
  return env::WriteFileAtomically(env != nullptr ? env : env::PosixEnv::Default(), path, pieces);
}

absl::StatusOr<LlmcModel> ReadLlmcModel(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return ErrnoError("cannot open model file", path);
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  int32_t header[256];
  if (std::fread(header, sizeof(header), 1, f) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated header"));
  }
  if (header[0] != kLlmcModelMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": bad magic ", header[0], " (expected ", kLlmcModelMagic, ")"));
  }
  if (header[1] != kLlmcModelVersionF32) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unsupported version ", header[1], " (only 3, fp32, is supported)"));
  }
  LlmcModel m;
  m.config.block_size = header[2];
  m.config.vocab_size = header[3];
  m.config.n_layer = header[4];
  m.config.n_head = header[5];
  m.config.n_embd = header[6];
  m.config.padded_vocab_size = header[7];
  if (std::fseek(f, 0, SEEK_END) != 0) return ErrnoError("cannot seek", path);
  const long size = std::ftell(f);
  // A file too short for its shape is refused before the layout of that shape is built.
  const double count = GptParameterCount(m.config);
  if (count > 0 && sizeof(header) + 4 * count > static_cast<double>(size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": file is ", size, " bytes, expected at least ",
                     absl::StrFormat("%.0f", sizeof(header) + 4 * count), " for its model shape"));
  }
  auto layout = ParamLayout::ForGpt(m.config);
  if (!layout.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": invalid model shape: ", layout.status().message()));
  }
  // Exact size check before reading: guards against truncated or over-long files.
  const long expected = static_cast<long>(sizeof(header) + layout->num_parameters() * 4);
  if (size != expected) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": file is ", size, " bytes, expected ",
                                                   expected, " for this model shape"));
  }
  std::fseek(f, sizeof(header), SEEK_SET);
  m.params.assign(layout->total(), 0.f);
  DT_RETURN_IF_ERROR(ForEachInFileOrder(*layout, m.config.n_layer, [&](const ParamSpec& p) {
    if (std::fread(m.params.data() + p.offset, sizeof(float), p.numel, f) !=
        static_cast<size_t>(p.numel)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": short read"));
    }
    return absl::OkStatus();
  }));
  return m;
}

}  // namespace dstrain::model
