#include "worker/engine/zero_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "gtest/gtest.h"
#include "worker/comm/fake/fake_communicator.h"
#include "worker/env/byte_source.h"
#include "worker/env/env.h"

namespace dstrain::engine::testing {

config::JobSpec SmallGptSpec(int world, int stage, int gas, double clip,
                             const std::string& zero_extra, int steps,
                             const std::string& top_extra) {
  const std::string json = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": %d,
          "gradient_clipping": %g,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.1}},
          "zero_optimization": {"stage": %d %s},
          "model": {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 24, "vocab_size": 37,
                    "block_size": 8, "init_seed": 7},
          "data": {"train": "x_*.bin", "seq_len": 8},
          "job": {"train_steps": %d, "world_size": %d} %s})",
      gas, clip, stage, zero_extra, steps, world, top_extra);
  auto spec = config::ParseJobSpec(json, "/tmp");
  EXPECT_TRUE(spec.ok()) << spec.status() << "\n" << json;
  return spec.ok() ? *spec : config::JobSpec();
}

model::GptConfig ModelShape(const config::JobSpec& spec) { return config::ModelShape(spec.model); }

std::pair<std::vector<int32_t>, std::vector<int32_t>> Batch(const config::JobSpec& spec, int step,
                                                            int rank, int micro) {
  const int B = static_cast<int>(spec.train_micro_batch_size_per_gpu), T = spec.data.seq_len;
  const int V = spec.model.vocab_size;
  std::vector<int32_t> x(B * T), y(B * T);
  uint64_t h = 0x9E3779B97F4A7C15ull * (1 + step * 1000 + rank * 10 + micro);
  for (int b = 0; b < B; ++b) {
    h ^= h << 13, h ^= h >> 7, h ^= h << 17;
    int32_t t = static_cast<int32_t>(h % V);
    for (int i = 0; i < T; ++i) {
      x[b * T + i] = t;
      t = (t + 5) % V;
      y[b * T + i] = t;
    }
  }
  return {x, y};
}

absl::StatusOr<std::vector<double>> TrainSteps(Engine& engine, const config::JobSpec& spec,
                                               int rank, int first, int last) {
  std::vector<double> losses;
  for (int step = first; step < last; ++step) {
    for (int m = 0; m < spec.gradient_accumulation_steps; ++m) {
      const auto [x, y] = Batch(spec, step, rank, m);
      DT_RETURN_IF_ERROR(engine.Forward(x.data(), y.data()).status());
      DT_RETURN_IF_ERROR(engine.Backward());
      DT_ASSIGN_OR_RETURN(auto stepped, engine.Step());
      if (stepped.has_value()) losses.push_back(stepped->loss);
    }
  }
  return losses;
}

absl::StatusOr<std::vector<double>> ResumeTrainSave(Engine& engine, const config::JobSpec& spec,
                                                    int rank, int first, int last,
                                                    const std::string* load, std::string* save) {
  if (load != nullptr) {
    env::StringSource source(*load);
    DT_RETURN_IF_ERROR(engine.LoadState(source));
    DT_RETURN_IF_ERROR(engine.FinishLoad());
  }
  DT_ASSIGN_OR_RETURN(std::vector<double> losses, TrainSteps(engine, spec, rank, first, last));
  if (save != nullptr) {
    DT_ASSIGN_OR_RETURN(*save, engine.SaveState());
  }
  return losses;
}

std::string TestDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  EXPECT_TRUE(env::PosixEnv::Default()->CreateDirs(dir).ok()) << dir;
  return dir;
}

void RunOnRanks(int world, const std::function<void(int, comm::Communicator*)>& fn) {
  auto fake = comm::FakeWorld::Create(world, "dp");
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto comm = comm::FakeCommunicator::Create(fake, r);
      ASSERT_TRUE(comm.ok()) << comm.status();
      fn(r, comm->get());
    });
  }
  for (auto& t : threads) t.join();
}

void ExpectWithinZeroParityBounds(const TrainRun& run, const TrainRun& base,
                                  const std::string& what) {
  ASSERT_EQ(run.weights.size(), base.weights.size()) << what;
  ASSERT_EQ(run.losses.size(), base.losses.size()) << what;
  double diff = 0, norm = 0, worst = 0;
  for (size_t i = 0; i < run.weights.size(); ++i) {
    const double d = static_cast<double>(run.weights[i]) - base.weights[i];
    diff += d * d;
    norm += static_cast<double>(base.weights[i]) * base.weights[i];
    worst = std::max(worst, std::abs(d));
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-4) << what;
  EXPECT_LT(worst, 1e-3) << what;
  for (size_t i = 0; i < run.losses.size(); ++i) {
    EXPECT_NEAR(run.losses[i], base.losses[i], 1e-6 * std::abs(base.losses[i])) << what << " " << i;
  }
}

}  // namespace dstrain::engine::testing
