// The generated dstrain.v1 code: message round trips, enum defaults, buf STANDARD naming (buf is
// not available offline) and a real gRPC call over loopback through the generated stubs.
#include <cctype>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/checkpoint.grpc.pb.h"
#include "proto/checkpoint.pb.h"
#include "proto/common.pb.h"
#include "proto/job.grpc.pb.h"
#include "proto/job.pb.h"
#include "proto/store.grpc.pb.h"
#include "proto/store.pb.h"
#include "proto/worker.grpc.pb.h"
#include "proto/worker.pb.h"

namespace dstrain {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::DescriptorPool;
using ::google::protobuf::EnumDescriptor;
using ::google::protobuf::FileDescriptor;
using ::google::protobuf::util::MessageDifferencer;

v1::Job MakeJob() {
  v1::Job job;
  job.set_job_id("demo-1");
  job.set_name("demo");
  job.set_spec_json(R"({"job": {"name": "demo", "world_size": 2}})");
  job.set_world_size(2);
  job.set_priority(5);
  job.set_state(v1::JOB_STATE_RUNNING);
  job.set_state_reason("GangScheduled");
  job.set_state_message("2 ranks on 2 workers");
  job.mutable_create_time()->set_seconds(1700000000);
  job.mutable_start_time()->set_seconds(1700000010);
  job.set_attempt(2);
  job.set_restarts(1);
  job.set_max_restarts(3);
  job.set_train_steps(2000);
  job.set_current_step(201);
  for (int rank = 0; rank < 2; ++rank) {
    v1::RankAssignment* a = job.add_assignments();
    a->set_rank(rank);
    a->set_worker_id("w" + std::to_string(rank));
    a->set_slot(rank);
  }
  v1::StepMetrics* m = job.mutable_latest_metrics();
  m->set_step(201);
  m->set_loss(2.0625);
  m->set_lr(3e-4);
  m->set_grad_norm(0.75);
  m->set_loss_scale(65536);
  m->set_tokens_per_second(12345.5);
  m->set_step_seconds(0.125);
  m->set_skipped_steps(3);
  m->set_val_loss(0.0);  // Present although zero: proto3 `optional` keeps presence.
  (*m->mutable_memory_bytes())["params"] = 1 << 20;
  (*m->mutable_memory_bytes())["optimizer_state"] = int64_t{3} << 33;  // Above 2^32.
  m->set_comm_bytes(int64_t{1} << 40);
  m->mutable_time()->set_seconds(1700000100);
  m->mutable_time()->set_nanos(500);
  return job;
}

TEST(MessagesTest, JobRoundTrip) {
  const v1::Job job = MakeJob();
  std::string wire;
  ASSERT_TRUE(job.SerializeToString(&wire));
  v1::Job parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  EXPECT_TRUE(MessageDifferencer::Equals(job, parsed)) << parsed.DebugString();
  ASSERT_EQ(parsed.assignments_size(), 2);
  EXPECT_EQ(parsed.assignments(1).worker_id(), "w1");
  EXPECT_EQ(parsed.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(parsed.latest_metrics().memory_bytes().at("optimizer_state"), int64_t{3} << 33);
  EXPECT_TRUE(parsed.latest_metrics().has_val_loss());
  EXPECT_EQ(parsed.latest_metrics().comm_bytes(), int64_t{1} << 40);
  EXPECT_FALSE(parsed.has_end_time());

  v1::StepMetrics no_eval;
  no_eval.set_step(7);
  ASSERT_TRUE(parsed.mutable_latest_metrics()->ParseFromString(no_eval.SerializeAsString()));
  EXPECT_FALSE(parsed.latest_metrics().has_val_loss());
}

TEST(MessagesTest, WatchJobResponseCarriesOneUpdate) {
  v1::WatchJobResponse response;
  *response.mutable_job() = MakeJob();
  EXPECT_EQ(response.update_case(), v1::WatchJobResponse::UPDATE_NOT_SET);
  response.mutable_event()->set_sequence(4);
  response.mutable_metrics()->set_step(202);  // Replaces the event: a oneof holds one member.
  v1::WatchJobResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(response.SerializeAsString()));
  EXPECT_EQ(parsed.update_case(), v1::WatchJobResponse::kMetrics);
  EXPECT_EQ(parsed.metrics().step(), 202);
  EXPECT_EQ(parsed.job().assignments_size(), 2);
}

TEST(MessagesTest, EnumDefaultsAreUnspecified) {
  EXPECT_EQ(v1::Job().state(), v1::JOB_STATE_UNSPECIFIED);
  EXPECT_EQ(v1::JobEvent().from_state(), v1::JOB_STATE_UNSPECIFIED);
  EXPECT_EQ(v1::ReportStatusRequest().state(), v1::RANK_STATE_UNSPECIFIED);
  EXPECT_EQ(v1::RankStatus().state(), v1::RANK_STATE_UNSPECIFIED);
  EXPECT_EQ(v1::Assignment().kind(), v1::ASSIGNMENT_KIND_UNSPECIFIED);
  EXPECT_EQ(v1::Checkpoint().state(), v1::CHECKPOINT_STATE_UNSPECIFIED);
  EXPECT_EQ(v1::JOB_STATE_UNSPECIFIED, 0);
  EXPECT_EQ(v1::RANK_STATE_UNSPECIFIED, 0);
  EXPECT_EQ(v1::ASSIGNMENT_KIND_UNSPECIFIED, 0);
  EXPECT_EQ(v1::CHECKPOINT_STATE_UNSPECIFIED, 0);
  EXPECT_EQ(v1::JobState_Name(v1::JOB_STATE_RESTARTING), "JOB_STATE_RESTARTING");
  EXPECT_EQ(v1::Job().device(), v1::JOB_DEVICE_UNSPECIFIED);
  EXPECT_EQ(v1::Assignment().slot_kind(), v1::SLOT_KIND_UNSPECIFIED);
  EXPECT_EQ(v1::RankAssignment().slot_kind(), v1::SLOT_KIND_UNSPECIFIED);
}

// GPU slots on the wire: a worker's GPUs, the kind of a placed slot and the job's device survive
// a round trip, and a message written before they existed reads as "unspecified".
TEST(MessagesTest, GpuSlotsRoundTrip) {
  v1::RegisterWorkerRequest request;
  request.set_worker_id("gpu-box");
  request.set_cpu_slots(2);
  for (int i = 0; i < 2; ++i) {
    v1::GpuInfo* gpu = request.add_gpus();
    gpu->set_index(i);
    gpu->set_name("NVIDIA H200");
    gpu->set_memory_bytes(int64_t{150} << 30);  // Above 2^32.
    gpu->set_uuid("GPU-" + std::to_string(i));
  }
  v1::RegisterWorkerRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(request.SerializeAsString()));
  EXPECT_TRUE(MessageDifferencer::Equals(request, parsed)) << parsed.DebugString();
  EXPECT_EQ(parsed.gpus(1).memory_bytes(), int64_t{150} << 30);

  v1::Job job = MakeJob();
  job.set_device(v1::JOB_DEVICE_CUDA);
  job.set_queue_reason("needs 4 GPU slots; 2 registered (2 free)");
  job.mutable_assignments(0)->set_slot_kind(v1::SLOT_KIND_GPU);
  v1::Job parsed_job;
  ASSERT_TRUE(parsed_job.ParseFromString(job.SerializeAsString()));
  EXPECT_TRUE(MessageDifferencer::Equals(job, parsed_job)) << parsed_job.DebugString();

  v1::Assignment start;
  start.set_kind(v1::ASSIGNMENT_KIND_START);
  start.set_slot(1);
  start.set_slot_kind(v1::SLOT_KIND_GPU);
  v1::Assignment parsed_start;
  ASSERT_TRUE(parsed_start.ParseFromString(start.SerializeAsString()));
  EXPECT_EQ(parsed_start.slot_kind(), v1::SLOT_KIND_GPU);

  // What an older coordinator sends: no slot_kind, no device.
  start.clear_slot_kind();
  ASSERT_TRUE(parsed_start.ParseFromString(start.SerializeAsString()));
  EXPECT_EQ(parsed_start.slot_kind(), v1::SLOT_KIND_UNSPECIFIED);
  job.clear_device();
  ASSERT_TRUE(parsed_job.ParseFromString(job.SerializeAsString()));
  EXPECT_EQ(parsed_job.device(), v1::JOB_DEVICE_UNSPECIFIED);
}

// "JobState" -> "JOB_STATE".
std::string UpperSnake(const std::string& camel) {
  std::string out;
  for (size_t i = 0; i < camel.size(); ++i) {
    const char c = camel[i];
    if (i > 0 && std::isupper(static_cast<unsigned char>(c))) out += '_';
    out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

bool IsLowerSnake(const std::string& name) {
  if (name.empty() || !std::islower(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!std::islower(static_cast<unsigned char>(c)) &&
        !std::isdigit(static_cast<unsigned char>(c)) && c != '_') {
      return false;
    }
  }
  return name.find("__") == std::string::npos && name.back() != '_';
}

void CheckEnum(const EnumDescriptor& e) {
  const std::string prefix = UpperSnake(e.name()) + "_";
  ASSERT_GT(e.value_count(), 0) << e.full_name();
  EXPECT_EQ(e.value(0)->number(), 0) << e.full_name();
  EXPECT_EQ(e.value(0)->name(), prefix + "UNSPECIFIED") << e.full_name();
  for (int i = 0; i < e.value_count(); ++i) {
    EXPECT_EQ(e.value(i)->name().rfind(prefix, 0), 0u) << e.value(i)->full_name();
  }
}

void CheckMessage(const Descriptor& m) {
  EXPECT_TRUE(std::isupper(static_cast<unsigned char>(m.name()[0]))) << m.full_name();
  EXPECT_EQ(m.name().find('_'), std::string::npos) << m.full_name();
  for (int i = 0; i < m.field_count(); ++i) {
    EXPECT_TRUE(IsLowerSnake(m.field(i)->name())) << m.field(i)->full_name();
  }
  for (int i = 0; i < m.real_oneof_decl_count(); ++i) {
    EXPECT_TRUE(IsLowerSnake(m.oneof_decl(i)->name())) << m.oneof_decl(i)->full_name();
  }
  for (int i = 0; i < m.enum_type_count(); ++i) CheckEnum(*m.enum_type(i));
  for (int i = 0; i < m.nested_type_count(); ++i) {
    if (!m.nested_type(i)->options().map_entry()) CheckMessage(*m.nested_type(i));
  }
}

// The buf lint STANDARD rules that matter for this package, on the compiled descriptors.
TEST(NamingTest, FollowsBufStandard) {
  std::set<std::string> rpc_messages;
  for (const char* name : {"proto/checkpoint.proto", "proto/common.proto", "proto/job.proto",
                           "proto/store.proto", "proto/worker.proto"}) {
    SCOPED_TRACE(name);
    const FileDescriptor* file = DescriptorPool::generated_pool()->FindFileByName(name);
    ASSERT_NE(file, nullptr);
    EXPECT_EQ(file->package(), "dstrain.v1");
    EXPECT_EQ(file->syntax(), FileDescriptor::SYNTAX_PROTO3);
    for (int i = 0; i < file->enum_type_count(); ++i) CheckEnum(*file->enum_type(i));
    for (int i = 0; i < file->message_type_count(); ++i) CheckMessage(*file->message_type(i));
    for (int s = 0; s < file->service_count(); ++s) {
      const auto* service = file->service(s);
      EXPECT_EQ(service->name().substr(service->name().size() - 7), "Service");
      for (int i = 0; i < service->method_count(); ++i) {
        const auto* method = service->method(i);
        EXPECT_EQ(method->input_type()->name(), method->name() + "Request");
        EXPECT_EQ(method->output_type()->name(), method->name() + "Response");
        EXPECT_EQ(method->input_type()->file(), file) << method->full_name();
        EXPECT_EQ(method->output_type()->file(), file) << method->full_name();
        EXPECT_TRUE(rpc_messages.insert(method->input_type()->full_name()).second);
        EXPECT_TRUE(rpc_messages.insert(method->output_type()->full_name()).second);
      }
    }
  }
  EXPECT_EQ(rpc_messages.size(), 2u * (7 + 5 + 6 + 3));
}

// A trivial StoreService on gRPC's callback API (unary handlers finish through DefaultReactor()):
// Set and Get on a map. The other RPCs keep the generated default, UNIMPLEMENTED.
class MapStoreService final : public v1::StoreService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* context, const v1::SetRequest* request,
                                v1::SetResponse*) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (request->key().empty()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "key: empty"));
      return reactor;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      values_[request->key()] = request->value();
    }
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetRequest* request,
                                v1::GetResponse* response) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = values_.find(request->key());
      response->set_found(it != values_.end());
      if (it != values_.end()) response->set_value(it->second);
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> values_;  // Guarded by mu_.
};

class StoreServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::StoreService::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                          grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  // Every unary call carries a deadline, as in all of the project's clients (docs/wire-api.md,
  // "Conventions").
  static void SetDeadline(grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }

  MapStoreService service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::StoreService::Stub> stub_;
};

TEST_F(StoreServiceTest, SetThenGetOverLoopback) {
  const std::string nccl_id("\x00\x01\xff id", 7);  // Values are bytes, NULs included.
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::SetRequest request;
    request.set_key("jobs/demo-1/1/nccl_id");
    request.set_value(nccl_id);
    v1::SetResponse response;
    const grpc::Status status = stub_->Set(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::GetRequest request;
    request.set_key("jobs/demo-1/1/nccl_id");
    v1::GetResponse response;
    const grpc::Status status = stub_->Get(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.found());
    EXPECT_EQ(response.value(), nccl_id);
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::GetRequest request;
    request.set_key("jobs/demo-1/1/absent");
    v1::GetResponse response;
    const grpc::Status status = stub_->Get(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_FALSE(response.found());
    EXPECT_EQ(response.value(), "");
  }
}

TEST_F(StoreServiceTest, ErrorsCrossTheWire) {
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::SetResponse response;
    const grpc::Status status = stub_->Set(&context, v1::SetRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(), "key: empty");
  }
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::AddRequest request;
    request.set_key("counter");
    request.set_delta(1);
    v1::AddResponse response;
    EXPECT_EQ(stub_->Add(&context, request, &response).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
}

}  // namespace
}  // namespace dstrain
