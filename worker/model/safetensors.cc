#include "worker/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/types/dtype.h"
#include "kernels/cast/cast.h"

namespace dstrain::model {
namespace {

// The header's size cap of the format's reference reader (100 MB): a larger length is damage.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

absl::Status Damaged(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": not a valid safetensors file: ", what));
}

}  // namespace

absl::StatusOr<std::vector<absl::string_view>> SafetensorsPieces(
    const std::vector<SafetensorsTensor>& tensors,
    const std::map<std::string, std::string>& metadata, std::string* header) {
  // Insertion order is the data order, so a reader's offsets ascend with the entries.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    h[kMetadataKey] = std::move(m);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  std::vector<absl::string_view> pieces(1);
  for (const SafetensorsTensor& t : tensors) {
    if (t.name.empty() || t.name == kMetadataKey || !names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: tensor name \"", t.name, "\" is empty, reserved or repeated"));
    }
    uint64_t count = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("safetensors: tensor ", t.name, " has a negative dimension"));
      }
      count *= static_cast<uint64_t>(d);
    }
    const uint64_t bytes = count * sizeof(float);
    h[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    pieces.emplace_back(reinterpret_cast<const char*>(t.data), bytes);
  }
  std::string json = h.dump();
  // The data starts 8-byte aligned: pad the JSON with spaces, as the format allows.
  json.append((8 - (8 + json.size()) % 8) % 8, ' ');
  const uint64_t n = json.size();
  header->resize(8);
  for (int i = 0; i < 8; ++i) (*header)[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  header->append(json);
  pieces[0] = *header;
  return pieces;
}

std::vector<SafetensorsTensor> LayoutTensors(
    const ParamLayout& layout, const float* params,
    const std::function<std::string(const ParamSpec&)>& rename) {
  std::vector<SafetensorsTensor> out;
  out.reserve(layout.params().size());
  for (const ParamSpec& p : layout.params()) {
    out.push_back({rename ? rename(p) : p.name, p.shape, params + p.offset});
  }
  return out;
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  in.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char len[8];
  if (size < 8 || !in.read(reinterpret_cast<char*>(len), 8)) {
    return Damaged(path, "shorter than its 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > kMaxHeaderBytes || n > size - 8) {
    return Damaged(path, absl::StrCat("header length ", n, " exceeds the file (", size,
                                      " bytes) or the 100 MB cap"));
  }
  std::string text(n, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(n))) return Damaged(path, "short header");
  const nlohmann::json h = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!h.is_object()) return Damaged(path, "the header is not a JSON object");

  SafetensorsFile file;
  const uint64_t data_bytes = size - 8 - n;
  struct Entry {
    uint64_t begin, end;
    std::string name;
    std::vector<int64_t> shape;
    DType stored;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : h.items()) {
    if (name == kMetadataKey) {
      if (!v.is_object()) return Damaged(path, "__metadata__ is not an object");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) return Damaged(path, absl::StrCat("__metadata__.", k, " not a string"));
        file.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    const auto dtype = v.is_object() ? v.find("dtype") : v.end();
    const auto shape = v.is_object() ? v.find("shape") : v.end();
    const auto offsets = v.is_object() ? v.find("data_offsets") : v.end();
    if (dtype == v.end() || shape == v.end() || offsets == v.end() || !dtype->is_string() ||
        !shape->is_array() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      return Damaged(path, absl::StrCat("tensor ", name, ": needs dtype, shape, data_offsets"));
    }
    const std::string type = dtype->get<std::string>();
    const DType stored = type == "F32"    ? DType::kF32
                         : type == "BF16" ? DType::kBF16
                         : type == "F16"  ? DType::kF16
                                          : DType::kI32;  // none of the three
    if (stored == DType::kI32) {
      return absl::UnimplementedError(absl::StrCat(path, ": tensor ", name, " is ", type,
                                                   "; F32, BF16 and F16 tensors are read"));
    }
    Entry e{(*offsets)[0].get<uint64_t>(), (*offsets)[1].get<uint64_t>(), name, {}, stored};
    uint64_t count = 1;
    for (const nlohmann::json& d : *shape) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > data_bytes) {
        return Damaged(path, absl::StrCat("tensor ", name, ": bad shape ", shape->dump()));
      }
      e.shape.push_back(d.get<int64_t>());
      count = count == 0 ? 0 : count * d.get<uint64_t>();
      if (count > data_bytes) {
        return Damaged(
            path, absl::StrCat("tensor ", name, ": shape ", shape->dump(), " exceeds the file"));
      }
    }
    if (e.begin > e.end || e.end > data_bytes || e.end - e.begin != count * DTypeSize(stored)) {
      return Damaged(path, absl::StrCat("tensor ", name, ": data_offsets ", offsets->dump(),
                                        " do not hold shape ", shape->dump(), " in ", data_bytes,
                                        " bytes of data"));
    }
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t at = 0;
  for (Entry& e : entries) {
    if (e.begin != at) {
      return Damaged(path, absl::StrCat("tensor ", e.name, " starts at ", e.begin,
                                        ", not where the previous data ends (", at, ")"));
    }
    at = e.end;
    SafetensorsFile::Tensor t;
    t.shape = std::move(e.shape);
    const int64_t n = static_cast<int64_t>((e.end - e.begin) / DTypeSize(e.stored));
    t.data.resize(n);
    std::vector<uint16_t> half(e.stored == DType::kF32 ? 0 : n);
    char* into = e.stored == DType::kF32 ? reinterpret_cast<char*>(t.data.data())
                                         : reinterpret_cast<char*>(half.data());
    if (!in.read(into, static_cast<std::streamsize>(e.end - e.begin))) {
      return Damaged(path, absl::StrCat("tensor ", e.name, ": short data"));
    }
    if (e.stored != DType::kF32) kernels::HalfToFloat(e.stored, t.data.data(), half.data(), n);
    file.order.push_back(e.name);
    file.tensors.emplace(e.name, std::move(t));
  }
  if (at != data_bytes) {
    return Damaged(path, absl::StrCat(data_bytes - at, " bytes after the last tensor"));
  }
  return file;
}

}  // namespace dstrain::model
