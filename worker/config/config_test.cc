#include "worker/config/config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/config/features.h"
#include "worker/config/key_effects.h"
#include "worker/config/keys.h"
#include "worker/config/schema.h"

namespace dstrain::config {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::nlohmann::json;
using ::testing::HasSubstr;

// A minimal valid job; rows of the tables below edit it.
json BaseJob() {
  return json::parse(R"({
    "train_micro_batch_size_per_gpu": 4,
    "model": {"n_layer": 2, "n_head": 4, "n_embd": 64, "vocab_size": 256, "block_size": 64},
    "data": {"train": "data/train_*.bin"},
    "job": {"train_steps": 100}
  })");
}

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out.good()) << path;
  out << text;
}

absl::StatusOr<JobSpec> Parse(const json& j, std::optional<int> world = std::nullopt) {
  return ParseJobSpec(j.dump(), "/base", world);
}

// ---------------------------------------------------------------------------------------------
// Batch-size inference: every row of DeepSpeed's table (docs/job-file.md, "Batch size") at world
// 1, 2 and 4.

struct BatchRow {
  std::optional<int64_t> tb, mb, gas;
  int world;
  int64_t want_tb, want_mb, want_gas;
};

class BatchInferenceTest : public ::testing::TestWithParam<BatchRow> {};

TEST_P(BatchInferenceTest, InfersLikeDeepSpeed) {
  const BatchRow& r = GetParam();
  json j = BaseJob();
  j.erase("train_micro_batch_size_per_gpu");
  if (r.tb) j["train_batch_size"] = *r.tb;
  if (r.mb) j["train_micro_batch_size_per_gpu"] = *r.mb;
  if (r.gas) j["gradient_accumulation_steps"] = *r.gas;
  j["job"]["world_size"] = r.world;
  absl::StatusOr<JobSpec> spec = Parse(j);
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->train_batch_size, r.want_tb);
  EXPECT_EQ(spec->train_micro_batch_size_per_gpu, r.want_mb);
  EXPECT_EQ(spec->gradient_accumulation_steps, r.want_gas);
  EXPECT_EQ(spec->data_parallel_size, r.world);
  EXPECT_EQ(spec->effective["train_batch_size"], r.want_tb);
  EXPECT_EQ(spec->effective["train_micro_batch_size_per_gpu"], r.want_mb);
  EXPECT_EQ(spec->effective["gradient_accumulation_steps"], r.want_gas);
}

INSTANTIATE_TEST_SUITE_P(
    AllRows, BatchInferenceTest,
    ::testing::Values(
        // all three given: nothing inferred
        BatchRow{32, 4, 8, 1, 32, 4, 8}, BatchRow{32, 4, 4, 2, 32, 4, 4},
        BatchRow{32, 4, 2, 4, 32, 4, 2},
        // tb, micro: gas = tb // micro // ws
        BatchRow{32, 4, std::nullopt, 1, 32, 4, 8}, BatchRow{32, 4, std::nullopt, 2, 32, 4, 4},
        BatchRow{32, 4, std::nullopt, 4, 32, 4, 2},
        // tb, gas: micro = tb // ws // gas
        BatchRow{32, std::nullopt, 2, 1, 32, 16, 2}, BatchRow{32, std::nullopt, 2, 2, 32, 8, 2},
        BatchRow{32, std::nullopt, 2, 4, 32, 4, 2},
        // micro, gas: tb = micro * gas * ws
        BatchRow{std::nullopt, 4, 2, 1, 8, 4, 2}, BatchRow{std::nullopt, 4, 2, 2, 16, 4, 2},
        BatchRow{std::nullopt, 4, 2, 4, 32, 4, 2},
        // tb only: gas = 1, micro = tb // ws
        BatchRow{32, std::nullopt, std::nullopt, 1, 32, 32, 1},
        BatchRow{32, std::nullopt, std::nullopt, 2, 32, 16, 1},
        BatchRow{32, std::nullopt, std::nullopt, 4, 32, 8, 1},
        // micro only: gas = 1, tb = micro * ws
        BatchRow{std::nullopt, 4, std::nullopt, 1, 4, 4, 1},
        BatchRow{std::nullopt, 4, std::nullopt, 2, 8, 4, 1},
        BatchRow{std::nullopt, 4, std::nullopt, 4, 16, 4, 1}));

// ---------------------------------------------------------------------------------------------
// Valid configs and what they resolve to.

struct ValidRow {
  std::string name;
  std::function<void(json&)> edit;
  std::function<void(const JobSpec&)> check;
};

// data_types.grad_accum_dtype `accum` with `precision` ("" = fp32, else the block to enable).
ValidRow GradAccumRow(const std::string& name, const std::string& precision,
                      const std::string& accum, DType want) {
  return {name,
          [=](json& j) {
            if (!precision.empty()) j[precision] = {{"enabled", true}};
            j["data_types"] = {{"grad_accum_dtype", accum}};
          },
          [=](const JobSpec& s) {
            ASSERT_TRUE(s.grad_accum_dtype.has_value());
            EXPECT_EQ(*s.grad_accum_dtype, want);
          }};
}

std::vector<ValidRow> ValidRows() {
  return {
      {"TagValidationInAnyCase",
       [](json& j) {
         j["checkpoint"] = {{"tag_validation", "fAiL"}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.checkpoint.tag_validation, TagValidation::kFail);
         EXPECT_EQ(s.effective["checkpoint"]["tag_validation"], "Fail");
       }},
      {"TagValidationIgnore",
       [](json& j) {
         j["checkpoint"] = {{"tag_validation", "IGNORE"}};
       },
       [](const JobSpec& s) { EXPECT_EQ(s.checkpoint.tag_validation, TagValidation::kIgnore); }},
      {"Gather16bitWeightsOnModelSave",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3}, {"gather_16bit_weights_on_model_save", true}};
       },
       [](const JobSpec& s) { EXPECT_TRUE(s.zero.gather_16bit_weights_on_model_save); }},
      {"Gather16bitWeightsPrefixed",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3},
                                   {"stage3_gather_16bit_weights_on_model_save", true}};
       },
       [](const JobSpec& s) { EXPECT_TRUE(s.zero.gather_16bit_weights_on_model_save); }},
      {"Gather16bitWeightsDeprecatedSpelling",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3},
                                   {"stage3_gather_fp16_weights_on_model_save", true}};
       },
       [](const JobSpec& s) { EXPECT_TRUE(s.zero.gather_16bit_weights_on_model_save); }},
      {"Defaults", [](json&) {},
       [](const JobSpec& s) {
         EXPECT_EQ(s.gradient_clipping, 0.0);  // code default, not the documented 1.0
         EXPECT_EQ(s.checkpoint.tag_validation, TagValidation::kWarn);
         EXPECT_FALSE(s.zero.gather_16bit_weights_on_model_save);
         EXPECT_FALSE(s.steps_per_print.has_value());
         EXPECT_EQ(s.optimizer.type, "AdamW");
         EXPECT_EQ(s.optimizer.lr, 1e-3);
         EXPECT_EQ(s.optimizer.beta1, 0.9);
         EXPECT_EQ(s.optimizer.beta2, 0.999);
         EXPECT_EQ(s.optimizer.eps, 1e-8);
         EXPECT_EQ(s.optimizer.weight_decay, 0.0);
         EXPECT_TRUE(s.optimizer.adam_w_mode);
         EXPECT_TRUE(s.optimizer.bias_correction);
         EXPECT_EQ(s.scheduler.type, "");
         EXPECT_EQ(s.zero.stage, 0);
         EXPECT_FALSE(s.zero.overlap_comm);
         EXPECT_EQ(s.zero.reduce_bucket_size, 500000000);
         EXPECT_EQ(s.zero.prefetch_bucket_size, 50000000);
         EXPECT_EQ(s.zero.sub_group_size, 1000000000);
         EXPECT_FALSE(s.fp16.enabled);
         EXPECT_FALSE(s.bf16.enabled);
         EXPECT_EQ(s.model.padded_vocab_size, 256);
         EXPECT_EQ(s.data.seq_len, 64);  // model.block_size
         EXPECT_EQ(s.data.train, "/base/data/train_*.bin");
         EXPECT_EQ(s.data.seed, 1337u);
         EXPECT_EQ(s.job.world_size, 1);
         EXPECT_EQ(s.job.keep_last, 3);
         EXPECT_EQ(s.job.eval_every, 100);
         const json& e = s.effective;
         EXPECT_EQ(e["gradient_clipping"], 0.0);
         EXPECT_EQ(e["zero_optimization"]["overlap_comm"], false);
         EXPECT_EQ(e["zero_optimization"]["stage3_model_persistence_threshold"],
                   std::numeric_limits<int64_t>::max());
         EXPECT_EQ(e["fp16"]["loss_scale"], 0.0);
         EXPECT_EQ(e["fp16"]["initial_scale_power"], 16);
         EXPECT_EQ(e["fp16"]["loss_scale_window"], 1000);
         EXPECT_EQ(e["fp16"]["hysteresis"], 2);
         EXPECT_EQ(e["fp16"]["min_loss_scale"], 1.0);
         EXPECT_EQ(e["bf16"]["enabled"], false);
         EXPECT_EQ(e["aio"]["intra_op_parallelism"], 1);
         EXPECT_EQ(e["autotuning"]["tuner_type"], "gridsearch");
         EXPECT_EQ(e["elasticity"]["prefer_larger_batch"], true);
         EXPECT_EQ(e["steps_per_print"], nullptr);
         EXPECT_EQ(e["optimizer"]["type"], "AdamW");
         EXPECT_EQ(e["optimizer"]["params"]["betas"], json::array({0.9, 0.999}));
         EXPECT_EQ(e["scheduler"], nullptr);
         EXPECT_FALSE(e["zero_optimization"].contains("cpu_offload"));  // deprecated, dropped
         EXPECT_FALSE(s.notes.empty());
         EXPECT_TRUE(s.zero.reduce_scatter);
         EXPECT_TRUE(s.zero.allgather_partitions);
         EXPECT_EQ(s.zero.allgather_bucket_size, 500000000);
         EXPECT_FALSE(s.grad_accum_dtype.has_value());  // DeepSpeed's None
         EXPECT_EQ(e["data_types"]["grad_accum_dtype"], nullptr);
         EXPECT_FALSE(s.job.skip_nonfinite_steps);
         EXPECT_EQ(e["job"]["skip_nonfinite_steps"], false);
         EXPECT_TRUE(s.no_effect_notes.empty());  // nothing set, nothing to say
       }},
      {"ZeroCommunicationKeys",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 2},
                                   {"reduce_scatter", false},
                                   {"allgather_partitions", false},
                                   {"allgather_bucket_size", 2e8},
                                   {"sub_group_size", 1e6}};
       },
       [](const JobSpec& s) {
         EXPECT_FALSE(s.zero.reduce_scatter);
         EXPECT_FALSE(s.zero.allgather_partitions);
         EXPECT_EQ(s.zero.allgather_bucket_size, 200000000);
         EXPECT_EQ(s.zero.sub_group_size, 1000000);
         EXPECT_TRUE(s.no_effect_notes.empty());  // all four act
       }},
      GradAccumRow("GradAccumFp32", "", "fp32", DType::kF32),
      GradAccumRow("GradAccumFp32WithBf16", "bf16", "fp32", DType::kF32),
      GradAccumRow("GradAccumBf16WithBf16", "bf16", "bf16", DType::kBF16),
      GradAccumRow("GradAccumFp16WithFp16", "fp16", "fp16", DType::kF16),
      {"GradAccumNull",
       [](json& j) {
         j["data_types"] = {{"grad_accum_dtype", nullptr}};
       },
       [](const JobSpec& s) { EXPECT_FALSE(s.grad_accum_dtype.has_value()); }},
      {"SkipNonfiniteSteps", [](json& j) { j["job"]["skip_nonfinite_steps"] = true; },
       [](const JobSpec& s) {
         EXPECT_TRUE(s.job.skip_nonfinite_steps);
         EXPECT_EQ(s.effective["job"]["skip_nonfinite_steps"], true);
       }},
      {"DeviceDefaultsToAuto", [](json&) {},
       [](const JobSpec& s) {
         EXPECT_EQ(s.job.device, JobDevice::kAuto);
         EXPECT_EQ(s.effective["job"]["device"], "auto");
       }},
      {"DeviceCuda", [](json& j) { j["job"]["device"] = "cuda"; },
       [](const JobSpec& s) { EXPECT_EQ(s.job.device, JobDevice::kCuda); }},
      {"DeviceCpu", [](json& j) { j["job"]["device"] = "cpu"; },
       [](const JobSpec& s) { EXPECT_EQ(s.job.device, JobDevice::kCpu); }},
      {"LlamaWithDefaults",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["intermediate_size"] = 172;
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.model.type, "llama");
         EXPECT_EQ(s.model.n_kv_head, s.model.n_head);
         EXPECT_EQ(s.model.intermediate_size, 172);
         EXPECT_EQ(s.model.rope_theta, 10000.0);
         EXPECT_EQ(s.model.norm_eps, 1e-6);
         EXPECT_EQ(s.model.padded_vocab_size, s.model.vocab_size);
         EXPECT_EQ(s.effective["model"]["n_kv_head"], s.model.n_head);
       }},
      {"LlamaGroupedQueryAttention",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["n_kv_head"] = 2;
         j["model"]["intermediate_size"] = 172;
         j["model"]["rope_theta"] = 500000.0;
         j["model"]["norm_eps"] = 1e-5;
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.model.n_kv_head, 2);
         EXPECT_EQ(s.model.rope_theta, 500000.0);
         EXPECT_EQ(s.model.norm_eps, 1e-5);
       }},
      {"AdamRunsAdamW",
       [](json& j) {
         j["optimizer"] = {{"type", "Adam"}, {"params", {{"weight_decay", 0.1}}}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.optimizer.type, "Adam");
         EXPECT_TRUE(s.optimizer.adam_w_mode);
         EXPECT_EQ(s.optimizer.weight_decay, 0.1);
         EXPECT_EQ(s.effective["optimizer"]["params"]["adam_w_mode"], true);
       }},
      {"AdamWithAdamWModeFalseIsAdam",
       [](json& j) {
         j["optimizer"] = {{"type", "Adam"}, {"params", {{"adam_w_mode", false}}}};
       },
       [](const JobSpec& s) { EXPECT_FALSE(s.optimizer.adam_w_mode); }},
      {"AdamWIgnoresAdamWModeFalse",
       [](json& j) {
         j["optimizer"] = {{"type", "AdamW"}, {"params", {{"adam_w_mode", false}}}};
       },
       [](const JobSpec& s) {
         EXPECT_TRUE(s.optimizer.adam_w_mode);
         EXPECT_EQ(s.effective["optimizer"]["params"]["adam_w_mode"], true);
       }},
      {"OptimizerTypeIsCaseInsensitive",
       [](json& j) {
         j["optimizer"] = {{"type", "adamw"},
                           {"params", {{"lr", 3e-4}, {"betas", {0.8, 0.95}}, {"eps", 1e-6}}}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.optimizer.type, "adamw");
         EXPECT_EQ(s.optimizer.lr, 3e-4);
         EXPECT_EQ(s.optimizer.beta1, 0.8);
         EXPECT_EQ(s.optimizer.beta2, 0.95);
         EXPECT_EQ(s.optimizer.eps, 1e-6);
       }},
      {"WarmupLRDefaults",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmupLR"}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.scheduler.type, "WarmupLR");
         EXPECT_EQ(s.scheduler.params, json({{"warmup_min_lr", 0.0},
                                             {"warmup_max_lr", 0.001},
                                             {"warmup_num_steps", 1000},
                                             {"warmup_type", "log"}}));
       }},
      {"WarmupDecayLRDefaults",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmupDecayLR"}, {"params", {{"total_num_steps", 5000}}}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.scheduler.params["total_num_steps"], 5000);
         EXPECT_EQ(s.scheduler.params["warmup_max_lr"], 0.001);
         EXPECT_EQ(s.scheduler.params["warmup_num_steps"], 1000);
       }},
      {"WarmupCosineLRDefaults",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmupCosineLR"}, {"params", {{"total_num_steps", 2000}}}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.scheduler.params, json({{"total_num_steps", 2000},
                                             {"warmup_min_ratio", 0.0},
                                             {"warmup_num_steps", 1000},
                                             {"cos_min_ratio", 0.0001},
                                             {"warmup_type", "log"}}));
       }},
      {"OneCycleDefaults",
       [](json& j) {
         j["scheduler"] = {{"type", "OneCycle"},
                           {"params", {{"cycle_min_lr", 1e-4}, {"cycle_max_lr", 1e-3}}}};
       },
       [](const JobSpec& s) {
         const json& p = s.scheduler.params;
         EXPECT_EQ(p["cycle_first_step_size"], 2000);
         EXPECT_EQ(p["cycle_second_step_size"], 2000);  // None -> first
         EXPECT_EQ(p["cycle_first_stair_count"], 0);
         EXPECT_EQ(p["cycle_second_stair_count"], 0);
         EXPECT_EQ(p["decay_lr_rate"], 0.0);
         EXPECT_EQ(p["decay_step_size"], 0);
         EXPECT_EQ(p["cycle_momentum"], true);
         EXPECT_EQ(p["cycle_min_mom"], 0.8);
         EXPECT_EQ(p["cycle_max_mom"], 0.9);
         EXPECT_EQ(p["decay_mom_rate"], 0.0);
       }},
      {"LRRangeTestDefaults",
       [](json& j) {
         j["scheduler"] = {{"type", "LRRangeTest"}, {"params", json::object()}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.scheduler.params, json({{"lr_range_test_min_lr", 0.001},
                                             {"lr_range_test_step_size", 2000},
                                             {"lr_range_test_step_rate", 1.0},
                                             {"lr_range_test_staircase", false}}));
       }},
      {"OverlapCommExplicit",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 0}, {"overlap_comm", true}};
       },
       [](const JobSpec& s) { EXPECT_TRUE(s.zero.overlap_comm); }},
      {"GradientClippingAndStepsPerPrint",
       [](json& j) {
         j["gradient_clipping"] = 1;
         j["steps_per_print"] = 10;
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.gradient_clipping, 1.0);
         EXPECT_EQ(s.effective["gradient_clipping"], 1.0);
         ASSERT_TRUE(s.steps_per_print.has_value());
         EXPECT_EQ(*s.steps_per_print, 10);
       }},
      {"WholeFloatsAreIntegers",
       [](json& j) {
         j["zero_optimization"] = {{"reduce_bucket_size", 5e8}, {"allgather_bucket_size", 2e8}};
         j["train_micro_batch_size_per_gpu"] = 4.0;
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.zero.reduce_bucket_size, 500000000);
         EXPECT_EQ(s.zero.allgather_bucket_size, 200000000);
         EXPECT_TRUE(s.effective["zero_optimization"]["reduce_bucket_size"].is_number_integer());
         EXPECT_EQ(s.train_micro_batch_size_per_gpu, 4);
       }},
      {"DisabledFeaturesAreAccepted",
       [](json& j) {
         j["fp16"] = {{"enabled", false}, {"loss_scale_window", 500}};
         j["bfloat16"] = {{"enabled", false}};  // DeepSpeed's alias of bf16
         j["wall_clock_breakdown"] = false;
         j["prescale_gradients"] = false;
         j["gradient_predivide_factor"] = 1.0;
         j["zero_optimization"] = {{"stage", 0}, {"offload_optimizer", {{"device", "none"}}}};
         j["tensorboard"] = {{"enabled", false}, {"output_path", "runs/"}};
         j["activation_checkpointing"] = {{"partition_activations", false}};
         j["communication_data_type"] = "fp32";
         j["zero_allow_untested_optimizer"] = true;
         j["zero_force_ds_cpu_optimizer"] = false;
         j["dump_state"] = false;
         j["memory_breakdown"] = false;
         j["amp"] = {{"enabled", false}, {"opt_level", "O1"}};
         j["sparse_attention"] = nullptr;
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.fp16.loss_scale_window, 500);
         EXPECT_FALSE(s.fp16.dynamic_loss_args_given);  // fp16 is off
         EXPECT_EQ(s.effective["bf16"]["enabled"], false);
         EXPECT_FALSE(s.effective.contains("bfloat16"));
         EXPECT_EQ(s.effective["zero_optimization"]["offload_optimizer"]["buffer_count"], 4);
         EXPECT_EQ(s.effective["zero_optimization"]["offload_param"], nullptr);
         EXPECT_EQ(s.effective["tensorboard"]["output_path"], "runs/");
         EXPECT_EQ(s.effective["amp"]["opt_level"], "O1");
       }},
      {"DeprecatedCpuOffloadIsOffloadOptimizerCpu",
       [](json& j) {
         j["zero_optimization"] = {
             {"stage", 2}, {"cpu_offload", true}, {"cpu_offload_use_pin_memory", true}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.zero.offload_optimizer.device, OffloadDevice::kCpu);
         EXPECT_TRUE(s.zero.offload_optimizer.pin_memory);
         const json& z = s.effective["zero_optimization"];
         EXPECT_EQ(z["offload_optimizer"]["device"], "cpu");
         EXPECT_EQ(z["offload_optimizer"]["buffer_count"], 4);  // the block's defaults filled
         EXPECT_FALSE(z.contains("cpu_offload"));
         EXPECT_FALSE(z.contains("cpu_offload_use_pin_memory"));
         EXPECT_THAT(s.notes, ::testing::Contains(
                                  "zero_optimization.cpu_offload: deprecated, read as "
                                  "offload_optimizer {\"device\": \"cpu\", \"pin_memory\": true}"));
       }},
      {"DeprecatedCpuOffloadParamIsOffloadParamCpu",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3}, {"cpu_offload_param", true}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.zero.offload_param.device, OffloadDevice::kCpu);
         const json& z = s.effective["zero_optimization"];
         EXPECT_EQ(z["offload_param"]["device"], "cpu");
         EXPECT_EQ(z["offload_param"]["buffer_count"], 5);  // the block's defaults filled
         EXPECT_FALSE(z.contains("cpu_offload_param"));
         EXPECT_THAT(s.notes, ::testing::Contains("zero_optimization.cpu_offload_param: "
                                                  "deprecated, read as offload_param "
                                                  "{\"device\": \"cpu\"}"));
       }},
      {"NvmeOffloadAndAio",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3},
                                   {"sub_group_size", 1000000},
                                   {"offload_optimizer",
                                    {{"device", "nvme"},
                                     {"nvme_path", "swap"},
                                     {"buffer_count", 6},
                                     {"pipeline_read", true},
                                     {"fast_init", true}}}};
         j["aio"] = {{"block_size", 262144},
                     {"queue_depth", 32},
                     {"intra_op_parallelism", 2},
                     {"single_submit", true},
                     {"overlap_events", false}};
       },
       [](const JobSpec& s) {
         const OffloadOptimizerConfig& o = s.zero.offload_optimizer;
         EXPECT_EQ(o.device, OffloadDevice::kNvme);
         EXPECT_EQ(o.nvme_path, "/base/swap");  // relative to the job file's directory
         EXPECT_EQ(s.effective["zero_optimization"]["offload_optimizer"]["nvme_path"],
                   "/base/swap");
         EXPECT_EQ(o.buffer_count, 6);
         EXPECT_TRUE(o.pipeline_read);
         EXPECT_FALSE(o.pipeline_write);
         EXPECT_TRUE(o.fast_init);
         EXPECT_EQ(s.aio.block_size, 262144);
         EXPECT_EQ(s.aio.queue_depth, 32);
         EXPECT_EQ(s.aio.intra_op_parallelism, 2);
         EXPECT_TRUE(s.aio.single_submit);
         EXPECT_FALSE(s.aio.overlap_events);
         EXPECT_TRUE(s.no_effect_notes.empty()) << s.no_effect_notes.front();
       }},
      {"ParamOffloadToNvme",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3},
                                   {"offload_param",
                                    {{"device", "nvme"},
                                     {"nvme_path", "pswap"},
                                     {"buffer_count", 3},
                                     {"buffer_size", 4096}}}};
       },
       [](const JobSpec& s) {
         const OffloadParamConfig& p = s.zero.offload_param;
         EXPECT_EQ(p.device, OffloadDevice::kNvme);
         EXPECT_EQ(p.nvme_path, "/base/pswap");  // relative to the job file's directory
         EXPECT_EQ(s.effective["zero_optimization"]["offload_param"]["nvme_path"], "/base/pswap");
         EXPECT_EQ(p.buffer_count, 3);
         EXPECT_EQ(p.buffer_size, 4096);
       }},
      {"ZeroOptimizationFalseIsStage0", [](json& j) { j["zero_optimization"] = false; },
       [](const JobSpec& s) { EXPECT_EQ(s.zero.stage, 0); }},
      {"GradientReductionKeys",
       [](json& j) {
         j["prescale_gradients"] = true;
         j["gradient_predivide_factor"] = 4.0;
         j["communication_data_type"] = "bf16";
       },
       [](const JobSpec& s) {
         EXPECT_TRUE(s.prescale_gradients);
         EXPECT_EQ(s.gradient_predivide_factor, 4.0);
         EXPECT_EQ(s.communication_data_type, "bf16");  // fp32 training, bf16 reductions
       }},
      {"CommunicationTypeDefaultsToThePrecision",
       [](json& j) {
         j["bf16"] = {{"enabled", true}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.communication_data_type, "bf16");
         EXPECT_EQ(s.effective["communication_data_type"], "bf16");
       }},
      {"Bf16AliasEnables",
       [](json& j) {
         j["bfloat16"] = {{"enabled", true}};
       },
       [](const JobSpec& s) {
         EXPECT_TRUE(s.bf16.enabled);
         EXPECT_FALSE(s.fp16.enabled);
       }},
      {"Fp16EnabledAlone",
       [](json& j) {
         j["fp16"] = {{"enabled", true}};
       },
       [](const JobSpec& s) {
         EXPECT_TRUE(s.fp16.enabled);
         EXPECT_FALSE(s.fp16.dynamic_loss_args_given);
         // The ZeRO scaler's own defaults apply, and the effective config says so.
         EXPECT_EQ(s.fp16.initial_scale_power, 32);
         EXPECT_EQ(s.fp16.hysteresis, 1);
         EXPECT_EQ(s.effective["fp16"]["initial_scale_power"], 32);
         EXPECT_EQ(s.effective["fp16"]["hysteresis"], 1);
       }},
      {"Fp16DynamicKeyGiven",
       [](json& j) {
         j["fp16"] = {{"enabled", true}, {"loss_scale_window", 500}};
       },
       [](const JobSpec& s) {
         EXPECT_TRUE(s.fp16.dynamic_loss_args_given);
         EXPECT_EQ(s.fp16.initial_scale_power, 16);  // the config defaults now reach the scaler
         EXPECT_EQ(s.fp16.hysteresis, 2);
       }},
      {"ZeroOptimizationTrueIsStage1", [](json& j) { j["zero_optimization"] = true; },
       [](const JobSpec& s) { EXPECT_EQ(s.zero.stage, 1); }},
      {"ZeroStage2Keys",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 2}, {"reduce_bucket_size", 5e5}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.zero.stage, 2);
         EXPECT_EQ(s.zero.reduce_bucket_size, 500000);
         EXPECT_FALSE(s.zero.overlap_comm);  // DeepSpeed: None means false below stage 3
       }},
      {"ZeroStage3OverlapsByDefault",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.zero.stage, 3);
         EXPECT_TRUE(s.zero.overlap_comm);
         EXPECT_EQ(s.zero.param_persistence_threshold, 100000);
       }},
      {"Stage3AliasesAccepted",
       [](json& j) {
         j["zero_optimization"] = {{"prefetch_bucket_size", 1000},
                                   {"stage3_max_live_parameters", 3e9}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.zero.prefetch_bucket_size, 1000);
         EXPECT_EQ(s.zero.max_live_parameters, 3000000000);
         EXPECT_EQ(s.effective["zero_optimization"]["stage3_prefetch_bucket_size"], 1000);
       }},
      {"PaddedVocab",
       [](json& j) {
         j["model"]["vocab_size"] = 50257;
         j["model"]["n_embd"] = 768;
         j["model"]["n_head"] = 12;
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.model.padded_vocab_size, 50304);
         EXPECT_EQ(s.effective["model"]["padded_vocab_size"], 50304);
       }},
      {"TextDataAndPaths",
       [](json& j) {
         j["data"] = {{"train", "../corpus/input.txt"}, {"val", "/abs/val.txt"}, {"seq_len", 32}};
         j["model"]["init_from"] = "models/gpt2.bin";
         j["job"]["checkpoint_dir"] = "ckpt";
         j["job"]["name"] = "demo";
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.data.train, "/corpus/input.txt");
         EXPECT_EQ(s.data.val, "/abs/val.txt");
         EXPECT_EQ(s.data.seq_len, 32);
         EXPECT_EQ(s.model.init_from, "/base/models/gpt2.bin");
         EXPECT_EQ(s.job.checkpoint_dir, "/base/ckpt");
         EXPECT_EQ(s.job.checkpoint_every, 0);
         EXPECT_EQ(s.job.name, "demo");
       }},
      {"PipelineGrid",
       [](json& j) {
         j["job"]["world_size"] = 4;
         j["job"]["pipeline_stages"] = 2;
         j["pipeline"] = {{"activation_checkpoint_interval", 1}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.pipeline.stages, 2);
         EXPECT_EQ(s.data_parallel_size, 2);
         EXPECT_EQ(s.pipeline.partition_method, "parameters") << "DeepSpeed's \"best\"";
         EXPECT_EQ(s.pipeline.activation_checkpoint_interval, 1);
         EXPECT_FALSE(s.pipeline.profile_checkpoints);
         EXPECT_FALSE(s.pipeline.synchronize_checkpoint_boundary);
       }},
      {"ActivationCheckpointingBlock",
       [](json& j) {
         j["pipeline"] = {{"activation_checkpoint_interval", 2}};
         j["activation_checkpointing"] = {{"partition_activations", true},
                                          {"contiguous_memory_optimization", true},
                                          {"number_checkpoints", 4},
                                          {"synchronize_checkpoint_boundary", true},
                                          {"profile", true},
                                          {"cpu_checkpointing", true}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.pipeline.activation_checkpoint_interval, 2);
         EXPECT_TRUE(s.pipeline.cpu_checkpointing);
         EXPECT_TRUE(s.pipeline.profile_checkpoints);
         EXPECT_TRUE(s.pipeline.synchronize_checkpoint_boundary);
       }},
      {"PipelinePartitionUniform",
       [](json& j) {
         j["job"]["world_size"] = 2;
         j["job"]["pipeline_stages"] = 2;
         j["pipeline"] = {{"partition", "uniform"}, {"stages", 2}};
       },
       [](const JobSpec& s) { EXPECT_EQ(s.pipeline.partition_method, "uniform"); }},
      {"OurBlocksFullySpecified",
       [](json& j) {
         j["model"] = {{"type", "gpt"},
                       {"n_layer", 4},
                       {"n_head", 4},
                       {"n_embd", 256},
                       {"vocab_size", 256},
                       {"block_size", 256},
                       {"padded_vocab_size", 384},
                       {"init_seed", 7}};
         j["data"] = {{"train", "t/*.bin"}, {"seed", 9}, {"shuffle", false}};
         j["job"] = {{"train_steps", 2000}, {"eval_every", 0},    {"eval_batches", 5},
                     {"max_restarts", 3},   {"resume", false},    {"keep_last", 1},
                     {"sample_every", 100}, {"sample_tokens", 64}};
       },
       [](const JobSpec& s) {
         EXPECT_EQ(s.model.padded_vocab_size, 384);
         EXPECT_EQ(s.model.init_seed, 7u);
         EXPECT_EQ(s.data.seed, 9u);
         EXPECT_FALSE(s.data.shuffle);
         EXPECT_EQ(s.data.seq_len, 256);
         EXPECT_EQ(s.job.train_steps, 2000);
         EXPECT_EQ(s.job.eval_every, 0);
         EXPECT_EQ(s.job.eval_batches, 5);
         EXPECT_EQ(s.job.max_restarts, 3);
         EXPECT_FALSE(s.job.resume);
         EXPECT_EQ(s.job.keep_last, 1);
         EXPECT_EQ(s.job.sample_every, 100);
         EXPECT_EQ(s.job.sample_tokens, 64);
       }},
      {"PipelineBlockKnown",
       [](json& j) {
         j["pipeline"] = {{"stages", 1}, {"partition", "uniform"}, {"pipe_partitioned", true}};
       },
       [](const JobSpec& s) { EXPECT_EQ(s.effective["pipeline"]["partition"], "uniform"); }},
  };
}

class ValidConfigTest : public ::testing::TestWithParam<ValidRow> {};

TEST_P(ValidConfigTest, Resolves) {
  json j = BaseJob();
  GetParam().edit(j);
  absl::StatusOr<JobSpec> spec = Parse(j);
  ASSERT_THAT(spec, IsOk());
  GetParam().check(*spec);
}

INSTANTIATE_TEST_SUITE_P(Table, ValidConfigTest, ::testing::ValuesIn(ValidRows()),
                         [](const ::testing::TestParamInfo<ValidRow>& info) {
                           return info.param.name;
                         });

TEST(ConfigTest, CommentsAreAccepted) {
  absl::StatusOr<JobSpec> spec = ParseJobSpec(R"({
    // DeepSpeed reads hjson; comments are common in ds_configs.
    "train_batch_size": 8, /* inline */
    "model": {"n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 256, "block_size": 8},
    "data": {"train": "x.bin"},
    "job": {"train_steps": 1}
  })",
                                              "");
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->train_micro_batch_size_per_gpu, 8);
  EXPECT_EQ(spec->data.train, "x.bin");  // no base_dir: left relative
}

TEST(ConfigTest, WorldSizeOverrideReplacesJobWorldSize) {
  json j = BaseJob();
  j["job"]["world_size"] = 1;
  absl::StatusOr<JobSpec> spec = Parse(j, 4);
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->job.world_size, 4);
  EXPECT_EQ(spec->data_parallel_size, 4);
  EXPECT_EQ(spec->train_batch_size, 16);
  EXPECT_EQ(spec->effective["job"]["world_size"], 4);
}

// ---------------------------------------------------------------------------------------------
// Invalid configs and the error each gives.

struct InvalidRow {
  std::string name;
  std::function<void(json&)> edit;
  std::string want;  // substring of the message
  std::optional<int> world = std::nullopt;
};

std::vector<InvalidRow> InvalidRows() {
  return {
      {"UnknownTopLevelKey", [](json& j) { j["foo"] = 1; }, "foo: unknown key"},
      {"TypoSuggestion", [](json& j) { j["grandient_accumulation_steps"] = 2; },
       "grandient_accumulation_steps: unknown key (did you mean "
       "\"gradient_accumulation_steps\"?)"},
      {"UnknownNestedKeyWithPath",
       [](json& j) {
         j["optimizer"] = {{"type", "Adam"}, {"params", {{"betaz", {0.9, 0.99}}}}};
       },
       "optimizer.params.betaz: unknown key (did you mean \"betas\"?)"},
      {"UnknownZeroKey",
       [](json& j) {
         j["zero_optimization"] = {{"stagee", 0}};
       },
       "zero_optimization.stagee: unknown key (did you mean \"stage\"?)"},
      {"UnknownModelKey", [](json& j) { j["model"]["n_layers"] = 2; },
       "model.n_layers: unknown key (did you mean \"n_layer\"?)"},
      {"KeyInTheWrongBlock", [](json& j) { j["stage3_prefetch_bucket_size"] = 1; },
       "stage3_prefetch_bucket_size: unknown key here (did you mean "
       "zero_optimization.stage3_prefetch_bucket_size?)"},
      {"DocOnlyKeyName",
       [](json& j) {
         j["aio"] = {{"thread_count", 2}};
       },
       "aio.thread_count: DeepSpeed's docs use this name but its code reads "
       "\"intra_op_parallelism\""},
      {"WrongTypeNumber", [](json& j) { j["gradient_clipping"] = "1.0"; },
       "gradient_clipping: expected a number, got string"},
      {"WrongTypeBool",
       [](json& j) {
         j["fp16"] = {{"enabled", 1}};
       },
       "fp16.enabled: expected a boolean, got integer"},
      {"NonIntegralInteger", [](json& j) { j["train_micro_batch_size_per_gpu"] = 2.5; },
       "train_micro_batch_size_per_gpu: expected an integer, got 2.5"},
      {"HuggingFaceAuto", [](json& j) { j["train_micro_batch_size_per_gpu"] = "auto"; },
       "Hugging Face Trainer placeholder"},
      {"BatchTripleMismatch",
       [](json& j) {
         j["train_batch_size"] = 32;
         j["gradient_accumulation_steps"] = 2;
         j["job"]["world_size"] = 2;
       },
       "train_batch_size: 32 != train_micro_batch_size_per_gpu 4 * gradient_accumulation_steps 2 "
       "* data-parallel size 2"},
      {"BatchInferenceTruncates",
       [](json& j) {
         j["train_batch_size"] = 8;
         j["train_micro_batch_size_per_gpu"] = 3;
       },
       "train_batch_size: 8 != train_micro_batch_size_per_gpu 3 * gradient_accumulation_steps 2 "
       "(inferred) * data-parallel size 1; gradient_accumulation_steps was inferred as "
       "train_batch_size 8 // train_micro_batch_size_per_gpu 3 // data-parallel size 1"},
      {"InferredZero",
       [](json& j) {
         j["train_batch_size"] = 2;
         j["train_micro_batch_size_per_gpu"] = 4;
       },
       "gradient_accumulation_steps: inferred as 0"},
      {"GasOnly",
       [](json& j) {
         j.erase("train_micro_batch_size_per_gpu");
         j["gradient_accumulation_steps"] = 4;
       },
       "train_batch_size: either train_batch_size or train_micro_batch_size_per_gpu must be "
       "given (gradient_accumulation_steps alone"},
      {"NoBatch", [](json& j) { j.erase("train_micro_batch_size_per_gpu"); },
       "train_batch_size: either train_batch_size or train_micro_batch_size_per_gpu"},
      {"ZeroBatch", [](json& j) { j["train_micro_batch_size_per_gpu"] = 0; },
       "train_micro_batch_size_per_gpu: must be >= 1, got 0"},
      {"Fp16AndBf16",
       [](json& j) {
         j["fp16"] = {{"enabled", true}};
         j["bf16"] = {{"enabled", true}};
       },
       "fp16 and bf16 cannot both be enabled"},
      {"Fp16MasterWeightsNotYet",
       [](json& j) {
         j["fp16"] = {{"enabled", true}, {"fp16_master_weights_and_grads", true}};
       },
       "fp16.fp16_master_weights_and_grads: fp16 master weights and gradients is not supported "
       "yet"},
      {"Bf16AndAlias",
       [](json& j) {
         j["bf16"] = {{"enabled", false}};
         j["bfloat16"] = {{"enabled", false}};
       },
       "bfloat16: given together with \"bf16\""},
      {"ZeroStage4",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 4}};
       },
       "zero_optimization.stage: must be <= 3, got 4"},
      {"OffloadAtStage0",
       [](json& j) {
         j["zero_optimization"] = {{"offload_optimizer", {{"device", "cpu"}}}};
       },
       "zero_optimization.offload_optimizer.device: optimizer offload needs ZeRO stage 1, 2 or 3"},
      {"OffloadNvmeWithoutPath",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 2}, {"offload_optimizer", {{"device", "nvme"}}}};
       },
       "zero_optimization.offload_optimizer.nvme_path: needed with offload_optimizer.device "
       "\"nvme\""},
      {"OffloadNvmeNoBuffers",
       [](json& j) {
         j["zero_optimization"] = {
             {"stage", 2},
             {"offload_optimizer", {{"device", "nvme"}, {"nvme_path", "/x"}, {"buffer_count", 0}}}};
       },
       "zero_optimization.offload_optimizer.buffer_count: must be at least 1"},
      {"OffloadNvmePartial",
       [](json& j) {
         j["zero_optimization"] = {
             {"stage", 2},
             {"offload_optimizer", {{"device", "nvme"}, {"nvme_path", "/x"}, {"ratio", 0.5}}}};
       },
       "zero_optimization.offload_optimizer.ratio: 0.5: partial offload"},
      {"CpuOffloadBesideOffloadOptimizer",
       [](json& j) {
         j["zero_optimization"] = {
             {"stage", 2}, {"cpu_offload", true}, {"offload_optimizer", {{"device", "cpu"}}}};
       },
       "zero_optimization.cpu_offload: deprecated key given together with its replacement "
       "zero_optimization.offload_optimizer"},
      {"ParamOffloadToNvmeNeedsAPath",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 3}, {"offload_param", {{"device", "nvme"}}}};
       },
       "zero_optimization.offload_param.nvme_path: needed with offload_param.device \"nvme\""},
      {"ParamOffloadToNvmeNeedsABuffer",
       [](json& j) {
         j["zero_optimization"] = {
             {"stage", 3},
             {"offload_param", {{"device", "nvme"}, {"nvme_path", "/x"}, {"buffer_count", 0}}}};
       },
       "zero_optimization.offload_param.buffer_count: must be at least 1"},
      {"ParamOffloadNeedsStage3",
       [](json& j) {
         j["zero_optimization"] = {{"stage", 2}, {"offload_param", {{"device", "cpu"}}}};
       },
       "zero_optimization.offload_param.device: parameter offload needs ZeRO stage 3 "
       "(zero_optimization.stage is 2)"},
      {"GpuDirectStorage",
       [](json& j) {
         j["aio"] = {{"use_gds", true}};
       },
       "aio.use_gds: GPUDirect Storage is not supported"},
      {"AioBlockUnaligned",
       [](json& j) {
         j["aio"] = {{"block_size", 1000}};
       },
       "aio.block_size: 1000 is not a multiple of 4096"},
      {"ZeroPlusPlusNotYet",
       [](json& j) {
         j["zero_optimization"] = {{"zero_hpz_partition_size", 8}};
       },
       "zero_optimization.zero_hpz_partition_size: ZeRO++ hierarchical partitioning"},
      {"MonitorNotYet",
       [](json& j) {
         j["tensorboard"] = {{"enabled", true}};
       },
       "tensorboard.enabled: TensorBoard monitoring is not supported yet"},
      {"Bf16ImmediateGradUpdateNotYet",
       [](json& j) {
         j["bf16"] = {{"enabled", true}, {"immediate_grad_update", true}};
       },
       "bf16.immediate_grad_update: bf16 immediate gradient update is not supported yet"},
      {"PredivideZero", [](json& j) { j["gradient_predivide_factor"] = 0.0; },
       "gradient_predivide_factor: must be > 0, got 0"},
      {"CommunicationTypeMismatch",
       [](json& j) {
         j["fp16"] = {{"enabled", true}};
         j["communication_data_type"] = "bf16";
       },
       "communication_data_type: \"bf16\" with fp16 training is not supported"},
      {"WallClockNotYet", [](json& j) { j["wall_clock_breakdown"] = true; },
       "wall_clock_breakdown: wall-clock breakdown logging is not supported yet"},
      {"SparseAttentionNotYet",
       [](json& j) {
         j["sparse_attention"] = {{"mode", "fixed"}};
       },
       "sparse_attention: sparse attention is not supported yet"},
      {"PipelineStagesDivideTheWorld",
       [](json& j) {
         j["job"]["world_size"] = 4;
         j["job"]["pipeline_stages"] = 3;
       },
       "job.pipeline_stages: must divide job.world_size (4 % 3 != 0)"},
      {"PipelineMoreStagesThanBlocks",
       [](json& j) {
         j["job"]["world_size"] = 3;
         j["job"]["pipeline_stages"] = 3;
       },
       "pipeline.stages"},
      {"PipelineRegexMatchesNothing",
       [](json& j) {
         j["job"]["world_size"] = 2;
         j["job"]["pipeline_stages"] = 2;
         j["pipeline"] = {{"partition", "type:attention"}};
       },
       "pipeline.partition: 'attention' matches no layer"},
      {"PipelineUnknownMethod",
       [](json& j) {
         j["job"]["world_size"] = 2;
         j["job"]["pipeline_stages"] = 2;
         j["pipeline"] = {{"partition", "fastest"}};
       },
       "pipeline.partition: 'fastest' is not parameters, uniform or type:REGEX"},
      {"CpuCheckpointingOnCuda",
       [](json& j) {
         j["job"]["device"] = "cuda";
         j["activation_checkpointing"] = {{"cpu_checkpointing", true}};
       },
       "activation_checkpointing.cpu_checkpointing: keeping activation checkpoints in host memory "
       "is not supported on CUDA devices yet"},
      {"PipelineWithZero2",
       [](json& j) {
         j["job"]["world_size"] = 2;
         j["job"]["pipeline_stages"] = 2;
         j["zero_optimization"] = {{"stage", 2}};
       },
       "zero_optimization.stage: 2 with pipeline parallelism"},
      {"Amsgrad",
       [](json& j) {
         j["optimizer"] = {{"type", "AdamW"}, {"params", {{"amsgrad", true}}}};
       },
       "optimizer.params.amsgrad: AMSGrad is not supported"},
      {"BetasCount",
       [](json& j) {
         j["optimizer"] = {{"type", "AdamW"}, {"params", {{"betas", {0.9, 0.99, 0.5}}}}};
       },
       "optimizer.params.betas: expected 2 values, got 3"},
      {"BetaRange",
       [](json& j) {
         j["optimizer"] = {{"type", "AdamW"}, {"params", {{"betas", {0.9, 1.0}}}}};
       },
       "optimizer.params.betas[1]: must be in [0, 1), got 1"},
      {"NegativeLr",
       [](json& j) {
         j["optimizer"] = {{"type", "AdamW"}, {"params", {{"lr", -1e-3}}}};
       },
       "optimizer.params.lr: must be >= 0"},
      {"ZeroEps",
       [](json& j) {
         j["optimizer"] = {{"type", "AdamW"}, {"params", {{"eps", 0}}}};
       },
       "optimizer.params.eps: must be > 0"},
      {"UnknownOptimizer",
       [](json& j) {
         j["optimizer"] = {{"type", "Adan"}};
       },
       "optimizer.type: unknown optimizer type \"Adan\" (did you mean \"Adam\"?)"},
      {"LambNotYet",
       [](json& j) {
         j["optimizer"] = {{"type", "Lamb"}};
       },
       "optimizer.type: \"Lamb\" is not supported yet"},
      {"TorchOptimizerNotYet",
       [](json& j) {
         j["optimizer"] = {{"type", "SGD"}};
       },
       "optimizer.type: torch.optim.SGD is not supported yet"},
      {"OptimizerWithoutType",
       [](json& j) {
         j["optimizer"] = {{"params", {{"lr", 1}}}};
       },
       "optimizer.type: required"},
      {"MissingTotalNumSteps",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmupDecayLR"}, {"params", json::object()}};
       },
       "scheduler.params.total_num_steps: required"},
      {"CosineTotalNotAfterWarmup",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmupCosineLR"},
                           {"params", {{"total_num_steps", 100}, {"warmup_num_steps", 100}}}};
       },
       "scheduler.params.total_num_steps: must be > warmup_num_steps 100, got 100"},
      {"WarmupType",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmupLR"}, {"params", {{"warmup_type", "cosine"}}}};
       },
       "scheduler.params.warmup_type: must be one of \"log\", \"linear\"; got \"cosine\""},
      {"OneCycleMissingMaxLr",
       [](json& j) {
         j["scheduler"] = {{"type", "OneCycle"}, {"params", {{"cycle_min_lr", 0}}}};
       },
       "scheduler.params.cycle_max_lr: required"},
      {"SchedulerTypeTypo",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmUpLR"}};
       },
       "scheduler.type: unknown scheduler type \"WarmUpLR\" (did you mean \"WarmupLR\"?)"},
      {"TorchSchedulerNotYet",
       [](json& j) {
         j["scheduler"] = {{"type", "StepLR"}};
       },
       "scheduler.type: torch.optim.lr_scheduler.StepLR is not supported yet"},
      {"UnknownSchedulerParam",
       [](json& j) {
         j["scheduler"] = {{"type", "WarmupLR"}, {"params", {{"warmup_steps", 10}}}};
       },
       "scheduler.params.warmup_steps: unknown key"},
      {"WorldSizeZero", [](json& j) { j["job"]["world_size"] = 0; },
       "job.world_size: must be >= 1, got 0"},
      {"WorldSizeOverrideZero", [](json&) {}, "job.world_size: must be >= 1, got 0", 0},
      {"WorldSizeTooLarge", [](json& j) { j["job"]["world_size"] = 5000; },
       "job.world_size: must be <= 4096, got 5000"},
      {"TrainStepsMissing", [](json& j) { j["job"].erase("train_steps"); },
       "job.train_steps: required"},
      {"TrainStepsZero", [](json& j) { j["job"]["train_steps"] = 0; },
       "job.train_steps: must be >= 1, got 0"},
      {"ModelMissing", [](json& j) { j.erase("model"); }, "model: required"},
      {"ModelTypeUnknown", [](json& j) { j["model"]["type"] = "mamba"; },
       "model.type: must be one of \"gpt\", \"llama\"; got \"mamba\""},
      {"LlamaKeyOnGpt", [](json& j) { j["model"]["n_kv_head"] = 2; },
       "model.n_kv_head: only for model.type \"llama\" (this model is \"gpt\")"},
      {"LlamaKvHeadsDoNotDivide",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["n_kv_head"] = 3;
         j["model"]["intermediate_size"] = 128;
       },
       "model.n_kv_head: must divide model.n_head (4 % 3 != 0)"},
      {"LlamaWithoutIntermediateSize", [](json& j) { j["model"]["type"] = "llama"; },
       "model.intermediate_size: required for model.type \"llama\""},
      {"LlamaPaddedVocab",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["padded_vocab_size"] = 384;
       },
       "model.padded_vocab_size: the Llama's embedding and head have exactly vocab_size rows"},
      {"LlamaFromAnLlmcFile",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["intermediate_size"] = 128;
         j["model"]["init_from"] = "gpt2.bin";
       },
       "model.init_from: the Llama starts from Hugging Face weights as safetensors"},
      {"LlamaPipelined",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["intermediate_size"] = 128;
         j["job"]["world_size"] = 2;
         j["job"]["pipeline_stages"] = 2;
       },
       "job.pipeline_stages: pipeline parallelism runs the GPT only"},
      {"LlamaSampling",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["intermediate_size"] = 128;
         j["job"]["sample_every"] = 10;
         j["job"]["sample_tokens"] = 10;
       },
       "job.sample_every: sampling runs for the GPT only"},
      {"LlamaCheckpointing",
       [](json& j) {
         j["model"]["type"] = "llama";
         j["model"]["intermediate_size"] = 128;
         j["pipeline"]["activation_checkpoint_interval"] = 1;
       },
       "pipeline.activation_checkpoint_interval: activation checkpointing runs for the GPT only"},
      {"NHeadDoesNotDivide",
       [](json& j) {
         j["model"]["n_embd"] = 256;
         j["model"]["n_head"] = 3;
       },
       "model.n_head: must divide model.n_embd (256 % 3 != 0)"},
      {"NegativeLayers", [](json& j) { j["model"]["n_layer"] = -1; },
       "model.n_layer: must be >= 1, got -1"},
      {"VocabTooLarge", [](json& j) { j["model"]["vocab_size"] = 70000; },
       "model.vocab_size: must be <= 65536 (token ids are stored as uint16), got 70000"},
      {"PaddedVocabTooSmall", [](json& j) { j["model"]["padded_vocab_size"] = 128; },
       "model.padded_vocab_size: must be >= model.vocab_size 256, got 128"},
      {"AbsurdSize",
       [](json& j) {
         j["model"]["n_layer"] = 1000;
         j["model"]["n_embd"] = 100000;
         j["model"]["n_head"] = 100;
       },
       "dstrain rejects models above 1e11 parameters"},
      {"IntOverflowSize", [](json& j) { j["model"]["n_embd"] = 1e12; },
       "model.n_embd: must be <= 2147483647"},
      {"SeqLenTooLong", [](json& j) { j["data"]["seq_len"] = 128; },
       "data.seq_len: must be <= model.block_size 64, got 128"},
      {"TrainEmpty", [](json& j) { j["data"]["train"] = ""; }, "data.train: must not be empty"},
      {"TrainMissing", [](json& j) { j["data"].erase("train"); }, "data.train: required"},
      {"TextNeedsByteVocab",
       [](json& j) {
         j["data"]["train"] = "input.txt";
         j["model"]["vocab_size"] = 100;
       },
       "model.vocab_size: must be >= 256 for byte-level text"},
      {"MixedDataKinds",
       [](json& j) {
         j["data"]["train"] = "input.txt";
         j["data"]["val"] = "val_*.bin";
       },
       "data.val: must be the same kind as data.train"},
      {"TagValidationUnknown",
       [](json& j) {
         j["checkpoint"] = {{"tag_validation", "Maybe"}};
       },
       R"(checkpoint.tag_validation: must be one of "Ignore", "Warn", "Fail" (in any case); got "Maybe")"},
      {"CheckpointEveryNeedsADirectory", [](json& j) { j["job"]["checkpoint_every"] = 10; },
       "job.checkpoint_every: needs job.checkpoint_dir"},
      {"KeepLastZero", [](json& j) { j["job"]["keep_last"] = 0; },
       "job.keep_last: must be >= 1, got 0"},
      {"GradAccumBf16WithFp32Training",
       [](json& j) {
         j["data_types"] = {{"grad_accum_dtype", "bf16"}};
       },
       "data_types.grad_accum_dtype: \"bf16\" with fp32 training is not supported (use "
       "\"fp32\")"},
      {"GradAccumFp16WithBf16Training",
       [](json& j) {
         j["bf16"] = {{"enabled", true}};
         j["data_types"] = {{"grad_accum_dtype", "fp16"}};
       },
       "data_types.grad_accum_dtype: \"fp16\" with bf16 training is not supported (use "
       "\"fp32\" or \"bf16\")"},
      {"GradAccumUnknownType",
       [](json& j) {
         j["data_types"] = {{"grad_accum_dtype", "fp8"}};
       },
       "data_types.grad_accum_dtype: must be one of \"fp32\", \"fp16\", \"bf16\"; got \"fp8\""},
      {"DeviceUnknown", [](json& j) { j["job"]["device"] = "gpu"; },
       "job.device: must be \"auto\", \"cpu\" or \"cuda\", got \"gpu\""},
      {"SkipNonfiniteStepsType", [](json& j) { j["job"]["skip_nonfinite_steps"] = 1; },
       "job.skip_nonfinite_steps: expected a boolean, got integer"},
      {"UnknownKeyInNoEffectBlock",
       [](json& j) {
         j["aio"] = {{"block_sise", 4096}};
       },
       "aio.block_sise: unknown key (did you mean \"block_size\"?)"},
      {"NoEffectKeyWrongType",
       [](json& j) {
         j["zero_optimization"] = {{"contiguous_gradients", "yes"}};
       },
       "zero_optimization.contiguous_gradients: expected a boolean, got string"},
      {"PipelineStagesMismatch",
       [](json& j) {
         j["pipeline"] = {{"stages", 2}};
       },
       "pipeline.stages: 2 != job.pipeline_stages 1"},
      {"TopLevelNotObject", [](json& j) { j = json::array(); },
       "job: expected a JSON object at the top level, got array"},
  };
}

class InvalidConfigTest : public ::testing::TestWithParam<InvalidRow> {};

TEST_P(InvalidConfigTest, IsRejected) {
  json j = BaseJob();
  GetParam().edit(j);
  EXPECT_THAT(Parse(j, GetParam().world),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(GetParam().want)));
}

INSTANTIATE_TEST_SUITE_P(Table, InvalidConfigTest, ::testing::ValuesIn(InvalidRows()),
                         [](const ::testing::TestParamInfo<InvalidRow>& info) {
                           return info.param.name;
                         });

// Errors that need raw text (duplicate keys, syntax) rather than a json value.
TEST(ConfigTest, DuplicateKeysAreRejected) {
  EXPECT_THAT(
      ParseJobSpec(R"({"train_batch_size": 8, "train_batch_size": 16})", ""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("train_batch_size: duplicate key")));
  EXPECT_THAT(ParseJobSpec(
                  R"({"zero_optimization": {"stage": 0, "reduce_scatter": true, "stage": 0}})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("zero_optimization.stage: duplicate key")));
  EXPECT_THAT(ParseJobSpec(R"({"a": [{"x": 1}, {"y": 1, "y": 2}]})", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a[1].y: duplicate key")));
}

TEST(ConfigTest, SyntaxErrorsNamePosition) {
  EXPECT_THAT(ParseJobSpec("{\n  \"train_batch_size\": 8,\n  \"fp16\": {\"enabled\": fals}\n}", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("fp16.enabled: invalid JSON at line 3")));
  EXPECT_THAT(ParseJobSpec("", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job: invalid JSON")));
}

// ---------------------------------------------------------------------------------------------
// deepspeed_config: an unchanged DeepSpeed file beside our blocks.

constexpr char kDeepSpeedConfig[] = R"({
  "train_batch_size": 16,
  "gradient_accumulation_steps": 2,
  "optimizer": {
    "type": "Adam",
    "params": {"lr": 3e-4, "betas": [0.8, 0.999], "eps": 1e-8, "weight_decay": 3e-7}
  },
  "scheduler": {
    "type": "WarmupLR",
    "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-4, "warmup_num_steps": 500}
  },
  "gradient_clipping": 1.0,
  "fp16": {"enabled": false},
  "zero_optimization": {
    "stage": 0, "allgather_partitions": true, "allgather_bucket_size": 2e8,
    "overlap_comm": false, "reduce_scatter": true, "reduce_bucket_size": 2e8,
    "contiguous_gradients": true
  },
  // hjson-style comment
  "steps_per_print": 10,
  "wall_clock_breakdown": false
})";

std::string WriteDeepSpeedJob(const std::string& dir, const std::string& ds_text,
                              const std::string& extra_job_keys = "") {
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/ds_config.json", ds_text);
  WriteFile(dir + "/job.json", absl::StrCat(R"({
    "deepspeed_config": "ds_config.json",)",
                                            extra_job_keys, R"(
    "model": {"n_layer": 2, "n_head": 4, "n_embd": 64, "vocab_size": 256, "block_size": 64},
    "data": {"train": "data/*.bin", "val": "data/val.bin"},
    "job": {"world_size": 2, "train_steps": 10}
  })"));
  return dir + "/job.json";
}

TEST(DeepSpeedConfigTest, LoadsUnchangedFile) {
  const std::string dir = TempDir() + "/ds_ok";
  absl::StatusOr<JobSpec> spec = LoadJobSpec(WriteDeepSpeedJob(dir, kDeepSpeedConfig));
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->train_batch_size, 16);
  EXPECT_EQ(spec->gradient_accumulation_steps, 2);
  EXPECT_EQ(spec->train_micro_batch_size_per_gpu, 4);  // 16 // 2 // 2
  EXPECT_EQ(spec->data_parallel_size, 2);
  EXPECT_EQ(spec->optimizer.type, "Adam");
  EXPECT_TRUE(spec->optimizer.adam_w_mode);
  EXPECT_EQ(spec->optimizer.lr, 3e-4);
  EXPECT_EQ(spec->optimizer.beta1, 0.8);
  EXPECT_EQ(spec->optimizer.weight_decay, 3e-7);
  EXPECT_EQ(spec->scheduler.type, "WarmupLR");
  EXPECT_EQ(spec->scheduler.params["warmup_num_steps"], 500);
  EXPECT_EQ(spec->scheduler.params["warmup_type"], "log");
  EXPECT_EQ(spec->gradient_clipping, 1.0);
  EXPECT_EQ(spec->steps_per_print, 10);
  EXPECT_EQ(spec->zero.reduce_bucket_size, 200000000);
  EXPECT_EQ(spec->data.train,
            std::filesystem::path(dir).lexically_normal().string() + "/data/*.bin");
  EXPECT_EQ(spec->job.name, "job");  // the job file's stem
  EXPECT_FALSE(spec->effective.contains("deepspeed_config"));
}

TEST(DeepSpeedConfigTest, KeyInBothPlacesIsAnError) {
  const std::string dir = TempDir() + "/ds_both";
  EXPECT_THAT(LoadJobSpec(WriteDeepSpeedJob(dir, kDeepSpeedConfig, R"("gradient_clipping": 0.5,)")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gradient_clipping: set both in the job file and in "
                                 "deepspeed_config")));
}

TEST(DeepSpeedConfigTest, InlineKeysThatDoNotClashAreMerged) {
  const std::string dir = TempDir() + "/ds_merge";
  absl::StatusOr<JobSpec> spec = LoadJobSpec(
      WriteDeepSpeedJob(dir, kDeepSpeedConfig, R"("zero_allow_untested_optimizer": true,)"));
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->effective["zero_allow_untested_optimizer"], true);
}

TEST(DeepSpeedConfigTest, MissingFileIsAnError) {
  EXPECT_THAT(ParseJobSpec(R"({"deepspeed_config": "nope/ds.json"})", TempDir()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("deepspeed_config: cannot read \"" + TempDir() +
                                 "/nope/ds.json\": No such file or directory")));
}

TEST(DeepSpeedConfigTest, ErrorsInTheFileNameIt) {
  const std::string dir = TempDir() + "/ds_offload";
  EXPECT_THAT(LoadJobSpec(WriteDeepSpeedJob(dir, R"({"train_batch_size": 16,
                "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("zero_optimization.offload_param.nvme_path: needed with "
                                 "offload_param.device \"nvme\"")));
  EXPECT_THAT(LoadJobSpec(WriteDeepSpeedJob(dir, R"({"train_batch_size": 16,
                "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(from deepspeed_config \"")));
  const std::string dup_dir = TempDir() + "/ds_dup";
  EXPECT_THAT(LoadJobSpec(WriteDeepSpeedJob(dup_dir, R"({"train_batch_size": 16,
                                                        "train_batch_size": 16})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("train_batch_size: duplicate key (in deepspeed_config")));
  const std::string ours_dir = TempDir() + "/ds_ours";
  EXPECT_THAT(LoadJobSpec(WriteDeepSpeedJob(ours_dir, R"({"train_batch_size": 16,
                                                         "job": {"train_steps": 1}})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job: belongs in the job file, not in deepspeed_config")));
}

TEST(ConfigTest, LoadJobSpecMissingFile) {
  EXPECT_THAT(LoadJobSpec(TempDir() + "/does_not_exist.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does_not_exist.json")));
}

// ---------------------------------------------------------------------------------------------
// The effective config parses back to the same JobSpec.

json WithoutNotes(json e) {
  e.erase("notes");
  return e;
}

void ExpectSameSpec(const JobSpec& a, const JobSpec& b) {
  EXPECT_EQ(a.train_batch_size, b.train_batch_size);
  EXPECT_EQ(a.train_micro_batch_size_per_gpu, b.train_micro_batch_size_per_gpu);
  EXPECT_EQ(a.gradient_accumulation_steps, b.gradient_accumulation_steps);
  EXPECT_EQ(a.data_parallel_size, b.data_parallel_size);
  EXPECT_EQ(a.gradient_clipping, b.gradient_clipping);
  EXPECT_EQ(a.communication_data_type, b.communication_data_type);
  EXPECT_EQ(a.prescale_gradients, b.prescale_gradients);
  EXPECT_EQ(a.gradient_predivide_factor, b.gradient_predivide_factor);
  EXPECT_EQ(a.steps_per_print, b.steps_per_print);
  EXPECT_EQ(a.optimizer.type, b.optimizer.type);
  EXPECT_EQ(a.optimizer.lr, b.optimizer.lr);
  EXPECT_EQ(a.optimizer.beta1, b.optimizer.beta1);
  EXPECT_EQ(a.optimizer.beta2, b.optimizer.beta2);
  EXPECT_EQ(a.optimizer.eps, b.optimizer.eps);
  EXPECT_EQ(a.optimizer.weight_decay, b.optimizer.weight_decay);
  EXPECT_EQ(a.optimizer.adam_w_mode, b.optimizer.adam_w_mode);
  EXPECT_EQ(a.optimizer.bias_correction, b.optimizer.bias_correction);
  EXPECT_EQ(a.scheduler.type, b.scheduler.type);
  EXPECT_EQ(a.scheduler.params, b.scheduler.params);
  EXPECT_EQ(a.zero.stage, b.zero.stage);
  EXPECT_EQ(a.zero.overlap_comm, b.zero.overlap_comm);
  EXPECT_EQ(a.zero.reduce_bucket_size, b.zero.reduce_bucket_size);
  EXPECT_EQ(a.zero.reduce_scatter, b.zero.reduce_scatter);
  EXPECT_EQ(a.zero.allgather_bucket_size, b.zero.allgather_bucket_size);
  EXPECT_EQ(a.zero.allgather_partitions, b.zero.allgather_partitions);
  EXPECT_EQ(a.zero.sub_group_size, b.zero.sub_group_size);
  EXPECT_EQ(a.grad_accum_dtype, b.grad_accum_dtype);
  EXPECT_EQ(a.job.skip_nonfinite_steps, b.job.skip_nonfinite_steps);
  EXPECT_EQ(a.no_effect_notes, b.no_effect_notes);
  EXPECT_EQ(a.fp16.enabled, b.fp16.enabled);
  EXPECT_EQ(a.fp16.initial_scale_power, b.fp16.initial_scale_power);
  EXPECT_EQ(a.fp16.hysteresis, b.fp16.hysteresis);
  EXPECT_EQ(a.fp16.loss_scale_window, b.fp16.loss_scale_window);
  EXPECT_EQ(a.bf16.enabled, b.bf16.enabled);
  EXPECT_EQ(a.model.n_layer, b.model.n_layer);
  EXPECT_EQ(a.model.padded_vocab_size, b.model.padded_vocab_size);
  EXPECT_EQ(a.model.init_from, b.model.init_from);
  EXPECT_EQ(a.data.train, b.data.train);
  EXPECT_EQ(a.data.val, b.data.val);
  EXPECT_EQ(a.data.seq_len, b.data.seq_len);
  EXPECT_EQ(a.job.name, b.job.name);
  EXPECT_EQ(a.job.world_size, b.job.world_size);
  EXPECT_EQ(a.job.train_steps, b.job.train_steps);
  EXPECT_EQ(a.job.checkpoint_dir, b.job.checkpoint_dir);
  EXPECT_EQ(a.checkpoint.tag_validation, b.checkpoint.tag_validation);
  EXPECT_EQ(a.zero.gather_16bit_weights_on_model_save, b.zero.gather_16bit_weights_on_model_save);
  EXPECT_EQ(WithoutNotes(a.effective), WithoutNotes(b.effective));
  EXPECT_EQ(WithoutNotes(a.effective).dump(), WithoutNotes(b.effective).dump());
}

void ExpectRoundTrip(const JobSpec& spec) {
  // base_dir differs on purpose: resolved paths are absolute and must stay as they are.
  absl::StatusOr<JobSpec> again = ParseJobSpec(spec.effective.dump(2), "/elsewhere");
  ASSERT_THAT(again, IsOk()) << spec.effective.dump(2);
  ExpectSameSpec(spec, *again);
}

TEST(RoundTripTest, EveryValidRow) {
  for (const ValidRow& row : ValidRows()) {
    SCOPED_TRACE(row.name);
    json j = BaseJob();
    row.edit(j);
    absl::StatusOr<JobSpec> spec = Parse(j);
    ASSERT_THAT(spec, IsOk());
    ExpectRoundTrip(*spec);
  }
}

TEST(RoundTripTest, DeepSpeedConfigAndWorldOverride) {
  const std::string dir = TempDir() + "/ds_roundtrip";
  absl::StatusOr<JobSpec> spec = LoadJobSpec(WriteDeepSpeedJob(dir, kDeepSpeedConfig), 4);
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->train_micro_batch_size_per_gpu, 2);  // 16 // 4 // 2
  ExpectRoundTrip(*spec);
}

TEST(RoundTripTest, FloatsRoundTripExactly) {
  json j = BaseJob();
  j["optimizer"] = {{"type", "AdamW"},
                    {"params", {{"lr", 0.1 + 0.2}, {"weight_decay", 1.0 / 3.0}, {"eps", 1e-300}}}};
  j["gradient_clipping"] = 0.7;
  absl::StatusOr<JobSpec> spec = Parse(j);
  ASSERT_THAT(spec, IsOk());
  absl::StatusOr<JobSpec> again = ParseJobSpec(spec->effective.dump(), "/base");
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->optimizer.lr, 0.1 + 0.2);
  EXPECT_EQ(again->optimizer.weight_decay, 1.0 / 3.0);
  EXPECT_EQ(again->optimizer.eps, 1e-300);
  EXPECT_EQ(again->gradient_clipping, 0.7);
}

// ---------------------------------------------------------------------------------------------
// The schema and features.cc agree: every gated key has a row, every row a gated key.

TEST(FeatureTableTest, MatchesSchema) {
  std::vector<std::string> gated;
  internal::CollectGatedPaths(internal::JobFileSchema(), "", &gated);
  internal::CollectGatedPaths(internal::AdamParamsSchema(), "optimizer.params", &gated);
  std::set<std::string> gated_set(gated.begin(), gated.end());
  for (const std::string& path : gated) {
    EXPECT_NE(internal::FindFeatureSwitch(path), nullptr) << path << " missing in features.cc";
  }
  for (const internal::FeatureSwitch& s : internal::AllFeatureSwitches()) {
    EXPECT_TRUE(gated_set.count(s.path)) << s.path << " in features.cc is not a gated key";
  }
  EXPECT_EQ(internal::ImplementedMaxZeroStage(), 3);
}

// ---------------------------------------------------------------------------------------------
// Every key the schema knows has one row in key_effects.cc, and the rows agree with features.cc
// and with docs/configuration.md.

// Every leaf of the schema: the job file's, optimizer.params' and every schedule's params.
std::set<std::string> SchemaKeyPaths() {
  std::vector<std::string> paths;
  internal::CollectLeafPaths(internal::JobFileSchema(), "", &paths);
  internal::CollectLeafPaths(internal::AdamParamsSchema(), "optimizer.params", &paths);
  for (const std::string& type : internal::SchedulerTypes()) {
    const internal::Block* params = internal::SchedulerParamsSchema(type);
    EXPECT_NE(params, nullptr) << type;
    if (params != nullptr) internal::CollectLeafPaths(*params, "scheduler.params", &paths);
  }
  return std::set<std::string>(paths.begin(), paths.end());
}

TEST(KeyEffectTableTest, EveryKeyHasExactlyOneRow) {
  const std::set<std::string> keys = SchemaKeyPaths();
  // Spot checks that the walk reaches nested blocks, open blocks and the parameter tables.
  for (const char* path :
       {"timers.throughput.synchronized", "amp.*", "zero_optimization.offload_param.buffer_count",
        "data_efficiency.data_sampling.num_workers", "optimizer.params.amsgrad",
        "scheduler.params.cycle_min_mom", "job.skip_nonfinite_steps"}) {
    EXPECT_TRUE(keys.count(path)) << path;
  }
  std::set<std::string> rows;
  for (const internal::KeyEffectRow& row : internal::AllKeyEffects()) {
    EXPECT_TRUE(rows.insert(row.path).second) << row.path << ": two rows in key_effects.cc";
    EXPECT_TRUE(keys.count(row.path)) << row.path << ": a row for a key the schema lacks";
  }
  for (const std::string& key : keys) {
    const internal::KeyEffectRow* row = internal::FindKeyEffect(key);
    EXPECT_TRUE(row != nullptr && row->path == key) << key << ": no row in key_effects.cc";
  }
}

TEST(KeyEffectTableTest, RowsAgreeWithFeatures) {
  std::vector<std::string> gated;
  internal::CollectGatedPaths(internal::JobFileSchema(), "", &gated);
  internal::CollectGatedPaths(internal::AdamParamsSchema(), "optimizer.params", &gated);
  const std::set<std::string> gated_set(gated.begin(), gated.end());
  for (const internal::KeyEffectRow& row : internal::AllKeyEffects()) {
    SCOPED_TRACE(row.path);
    const internal::FeatureSwitch* feature =
        gated_set.count(row.path) ? internal::FindFeatureSwitch(row.path) : nullptr;
    switch (row.effect) {
      case internal::KeyEffect::kActs:
        EXPECT_NE(row.text, nullptr) << "name the code that reads it";
        // A gated key acts only when its feature is implemented.
        if (feature != nullptr) {
          EXPECT_TRUE(feature->implemented);
        }
        break;
      case internal::KeyEffect::kNoEffect:
        EXPECT_EQ(feature, nullptr) << "a gated key either acts or is not supported yet";
        EXPECT_NE(row.text == nullptr, row.configures == nullptr) << "a reason, or a feature";
        if (row.configures != nullptr) {
          // It configures a feature that is rejected when on: a gated switch not implemented.
          EXPECT_TRUE(gated_set.count(row.configures)) << row.configures;
          const internal::FeatureSwitch* s = internal::FindFeatureSwitch(row.configures);
          ASSERT_NE(s, nullptr) << row.configures;
          EXPECT_FALSE(s->implemented) << row.configures;
        }
        EXPECT_FALSE(internal::NoEffectReason(row).empty());
        break;
      case internal::KeyEffect::kNotSupported:
        // Gated and rejected by features.cc, or rejected by a check the row names.
        if (feature != nullptr) {
          EXPECT_FALSE(feature->implemented);
          EXPECT_EQ(row.text, nullptr);
        } else {
          EXPECT_NE(row.text, nullptr) << "name the check that rejects it";
        }
        break;
    }
  }
}

std::string ReadRunfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  std::ifstream in(absl::StrCat(srcdir != nullptr ? srcdir : ".", "/",
                                workspace != nullptr ? workspace : "", "/", path),
                   std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(KeyEffectTableTest, ConfigurationDocListsEveryNoEffectKey) {
  const std::string doc = ReadRunfile("docs/configuration.md");
  ASSERT_FALSE(doc.empty()) << "docs/configuration.md is not in the test's runfiles";
  absl::StatusOr<std::string> regenerated = internal::ReplaceNoEffectDocSection(doc);
  ASSERT_THAT(regenerated, IsOk());
  EXPECT_TRUE(*regenerated == doc)
      << "docs/configuration.md's table of keys without effect differs from key_effects.cc; "
         "run `bazel run //worker/config:key_effects_doc -- --write docs/configuration.md`. "
         "The table should read:\n"
      << internal::NoEffectDocSection();
  for (const internal::KeyEffectRow& row : internal::AllKeyEffects()) {
    if (row.effect != internal::KeyEffect::kNoEffect) continue;
    EXPECT_THAT(doc, HasSubstr(absl::StrCat("`", row.path, "`"))) << row.path;
  }
}

// ---------------------------------------------------------------------------------------------
// Keys without effect that a job sets are named in the notes.

TEST(NoEffectNotesTest, OneNotePerKeySetInPathOrder) {
  json j = BaseJob();
  j["zero_optimization"] = {{"stage", 2}, {"contiguous_gradients", true}, {"legacy_stage1", true}};
  j["fp16"] = {{"enabled", true}, {"auto_cast", true}};
  j["aio"] = {{"block_size", 4096}};
  j["amp"] = {{"enabled", false}, {"opt_level", "O1"}};  // kept verbatim by the open block
  j["vocabulary_size"] = 50257;
  j["optimizer"] = {{"type", "AdamW"}, {"params", {{"torch_adam", true}}}};
  j["tensorboard"] = {{"enabled", false}, {"output_path", "runs/"}};
  absl::StatusOr<JobSpec> spec = Parse(j);
  ASSERT_THAT(spec, IsOk());
  const std::vector<std::string> want = {
      "amp.opt_level: no effect in dstrain: it only configures NVIDIA apex AMP, which is not "
      "supported yet",
      "fp16.auto_cast: no effect in dstrain: it casts the model's floating-point inputs to fp16; "
      "dstrain's model takes token ids and runs each layer in the training precision already",
      "optimizer.params.torch_adam: no effect in dstrain: it picks torch.optim's Adam over "
      "DeepSpeed's fused kernel; dstrain has one Adam kernel, and it computes the same update",
      "tensorboard.output_path: no effect in dstrain: it only configures TensorBoard "
      "monitoring, which is not supported yet",
      "vocabulary_size: no effect in dstrain: DeepSpeed only compares it with the model's "
      "embedding size to print a warning; dstrain's vocabulary is model.vocab_size",
      "zero_optimization.contiguous_gradients: no effect in dstrain: dstrain's gradients always "
      "live in one flat buffer in the parameters' layout, so there is nothing to copy into a "
      "contiguous one",
      "zero_optimization.legacy_stage1: no effect in dstrain: it selects DeepSpeed's old "
      "stage-1 code; dstrain has one implementation per stage",
  };
  EXPECT_EQ(spec->no_effect_notes, want);
  // The same lines end `notes` and the effective configuration's notes.
  ASSERT_GE(spec->notes.size(), want.size());
  EXPECT_EQ(std::vector<std::string>(spec->notes.end() - want.size(), spec->notes.end()), want);
  EXPECT_EQ(spec->effective["notes"], json(spec->notes));
  EXPECT_EQ(NoteLines({want[0], want[1]}),
            absl::StrCat("note: ", want[0], "\nnote: ", want[1], "\n"));
}

TEST(NoEffectNotesTest, KeysThatActOrAreNotGivenAreNotNoted) {
  json j = BaseJob();
  j["zero_optimization"] = {{"stage", 1}, {"reduce_scatter", true}, {"overlap_comm", true}};
  j["steps_per_print"] = 10;
  absl::StatusOr<JobSpec> spec = Parse(j);
  ASSERT_THAT(spec, IsOk());
  EXPECT_TRUE(spec->no_effect_notes.empty());
  for (const std::string& n : spec->notes) EXPECT_THAT(n, ::testing::Not(HasSubstr("no effect")));
}

TEST(NoEffectNotesTest, EffectiveConfigurationParsesBackToTheSameNotes) {
  json j = BaseJob();
  j["zero_optimization"] = {{"contiguous_gradients", true}};  // DeepSpeed's default, set
  j["timers"] = {{"throughput", {{"enabled", false}}}};
  absl::StatusOr<JobSpec> spec = Parse(j);
  ASSERT_THAT(spec, IsOk());
  ASSERT_EQ(spec->no_effect_notes.size(), 2u);
  // The effective configuration writes every key; only the two set above are noted again.
  absl::StatusOr<JobSpec> again = ParseJobSpec(spec->effective.dump(), "/base");
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->no_effect_notes, spec->no_effect_notes);
  // A key changed from its default in the effective configuration is noted too.
  json edited = spec->effective;
  edited["zero_optimization"]["round_robin_gradients"] = true;
  absl::StatusOr<JobSpec> third = ParseJobSpec(edited.dump(), "/base");
  ASSERT_THAT(third, IsOk());
  ASSERT_EQ(third->no_effect_notes.size(), 3u);
  EXPECT_THAT(third->no_effect_notes[2],
              HasSubstr("zero_optimization.round_robin_gradients: no effect in dstrain: "));
}

TEST(NoEffectNotesTest, FromADeepSpeedConfigFile) {
  const std::string dir = TempDir() + "/ds_notes";
  absl::StatusOr<JobSpec> spec = LoadJobSpec(WriteDeepSpeedJob(dir, kDeepSpeedConfig));
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->no_effect_notes,
            std::vector<std::string>({internal::NoEffectNote(
                "zero_optimization.contiguous_gradients",
                *internal::FindKeyEffect("zero_optimization.contiguous_gradients"))}));
}

TEST(ResolveSchedulerConfigTest, FillsDefaultsAndValidates) {
  absl::StatusOr<SchedulerConfig> s = ResolveSchedulerConfig("WarmupLR", nullptr);
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ(s->params["warmup_max_lr"], 0.001);
  absl::StatusOr<SchedulerConfig> none = ResolveSchedulerConfig("", nullptr);
  ASSERT_THAT(none, IsOk());
  EXPECT_EQ(none->type, "");
  EXPECT_THAT(ResolveSchedulerConfig("WarmupLR", json::array()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("scheduler.params: expected an object, got array")));
}

// dstrain::Initialize's configuration: a DeepSpeed config alone, the world size from the launch.
TEST(ParseDeepSpeedConfigTest, ReadsDeepSpeedKeysWithTheLaunchWorldSize) {
  const std::string ds = R"({
    "train_batch_size": 16, "gradient_accumulation_steps": 2,
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.1}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 10,
                                                      "total_num_steps": 100}},
    "gradient_clipping": 1.0,
    "bf16": {"enabled": true},
    "zero_optimization": {"stage": 2}
  })";
  absl::StatusOr<JobSpec> spec = ParseDeepSpeedConfig(ds, 2);
  ASSERT_THAT(spec, IsOk());
  // DeepSpeed's batch rule with the launch's world size: 16 = micro * 2 * 2.
  EXPECT_EQ(spec->train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(spec->data_parallel_size, 2);
  EXPECT_EQ(spec->job.world_size, 2);
  EXPECT_EQ(spec->job.train_steps, 0);
  EXPECT_EQ(spec->model.type, "module");
  EXPECT_EQ(spec->zero.stage, 2);
  EXPECT_TRUE(spec->bf16.enabled);
  EXPECT_EQ(spec->gradient_clipping, 1.0);
  EXPECT_EQ(spec->scheduler.type, "WarmupDecayLR");
  EXPECT_FALSE(spec->effective.contains("job"));
  EXPECT_FALSE(spec->effective.contains("model"));
  EXPECT_EQ(spec->effective["train_micro_batch_size_per_gpu"], 4);
  // The same world size rule fails as in a job file: 16 is not a multiple of 2 * 3.
  EXPECT_THAT(ParseDeepSpeedConfig(ds, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("train_batch_size")));
}

TEST(ParseDeepSpeedConfigTest, RefusesJobBlocksUnknownKeysAndBadWorlds) {
  for (const char* block : {"model", "data", "job"}) {
    json ds = {{"train_batch_size", 4}, {block, json::object()}};
    EXPECT_THAT(ParseDeepSpeedConfig(ds.dump(), 1),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(absl::StrCat(block, ": a job file's block"))))
        << block;
  }
  EXPECT_THAT(ParseDeepSpeedConfig(R"({"train_batch_size": 4, "zero_optimisation": {}})", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zero_optimisation")));
  EXPECT_THAT(ParseDeepSpeedConfig(R"({"train_batch_size": 4, "fp16": {"enabled": 1}})", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fp16.enabled")));
  EXPECT_THAT(ParseDeepSpeedConfig(R"({"train_batch_size": 4})", 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("world size")));
  EXPECT_THAT(ParseDeepSpeedConfig("{", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ds_config")));
  // Keys without effect are noted as for a job file.
  absl::StatusOr<JobSpec> noted = ParseDeepSpeedConfig(
      R"({"train_batch_size": 4, "zero_optimization": {"contiguous_gradients": false}})", 1);
  ASSERT_THAT(noted, IsOk());
  ASSERT_EQ(noted->no_effect_notes.size(), 1u);
  EXPECT_THAT(noted->no_effect_notes[0], HasSubstr("zero_optimization.contiguous_gradients"));
}

}  // namespace
}  // namespace dstrain::config
