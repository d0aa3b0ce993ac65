#include "worker/engine/checkpoint_model.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"
#include "worker/env/env.h"

namespace dstrain::engine::internal {
namespace {

// The model shape as the manifest's meta records it, one field per GptConfig member: what a
// load compares (every field, since two models can share a parameter layout and still differ,
// e.g. in n_head or in vocab_size under the same padding) and what export rebuilds the model from.
struct ShapeField {
  const char* name;
  int model::GptConfig::*member;
};
constexpr ShapeField kShapeFields[] = {
    {"n_layer", &model::GptConfig::n_layer},
    {"n_head", &model::GptConfig::n_head},
    {"n_embd", &model::GptConfig::n_embd},
    {"vocab_size", &model::GptConfig::vocab_size},
    {"padded_vocab_size", &model::GptConfig::padded_vocab_size},
    {"block_size", &model::GptConfig::block_size},
};

nlohmann::json ShapeToJson(const model::GptConfig& c) {
  nlohmann::json shape = nlohmann::json::object();
  for (const ShapeField& f : kShapeFields) shape[f.name] = c.*f.member;
  return shape;
}

}  // namespace

absl::StatusOr<model::GptConfig> ShapeFromManifest(const checkpoint::CheckpointReader& reader) {
  const std::string path = env::JoinPath(reader.dir(), checkpoint::kManifestName);
  const nlohmann::json& meta = reader.manifest().meta;
  const auto shape = meta.find("model");
  if (shape == meta.end() || !shape->is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": meta has no model shape"));
  }
  if (HoldsModule(reader)) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", reader.dir(),
                     " holds a user module (dstrain::Module), not the built-in GPT"));
  }
  model::GptConfig c;
  for (const ShapeField& f : kShapeFields) {
    const auto v = shape->find(f.name);
    if (v == shape->end() || !v->is_number_integer()) {
      return absl::DataLossError(absl::StrCat(path, ": meta.model.", f.name, " missing"));
    }
    c.*f.member = v->get<int>();
  }
  return c;
}

namespace {

// kFailedPrecondition naming every field in which the checkpoint's model differs from `mine`.
absl::Status CheckModelShape(const checkpoint::CheckpointReader& reader,
                             const model::GptConfig& mine) {
  DT_ASSIGN_OR_RETURN(const model::GptConfig theirs, ShapeFromManifest(reader));
  std::vector<std::string> differ;
  for (const ShapeField& f : kShapeFields) {
    if (theirs.*f.member != mine.*f.member) {
      differ.push_back(absl::StrCat("model.", f.name, ": checkpoint has ", theirs.*f.member,
                                    ", this job has ", mine.*f.member));
    }
  }
  if (differ.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint ", reader.dir(), " holds another model: ", absl::StrJoin(differ, "; ")));
}

constexpr char kModuleType[] = "module";

nlohmann::json ShapeToJson(const model::ParamLayout& layout) {
  nlohmann::json modules = nlohmann::json::array();
  for (const model::ModuleSpec& m : layout.modules()) {
    nlohmann::json params = nlohmann::json::array();
    for (int i : m.params) {
      const model::ParamSpec& p = layout.params()[i];
      params.push_back({{"name", p.name}, {"shape", p.shape}, {"matrix", p.matrix}});
    }
    modules.push_back({{"name", m.name}, {"params", std::move(params)}});
  }
  return {{"type", kModuleType}, {"modules", std::move(modules)}};
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// kFailedPrecondition naming every parameter in which the checkpoint's module differs from
// `mine`.
absl::Status CheckModuleLayout(const checkpoint::CheckpointReader& reader,
                               const model::ParamLayout& mine) {
  DT_ASSIGN_OR_RETURN(const model::ParamLayout theirs, ModuleLayoutFromManifest(reader));
  std::vector<std::string> differ;
  for (const model::ParamSpec& p : mine.params()) {
    const model::ParamSpec* q = theirs.Find(p.name);
    if (q == nullptr) {
      differ.push_back(absl::StrCat(p.name, ": not in the checkpoint"));
    } else if (q->shape != p.shape || q->matrix != p.matrix) {
      differ.push_back(absl::StrCat(p.name, ": checkpoint has ", ShapeString(q->shape),
                                    q->matrix ? " matrix" : "", ", this module has ",
                                    ShapeString(p.shape), p.matrix ? " matrix" : ""));
    } else if (theirs.modules()[q->module].name != mine.modules()[p.module].name) {
      differ.push_back(absl::StrCat(p.name, ": in module ", theirs.modules()[q->module].name,
                                    " in the checkpoint, ", mine.modules()[p.module].name,
                                    " here"));
    }
  }
  for (const model::ParamSpec& q : theirs.params()) {
    if (mine.Find(q.name) == nullptr) {
      differ.push_back(absl::StrCat(q.name, ": in the checkpoint, not in this module"));
    }
  }
  if (differ.empty()) {
    // Same parameters in the same modules: the same flat layout only in the same order.
    for (size_t i = 0; i < mine.params().size() && differ.empty(); ++i) {
      if (theirs.params()[i].name != mine.params()[i].name) {
        differ.push_back(absl::StrCat("parameter ", i, " is ", theirs.params()[i].name,
                                      " in the checkpoint, ", mine.params()[i].name, " here"));
      }
    }
  }
  if (differ.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint ", reader.dir(), " holds another model: ", absl::StrJoin(differ, "; ")));
}

}  // namespace

nlohmann::json ModelToJson(Engine& engine) {
  if (engine.is_gpt()) return ShapeToJson(engine.gpt().config());
  return ShapeToJson(engine.model().layout());
}

bool HoldsModule(const checkpoint::CheckpointReader& reader) {
  const nlohmann::json& meta = reader.manifest().meta;
  const auto m = meta.find("model");
  return m != meta.end() && m->is_object() && m->value("type", nlohmann::json()) == kModuleType;
}

absl::StatusOr<model::ParamLayout> ModuleLayoutFromManifest(
    const checkpoint::CheckpointReader& reader) {
  const std::string path = env::JoinPath(reader.dir(), checkpoint::kManifestName);
  if (!HoldsModule(reader)) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", reader.dir(), " holds the built-in GPT, not a user module"));
  }
  const nlohmann::json& modules =
      reader.manifest().meta["model"].value("modules", nlohmann::json());
  const auto damaged = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(path, ": meta.model.modules: ", what));
  };
  if (!modules.is_array() || modules.empty()) return damaged("not a non-empty list");
  std::vector<model::ParamLayout::DeclaredModule> declared;
  for (const nlohmann::json& m : modules) {
    if (!m.is_object() || !m.contains("name") || !m["name"].is_string() || !m.contains("params") ||
        !m["params"].is_array()) {
      return damaged(absl::StrCat("entry ", declared.size(), " lacks a name or params"));
    }
    model::ParamLayout::DeclaredModule d{m["name"].get<std::string>(), {}};
    for (const nlohmann::json& p : m["params"]) {
      if (!p.is_object() || !p.contains("name") || !p["name"].is_string() || !p.contains("shape") ||
          !p["shape"].is_array() || !p.contains("matrix") || !p["matrix"].is_boolean()) {
        return damaged(
            absl::StrCat("module ", d.name, ": a parameter lacks name, shape or matrix"));
      }
      model::ParamLayout::DeclaredParam q{
          p["name"].get<std::string>(), {}, p["matrix"].get<bool>()};
      for (const nlohmann::json& dim : p["shape"]) {
        if (!dim.is_number_integer()) return damaged(absl::StrCat(q.name, ": a bad dimension"));
        q.shape.push_back(dim.get<int64_t>());
      }
      d.params.push_back(std::move(q));
    }
    declared.push_back(std::move(d));
  }
  absl::StatusOr<model::ParamLayout> layout = model::ParamLayout::FromDeclared(declared);
  if (!layout.ok()) return damaged(std::string(layout.status().message()));
  return layout;
}

absl::Status CheckSavedModel(const checkpoint::CheckpointReader& reader, Engine& engine) {
  if (engine.is_gpt()) return CheckModelShape(reader, engine.gpt().config());
  if (!HoldsModule(reader)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", reader.dir(), " holds the built-in GPT, not this job's module"));
  }
  return CheckModuleLayout(reader, engine.model().layout());
}

}  // namespace dstrain::engine::internal
