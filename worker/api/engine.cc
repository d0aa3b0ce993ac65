#include "worker/api/engine.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"
#include "worker/api/module_model.h"
#include "worker/device/rank_device.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/env/env.h"
#include "worker/trainer/rendezvous.h"

namespace dstrain {
namespace {

// An integer option: the option when set (>= 0), else the environment variable when set, else
// `fallback`. kInvalidArgument naming the variable for a value that is not a number >= 0.
absl::StatusOr<int> IntSetting(int option, const char* variable, int fallback) {
  if (option >= 0) return option;
  const char* value = std::getenv(variable);
  if (value == nullptr || *value == '\0') return fallback;
  int parsed = 0;
  if (!absl::SimpleAtoi(value, &parsed) || parsed < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("$", variable, ": expected an integer >= 0, got \"", value, "\""));
  }
  return parsed;
}

std::string StringSetting(const std::string& option, const char* variable,
                          const std::string& fallback) {
  if (!option.empty()) return option;
  const char* value = std::getenv(variable);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

int AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? std::max(1, CPU_COUNT(&set)) : 1;
}

}  // namespace

// What the engine runs on, kept alive as long as it: the device, the store connection and the
// data-parallel group.
struct Engine::Resources {
  std::unique_ptr<device::RankDevice> device;
  trainer::ConnectedStore store;
  std::unique_ptr<comm::Communicator> dp;
};

Engine::~Engine() {
  engine_.reset();  // before the group and the device it uses
  resources_.reset();
}

absl::StatusOr<absl::Span<const float>> GatheredParams::Get(absl::string_view name) const {
  const model::ParamSpec* p = layout != nullptr ? layout->Find(name) : nullptr;
  if (p == nullptr) return absl::NotFoundError(absl::StrCat("no parameter named ", name));
  return absl::MakeConstSpan(flat).subspan(p->offset, p->numel);
}

absl::StatusOr<std::unique_ptr<Engine>> Initialize(std::unique_ptr<Module> module,
                                                   absl::string_view ds_config,
                                                   const InitializeOptions& options) {
  if (module == nullptr) return absl::InvalidArgumentError("Initialize: no module");
  DT_ASSIGN_OR_RETURN(const int world, IntSetting(options.world_size, "WORLD_SIZE", 1));
  DT_ASSIGN_OR_RETURN(const int rank, IntSetting(options.rank, "RANK", 0));
  DT_ASSIGN_OR_RETURN(const int local_rank, IntSetting(options.local_rank, "LOCAL_RANK", rank));
  DT_ASSIGN_OR_RETURN(const int threads, IntSetting(options.threads, "DSTRAIN_THREADS", 0));
  if (world < 1 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " of world size ", world, ": needs 0 <= rank < world size"));
  }
  DT_ASSIGN_OR_RETURN(config::JobSpec spec, config::ParseDeepSpeedConfig(std::string(ds_config),
                                                                         world, options.base_dir));
  spec.model.init_seed = options.seed;

  auto engine = std::unique_ptr<Engine>(new Engine());
  engine->rank_ = rank;
  engine->world_ = world;
  engine->comm_timeout_ = options.comm_timeout;
  engine->resources_ = std::make_unique<Engine::Resources>();
  Engine::Resources& res = *engine->resources_;

  omp_set_num_threads(threads > 0 ? threads : AllowedCpus());
  device::RankDeviceOptions device_options;
  const std::string device = StringSetting(options.device, "DSTRAIN_DEVICE", "auto");
  if (device == "cpu") {
    device_options.choice = device::DeviceChoice::kCpu;
  } else if (device == "cuda") {
    device_options.choice = device::DeviceChoice::kCuda;
  } else if (device != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("device: expected \"cpu\", \"cuda\" or \"auto\", got \"", device, "\""));
  }
  device_options.local_rank = local_rank;
  device_options.bind_address =
      StringSetting(options.bind_address, "DSTRAIN_BIND_ADDRESS", "127.0.0.1");
  absl::StatusOr<std::unique_ptr<device::RankDevice>> opened =
      device::RankDevice::Open(device_options);
  if (!opened.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", device, "\": ", opened.status().message()));
  }
  res.device = *std::move(opened);

  if (world > 1) {
    const std::string store = StringSetting(options.store, "DSTRAIN_STORE", "");
    if (store.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "world size ", world,
          " needs a rendezvous store: run under `dstrain launch --nproc N -- PROGRAM` or set "
          "InitializeOptions::store / $DSTRAIN_STORE to HOST:PORT"));
    }
    DT_ASSIGN_OR_RETURN(const trainer::Rendezvous rendezvous, trainer::Rendezvous::Parse(store));
    DT_ASSIGN_OR_RETURN(res.store, trainer::ConnectStore(rendezvous, options.comm_timeout));
    DT_ASSIGN_OR_RETURN(
        res.dp, res.device->JoinGroup(res.store.get(), rank, world, "dp", options.comm_timeout));
  }

  DT_ASSIGN_OR_RETURN(std::unique_ptr<api::ModuleModel> model,
                      api::ModuleModel::Create(std::move(module), &res.device->ops()));
  zero::OffloadContext offload;
  // An offloaded optimizer's files: <nvme_path>/dstrain-<job>/rank<rank>, removed at the end.
  offload.job = absl::StrCat("lib", getpid());
  offload.rank = rank;
  offload.log = [](const std::string& line) { absl::FPrintF(stderr, "%s\n", line); };
  DT_ASSIGN_OR_RETURN(
      engine->engine_,
      engine::Engine::Initialize(std::move(model), spec, res.dp.get(),
                                 comm::CommOptions{options.comm_timeout}, std::move(offload)));
  return engine;
}

absl::StatusOr<float> Engine::Forward(const Batch& batch) { return engine_->Forward(batch); }

absl::Status Engine::Backward() { return engine_->Backward(); }

absl::StatusOr<std::optional<StepStats>> Engine::Step() { return engine_->Step(); }

absl::StatusOr<float> Engine::Evaluate(const Batch& batch) { return engine_->EvalLoss(batch); }

Module& Engine::module() { return static_cast<api::ModuleModel&>(engine_->model()).module(); }

absl::Status Engine::SaveCheckpoint(const std::string& dir, const std::string& tag,
                                    absl::string_view client_state) {
  engine::CheckpointOptions o;
  o.env = env::PosixEnv::Default();
  o.root = dir;
  o.comm = comm::CommOptions{comm_timeout_};
  const std::string name = tag.empty() ? absl::StrCat("global_step", engine_->global_steps()) : tag;
  return engine::SaveCheckpoint(*engine_, resources_->dp.get(), o, name, client_state);
}

absl::StatusOr<std::string> Engine::LoadCheckpoint(const std::string& dir, const std::string& tag) {
  engine::CheckpointOptions o;
  o.env = env::PosixEnv::Default();
  o.root = dir;
  o.comm = comm::CommOptions{comm_timeout_};
  return engine::LoadCheckpoint(*engine_, resources_->dp.get(), o, tag);
}

absl::StatusOr<GatheredParams> Engine::GatherParams() {
  GatheredParams out;
  DT_ASSIGN_OR_RETURN(out.flat, engine_->GatherParams(/*keep=*/true));
  out.layout = &engine_->model().layout();
  return out;
}

}  // namespace dstrain
