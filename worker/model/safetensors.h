// safetensors files of fp32 tensors: what `dstrain export --format safetensors` writes and a
// checkpoint's consolidated model of a user module is (docs/checkpoints.md, "Export").
//
//   std::string header;
//   DT_ASSIGN_OR_RETURN(auto pieces, SafetensorsPieces(LayoutTensors(layout, params), {},
//   &header)); DT_RETURN_IF_ERROR(env::WriteFileAtomically(env, path, pieces));
//
// The format: an 8-byte little-endian header length N, N bytes of a JSON object (padded with
// spaces so the data starts 8-byte aligned) mapping each tensor's name to
// {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (byte offsets from the start of
// the data) plus an optional "__metadata__" object of string values, then the tensors' bytes,
// little-endian, in the header's order and without gaps. Tools that read Hugging Face weights
// open it directly.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/param_layout.h"

namespace dstrain::model {

struct SafetensorsTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // product(shape) floats
};

// The file's bytes as pieces to write in order: `*header` (filled here; keep it alive and
// unchanged), then each tensor's floats straight from its `data`. kInvalidArgument for an empty
// or repeated name, "__metadata__" as a name, or a negative dimension.
absl::StatusOr<std::vector<absl::string_view>> SafetensorsPieces(
    const std::vector<SafetensorsTensor>& tensors,
    const std::map<std::string, std::string>& metadata, std::string* header);

// Every parameter of `layout` as a tensor of its declared shape over `params` (layout.total()
// floats in the layout's order). `rename` (optional) gives each parameter's name in the file
// (e.g. a Hugging Face tensor name); the layout's own name otherwise.
std::vector<SafetensorsTensor> LayoutTensors(
    const ParamLayout& layout, const float* params,
    const std::function<std::string(const ParamSpec&)>& rename = nullptr);

struct SafetensorsFile {
  struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;
  };
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;
  std::vector<std::string> order;  // tensor names in the order of their data
};

// Reads and validates a file of F32, BF16 or F16 tensors (the 16-bit ones widened to f32
// exactly): the header's length and JSON, every entry's dtype, shape and offsets (within the
// file, matching the shape, covering the data without gaps or overlaps), the file's exact length.
// kDataLoss naming the file and what is wrong; kNotFound when it is missing; kUnimplemented for
// another dtype.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

}  // namespace dstrain::model
