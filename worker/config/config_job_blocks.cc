// ParseJobSpec's steps for dstrain's own blocks: model (the GPT's shape, the padded vocabulary, a
// bound on its size), data (the kind of the train and val files, seq_len) and job; paths resolved
// against the job file's directory.
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/config/resolve.h"

namespace dstrain::config::internal {
namespace {

using nlohmann::json;

// Token ids are stored as uint16 (llm.c's .bin shards, the byte tokenizer's output and the
// engine's token tensors), so a vocabulary may have at most 65536 entries.
constexpr int64_t kMaxVocab = 65536;
// llm.c pads the embedding table to a multiple of 128 (50257 -> 50304) for aligned GEMMs.
constexpr int64_t kVocabPadMultiple = 128;
// A model this large cannot be trained by anything dstrain runs on; above it, a size is a typo.
constexpr double kMaxParams = 1e11;

bool IsTextPath(const std::string& p) { return absl::EndsWith(p, ".txt"); }

}  // namespace

std::string ResolvePath(const std::string& base_dir, const std::string& p) {
  if (p.empty()) return p;
  std::filesystem::path path(p);
  if (path.is_absolute() || base_dir.empty()) return path.lexically_normal().string();
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

absl::Status ResolveModel(json* e, const std::string& base_dir, ModelConfig* out) {
  json& m = (*e)["model"];
  const int64_t n_layer = m["n_layer"].get<int64_t>();
  const int64_t n_head = m["n_head"].get<int64_t>();
  const int64_t n_embd = m["n_embd"].get<int64_t>();
  const int64_t vocab = m["vocab_size"].get<int64_t>();
  const int64_t block = m["block_size"].get<int64_t>();
  if (n_embd % n_head != 0) {
    return Error("model.n_head", "must divide model.n_embd (", n_embd, " % ", n_head, " != 0)");
  }
  const std::string type = m["type"].get<std::string>();
  const bool llama = type == "llama";
  if (!llama) {
    for (const char* key : {"n_kv_head", "intermediate_size", "rope_theta", "norm_eps"}) {
      if (!m[key].is_null()) {
        return Error(absl::StrCat("model.", key), "only for model.type \"llama\" (this model is \"",
                     type, "\")");
      }
    }
  } else {
    if (!m["padded_vocab_size"].is_null() &&
        m["padded_vocab_size"].get<int64_t>() != m["vocab_size"].get<int64_t>()) {
      return Error("model.padded_vocab_size",
                   "the Llama's embedding and head have exactly vocab_size rows; leave it out");
    }
    m["padded_vocab_size"] = m["vocab_size"];
    if (m["n_kv_head"].is_null()) m["n_kv_head"] = n_head;
    const int64_t n_kv = m["n_kv_head"].get<int64_t>();
    if (n_head % n_kv != 0) {
      return Error("model.n_kv_head", "must divide model.n_head (", n_head, " % ", n_kv,
                   " != 0): grouped-query attention shares each key-value head among n_head / "
                   "n_kv_head query heads");
    }
    if ((n_embd / n_head) % 2 != 0) {
      return Error("model.n_head",
                   "the head size n_embd / n_head must be even for rotary "
                   "embeddings, got ",
                   n_embd / n_head);
    }
    if (m["intermediate_size"].is_null()) {
      return Error("model.intermediate_size",
                   "required for model.type \"llama\" (the SwiGLU MLP's width)");
    }
    if (m["rope_theta"].is_null()) m["rope_theta"] = 10000.0;
    if (m["norm_eps"].is_null()) m["norm_eps"] = 1e-6;
    const std::string init_from = m["init_from"].get<std::string>();
    if (!init_from.empty() && !absl::EndsWith(init_from, ".safetensors")) {
      return Error("model.init_from",
                   "the Llama starts from Hugging Face weights as safetensors (FILE.safetensors); "
                   "llm.c's model files are the GPT's, got \"",
                   init_from, "\"");
    }
  }
  if (vocab > kMaxVocab) {
    return Error("model.vocab_size", "must be <= ", kMaxVocab,
                 " (token ids are stored as uint16), got ", vocab);
  }
  int64_t padded = 0;
  if (m["padded_vocab_size"].is_null()) {
    padded = (vocab + kVocabPadMultiple - 1) / kVocabPadMultiple * kVocabPadMultiple;
    m["padded_vocab_size"] = padded;
  } else {
    padded = m["padded_vocab_size"].get<int64_t>();
    if (padded < vocab) {
      return Error("model.padded_vocab_size", "must be >= model.vocab_size ", vocab, ", got ",
                   padded);
    }
  }
  // GPT-2 parameter count (llm.c): embeddings + per layer 12·C² + 13·C + final layer norm.
  // Llama: embedding and head, per layer the q, k, v, o projections, the three MLP matrices and
  // two norms, the final norm.
  const double c = static_cast<double>(n_embd);
  double params = static_cast<double>(padded) * c + static_cast<double>(block) * c +
                  static_cast<double>(n_layer) * (12.0 * c * c + 13.0 * c) + 2.0 * c;
  if (llama) {
    const double kv = c / static_cast<double>(n_head) * m["n_kv_head"].get<double>();
    const double inter = m["intermediate_size"].get<double>();
    params =
        2.0 * static_cast<double>(vocab) * c +
        static_cast<double>(n_layer) * (2.0 * c * c + 2.0 * c * kv + 3.0 * c * inter + 2.0 * c) + c;
  }
  if (params > kMaxParams) {
    return Error("model", "about ", absl::StrFormat("%.3g", params),
                 " parameters; dstrain rejects models above 1e11 parameters (n_layer ", n_layer,
                 ", n_embd ", n_embd, ", padded_vocab_size ", padded, ", block_size ", block, ")");
  }
  m["init_from"] = ResolvePath(base_dir, m["init_from"].get<std::string>());

  out->type = type;
  if (llama) {
    out->n_kv_head = m["n_kv_head"].get<int>();
    out->intermediate_size = m["intermediate_size"].get<int>();
    out->rope_theta = m["rope_theta"].get<double>();
    out->norm_eps = m["norm_eps"].get<double>();
  }
  out->n_layer = static_cast<int>(n_layer);
  out->n_head = static_cast<int>(n_head);
  out->n_embd = static_cast<int>(n_embd);
  out->vocab_size = static_cast<int>(vocab);
  out->block_size = static_cast<int>(block);
  out->padded_vocab_size = static_cast<int>(padded);
  out->init_seed = static_cast<uint64_t>(m["init_seed"].get<int64_t>());
  out->init_from = m["init_from"].get<std::string>();
  return absl::OkStatus();
}

absl::Status ResolveData(json* e, const std::string& base_dir, const ModelConfig& model,
                         DataConfig* out) {
  json& d = (*e)["data"];
  const std::string train = d["train"].get<std::string>();
  const std::string val = d["val"].get<std::string>();
  if (train.empty()) return Error("data.train", "must not be empty");
  if (!val.empty() && IsTextPath(val) != IsTextPath(train)) {
    return Error("data.val", "must be the same kind as data.train (a .txt file or .bin shards)");
  }
  if (IsTextPath(train) && model.vocab_size < 256) {
    return Error("model.vocab_size",
                 "must be >= 256 for byte-level text (data.train is a .txt "
                 "file), got ",
                 model.vocab_size);
  }
  if (d["seq_len"].is_null()) d["seq_len"] = model.block_size;
  const int64_t seq_len = d["seq_len"].get<int64_t>();
  if (seq_len > model.block_size) {
    return Error("data.seq_len", "must be <= model.block_size ", model.block_size, ", got ",
                 seq_len);
  }
  d["train"] = ResolvePath(base_dir, train);
  d["val"] = ResolvePath(base_dir, val);

  out->train = d["train"].get<std::string>();
  out->val = d["val"].get<std::string>();
  out->seq_len = static_cast<int>(seq_len);
  out->seed = static_cast<uint64_t>(d["seed"].get<int64_t>());
  out->shuffle = d["shuffle"].get<bool>();
  return absl::OkStatus();
}

absl::Status ResolveJob(json* e, const std::string& base_dir, const std::string& default_name,
                        JobConfig* out) {
  json& j = (*e)["job"];
  if (j["name"].get<std::string>().empty()) j["name"] = default_name;
  if (j["checkpoint_every"].get<int64_t>() > 0 && j["checkpoint_dir"].get<std::string>().empty()) {
    return Error("job.checkpoint_every", "needs job.checkpoint_dir");
  }
  if (j["sample_every"].get<int64_t>() > 0 && j["sample_tokens"].get<int64_t>() == 0) {
    return Error("job.sample_tokens", "must be > 0 when job.sample_every is set");
  }
  j["checkpoint_dir"] = ResolvePath(base_dir, j["checkpoint_dir"].get<std::string>());

  out->name = j["name"].get<std::string>();
  out->world_size = j["world_size"].get<int>();
  out->pipeline_stages = j["pipeline_stages"].get<int>();
  out->train_steps = j["train_steps"].get<int64_t>();
  out->checkpoint_dir = j["checkpoint_dir"].get<std::string>();
  out->checkpoint_every = j["checkpoint_every"].get<int64_t>();
  out->keep_last = j["keep_last"].get<int>();
  out->max_restarts = j["max_restarts"].get<int>();
  out->comm_timeout_s = j["comm_timeout"].get<double>();
  out->resume = j["resume"].get<bool>();
  out->eval_every = j["eval_every"].get<int64_t>();
  out->eval_batches = j["eval_batches"].get<int>();
  out->sample_every = j["sample_every"].get<int64_t>();
  out->sample_tokens = j["sample_tokens"].get<int>();
  out->skip_nonfinite_steps = j["skip_nonfinite_steps"].get<bool>();
  const std::string device = j["device"].get<std::string>();
  if (device == "auto") {
    out->device = JobDevice::kAuto;
  } else if (device == "cpu") {
    out->device = JobDevice::kCpu;
  } else if (device == "cuda") {
    out->device = JobDevice::kCuda;
  } else {
    return Error("job.device", "must be \"auto\", \"cpu\" or \"cuda\", got \"", device, "\"");
  }
  return absl::OkStatus();
}

}  // namespace dstrain::config::internal
