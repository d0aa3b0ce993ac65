// Fuzzes the reader of llm.c model files (worker/model/llmc_format.h, model.init_from and
// `dstrain export`'s output): the input is written as a model file and read back. A file that is
// not a whole fp32 model of a valid shape must be an error, never a crash or an allocation its
// size does not justify. A file that reads converts back (LlmcModelPieces) to its own length and
// shape: the reader and the writer agree on the format.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "worker/model/llmc_format.h"

namespace {

const std::string& ModelPath() {
  static const std::string* path = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/llmc_fuzz.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    return new std::string(pattern + "/model.bin");
  }();
  return *path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(ModelPath(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) std::abort();
  }
  auto model = dstrain::model::ReadLlmcModel(ModelPath());
  if (!model.ok()) return 0;
  auto layout = dstrain::model::ParamLayout::ForGpt(model->config);
  if (!layout.ok() || static_cast<size_t>(layout->total()) != model->params.size()) {
    std::fprintf(stderr, "a model that reads has no layout of its size\n");
    std::abort();
  }
  std::vector<int32_t> header;
  auto pieces =
      dstrain::model::LlmcModelPieces(model->config, *layout, model->params.data(), &header);
  size_t bytes = 0;
  if (pieces.ok()) {
    for (const auto& p : *pieces) bytes += p.size();
  }
  if (!pieces.ok() || bytes != size || std::memcmp(header.data(), data, 8 * sizeof(int32_t))) {
    std::fprintf(stderr, "a model that reads does not write back to its own size and header\n");
    std::abort();
  }
  return 0;
}
