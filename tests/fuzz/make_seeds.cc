// Writes the generated seeds of the fuzz targets with the real writers, so that every seed starts
// as an input the code under test accepts: checkpoints saved by SaveCheckpoint (one rank, and two
// ranks under ZeRO-2 with the consolidated model), llm.c model files by WriteLlmcModel, token
// shards by WriteTokenShard, TCP store frames by EncodeRequest/EncodeResponse, StoreService
// requests and a SubmitJobRequest by protobuf. The handwritten seeds (job files, edge cases) sit
// beside them. Run by hand when a format changes (docs/fuzzing.md):
//   bazel run //tests/fuzz:make_seeds -- "$PWD/tests/fuzz/corpus"
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "coordinator/store/store_credentials.h"
#include "proto/job.pb.h"
#include "proto/store.pb.h"
#include "worker/config/config.h"
#include "worker/data/token_shard.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/env/env.h"
#include "worker/model/gpt.h"
#include "worker/model/llmc_format.h"
#include "worker/store/tcp_store_protocol.h"

namespace dstrain {
namespace {

namespace fs = std::filesystem;
using store::internal::Op;

std::string out_root;  // the corpus directory

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = fs::path(out_root) / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A GPT small enough for seeds of a few KB: 1 block, C 4, one head, vocabulary 5 padded to 8,
// 4 positions.
config::JobSpec TinySpec(int world, int stage, const std::string& zero_extra,
                         const std::string& top_extra) {
  const std::string json = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}},
          "zero_optimization": {"stage": %d %s},
          "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 4, "vocab_size": 5,
                    "padded_vocab_size": 8, "block_size": 4, "init_seed": 7},
          "data": {"train": "x_*.bin", "seq_len": 4},
          "job": {"train_steps": 1, "world_size": %d} %s})",
      stage, zero_extra, world, top_extra);
  auto spec = config::ParseJobSpec(json, "/tmp");
  if (!spec.ok()) {
    std::fprintf(stderr, "%s\n", std::string(spec.status().message()).c_str());
    std::exit(1);
  }
  return *spec;
}

// Trains one step on `world` ranks, saves tag "step1" under a fresh directory and returns the
// directory tree in memory_env.h's "=== NAME" format.
std::string SavedCheckpoint(const std::string& name, const config::JobSpec& spec, int world) {
  const fs::path root =
      fs::temp_directory_path() / absl::StrCat("make_seeds_", name, "_", getpid());
  fs::remove_all(root);
  bool ok = true;
  engine::testing::RunOnRanks(world, [&](int r, comm::Communicator* comm) {
    engine::testing::CpuDevice device;
    auto model = model::Gpt::Create(config::ModelShape(spec.model), &device.ops);
    auto e = engine::Engine::Initialize(*std::move(model), spec, comm);
    if (!e.ok()) {
      ok = false;
      return;
    }
    const auto [x, y] = engine::testing::Batch(spec, 0, r, 0);
    ok &= (*e)->Forward(x.data(), y.data()).ok() && (*e)->Backward().ok() && (*e)->Step().ok();
    engine::CheckpointOptions options{env::PosixEnv::Default(), root.string(), 0, {}};
    ok &= engine::SaveCheckpoint(**e, comm, options, "step1", absl::StrCat("rank ", r)).ok();
  });
  if (!ok) {
    std::fprintf(stderr, "saving checkpoint %s failed\n", name.c_str());
    std::exit(1);
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::string out;
  for (const fs::path& f : files) {
    absl::StrAppend(&out, "=== ", fs::relative(f, root).string(), "\n", ReadFile(f));
  }
  fs::remove_all(root);
  return out;
}

void CheckpointSeeds() {
  Write("checkpoint", "gen_one_rank", SavedCheckpoint("one", TinySpec(1, 0, "", ""), 1));
  Write("checkpoint", "gen_zero2_two_ranks_model",
        SavedCheckpoint("two",
                        TinySpec(2, 2, R"(, "gather_16bit_weights_on_model_save": true)",
                                 R"(, "bf16": {"enabled": true})"),
                        2));
}

void ModelSeeds() {
  const config::JobSpec spec = TinySpec(1, 0, "", "");
  const model::GptConfig shape = config::ModelShape(spec.model);
  auto layout = model::ParamLayout::ForGpt(shape);
  std::vector<float> params(layout->total());
  for (size_t i = 0; i < params.size(); ++i) params[i] = 0.01f * static_cast<float>(i % 97);
  const fs::path path = fs::temp_directory_path() / absl::StrCat("make_seeds_", getpid(), ".bin");
  if (!model::WriteLlmcModel(path.string(), shape, *layout, params.data()).ok()) std::exit(1);
  Write("llmc_model", "gen_tiny", ReadFile(path));
  fs::remove(path);
}

void ShardSeeds() {
  const fs::path path = fs::temp_directory_path() / absl::StrCat("make_seeds_", getpid(), ".bin");
  const std::vector<std::vector<uint16_t>> shards = {
      {}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {65535, 0, 50256, 7, 7, 7, 7, 7, 7}};
  for (size_t i = 0; i < shards.size(); ++i) {
    if (!data::WriteTokenShard(path.string(), shards[i]).ok()) std::exit(1);
    Write("token_shard", absl::StrCat("gen_", shards[i].size(), "_tokens"), ReadFile(path));
  }
  fs::remove(path);
}

std::string Frame(const std::string& payload) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((payload.size() >> (8 * i)) & 0xff);
  return out + payload;
}

void TcpStoreSeeds() {
  using store::internal::Request;
  using store::internal::Response;
  std::vector<Request> requests(7);
  requests[1].op = Op::kSet, requests[1].key = "rank/0", requests[1].value = "addr:1234";
  requests[2].op = Op::kGet, requests[2].key = "rank/0", requests[2].timeout = absl::Seconds(3);
  requests[3].op = Op::kAdd, requests[3].key = "count", requests[3].delta = -2;
  requests[4].op = Op::kCompareSet, requests[4].key = "k", requests[4].expected = "a";
  requests[4].value = "b";
  requests[5].op = Op::kWait, requests[5].keys = {"a", "b"};
  requests[5].timeout = absl::InfiniteDuration();
  requests[6].op = Op::kDeleteKey, requests[6].key = "k";
  std::string stream;
  for (const Request& r : requests) {
    const std::string payload = *store::internal::EncodeRequest(r);
    const std::string name(store::internal::OpName(r.op));
    Write("tcp_store", absl::StrCat("gen_request_", name), std::string(1, '\1') + payload);
    absl::StrAppend(&stream, Frame(payload));

    Response ok;
    ok.value = "v", ok.number = 42, ok.existed = true;
    const int mode = 2 + static_cast<int>(r.op);
    Write("tcp_store", absl::StrCat("gen_response_", name),
          std::string(1, static_cast<char>(mode)) + store::internal::EncodeResponse(r.op, ok));
  }
  Response error;
  error.status = absl::DeadlineExceededError("timed out");
  Write("tcp_store", "gen_response_error",
        std::string(1, static_cast<char>(2 + static_cast<int>(Op::kGet))) +
            store::internal::EncodeResponse(Op::kGet, error));
  Write("tcp_store", "gen_stream_session", std::string(1, '\0') + stream);
}

void StoreServiceSeeds() {
  const std::string scope = coordinator::StoreCredentials::ScopeOf("job-a", 1);
  const std::string key = scope + "/rank/0";
  // Byte 0: the handler (Set, Get, Add, CompareSet, Wait, Delete); byte 1: the credential (1:
  // the right token).
  const auto seed = [](const std::string& name, int handler, const google::protobuf::Message& m) {
    Write("store_service", "gen_" + name, std::string{char(handler), '\1'} + m.SerializeAsString());
  };
  v1::SetRequest set;
  set.set_key(key);
  set.set_value("10.0.0.1:29500");
  seed("set", 0, set);
  v1::GetRequest get;
  get.set_key(scope + "/present");
  seed("get", 1, get);
  v1::AddRequest add;
  add.set_key(key);
  add.set_delta(1);
  seed("add", 2, add);
  v1::CompareSetRequest cas;
  cas.set_key(key);
  cas.set_expected_value("");
  cas.set_desired_value("x");
  seed("compare_set", 3, cas);
  v1::WaitRequest wait;
  wait.add_keys(scope + "/present");
  wait.add_keys(key);
  wait.mutable_timeout()->set_nanos(1000);
  seed("wait", 4, wait);
  v1::DeleteRequest del;
  del.set_key(scope + "/present");
  seed("delete", 5, del);
}

void JobValidationSeeds() {
  v1::SubmitJobRequest request;
  request.set_job_id("tiny");
  request.set_spec_json(R"({"train_batch_size": 2, "model": {"n_layer": 1, "n_head": 1,
      "n_embd": 4, "vocab_size": 5, "block_size": 4}, "data": {"train": "train_*.bin",
      "seq_len": 4}, "job": {"train_steps": 1, "world_size": 2}})");
  request.set_priority(3);
  Write("job_validation", "gen_proto", "P" + request.SerializeAsString());
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  dstrain::out_root = argv[1];
  dstrain::CheckpointSeeds();
  dstrain::ModelSeeds();
  dstrain::ShardSeeds();
  dstrain::TcpStoreSeeds();
  dstrain::StoreServiceSeeds();
  dstrain::JobValidationSeeds();
  std::printf("seeds written under %s\n", argv[1]);
  return 0;
}
