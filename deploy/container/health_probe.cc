// dstrain-health-probe: one grpc.health.v1.Health/Check call, for Kubernetes exec probes.
//
//   dstrain-health-probe --addr HOST:PORT [--service NAME] [--timeout SECONDS]
//                        (--tls-ca PEM [--server-name NAME] | --insecure)
//
// Exit 0 when the service answers SERVING; 1 when it answers anything else (NOT_SERVING,
// SERVICE_UNKNOWN) or the call fails (refused, TLS handshake, deadline); 2 for a bad command
// line. One line on stdout (success) or stderr (failure) says what happened.
//
// Why not Kubernetes' own `grpc:` probe: the kubelet's gRPC prober speaks plaintext only (no TLS,
// KEP-2727), and both daemons serve gRPC health only on their TLS port (--listen) unless started
// with --insecure (docs/security.md, "Ports"). So a `grpc:` probe against a secured daemon always
// fails the handshake. This probe runs inside the container, speaks TLS with the daemon's CA (it
// presents no client certificate: health is open to anyone) and asks for the same service names
// (the worker agent's "readiness" and "liveness", worker/agent/health_server.h; the
// coordinator's "").
//
// The request and response are encoded by hand (HealthCheckRequest is one string field,
// HealthCheckResponse one enum field), so the probe needs no generated code and links only gRPC.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/flags/flags.h"
#include "common/tls/tls.h"

namespace {

constexpr char kUsage[] =
    "usage: dstrain-health-probe --addr HOST:PORT [--service NAME] [--timeout SECONDS]\n"
    "                            (--tls-ca PEM [--server-name NAME] | --insecure)\n";

// grpc.health.v1.HealthCheckResponse.ServingStatus.
const char* StatusName(uint64_t status) {
  switch (status) {
    case 0:
      return "UNKNOWN";
    case 1:
      return "SERVING";
    case 2:
      return "NOT_SERVING";
    case 3:
      return "SERVICE_UNKNOWN";
    default:
      return "unrecognised status";
  }
}

// HealthCheckRequest{service}: field 1, length-delimited (absent when empty).
std::string EncodeRequest(const std::string& service) {
  std::string out;
  if (service.empty()) return out;
  out.push_back(0x0a);
  for (uint64_t n = service.size();; n >>= 7) {
    if (n < 0x80) {
      out.push_back(static_cast<char>(n));
      break;
    }
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
  }
  out += service;
  return out;
}

bool ReadVarint(const std::string& in, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < in.size(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(in[(*pos)++]);
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// HealthCheckResponse.status (field 1, varint); 0 (UNKNOWN) when absent. False for bytes that
// are not a message of that shape.
bool DecodeStatus(const std::string& in, uint64_t* status) {
  *status = 0;
  size_t pos = 0;
  while (pos < in.size()) {
    uint64_t key = 0;
    if (!ReadVarint(in, &pos, &key)) return false;
    const uint64_t field = key >> 3;
    const uint64_t wire = key & 7;
    uint64_t value = 0;
    if (wire == 0) {
      if (!ReadVarint(in, &pos, &value)) return false;
      if (field == 1) *status = value;
    } else if (wire == 2) {
      if (!ReadVarint(in, &pos, &value) || value > in.size() - pos) return false;
      pos += value;
    } else {
      return false;  // HealthCheckResponse has no other wire types
    }
  }
  return true;
}

int Main(int argc, char** argv) {
  namespace flags = dstrain::flags;
  namespace tls = dstrain::tls;
  std::set<std::string> value_flags = {"addr", "service", "timeout", "server-name"};
  value_flags.insert(tls::ValueFlags().begin(), tls::ValueFlags().end());
  auto args = flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc), value_flags,
                               {tls::kInsecureFlag});
  if (!args.ok()) {
    absl::FPrintF(stderr, "dstrain-health-probe: %s\n%s", args.status().message(), kUsage);
    return 2;
  }
  if (!args->positional.empty() || args->Get("addr").empty()) {
    absl::FPrintF(stderr, "dstrain-health-probe: --addr HOST:PORT is required\n%s", kUsage);
    return 2;
  }
  if (!args->Has(tls::kInsecureFlag) && !args->Has("tls-ca")) {
    // The system's roots would never verify a cluster's own CA: say so rather than fail later.
    absl::FPrintF(stderr, "dstrain-health-probe: --tls-ca PEM or --insecure is required\n%s",
                  kUsage);
    return 2;
  }
  auto timeout = args->GetDouble("timeout", 5);
  if (!timeout.ok() || *timeout <= 0) {
    absl::FPrintF(stderr, "dstrain-health-probe: --timeout: a number of seconds > 0\n%s", kUsage);
    return 2;
  }
  auto config = tls::ConfigFromArgs(*args, tls::Role::kClient);
  if (!config.ok()) {
    absl::FPrintF(stderr, "dstrain-health-probe: %s\n", config.status().message());
    return 2;
  }
  auto credentials = tls::ChannelCredentials(*config);
  if (!credentials.ok()) {
    absl::FPrintF(stderr, "dstrain-health-probe: %s\n", credentials.status().message());
    return 2;
  }
  grpc::ChannelArguments channel_args;
  if (args->Has("server-name")) {
    // The name the daemon's certificate carries, when the probe dials another (localhost).
    channel_args.SetSslTargetNameOverride(args->Get("server-name"));
  }
  const std::string addr = args->Get("addr");
  const std::string service = args->Get("service");
  auto channel = grpc::CreateCustomChannel(addr, *credentials, channel_args);

  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(*timeout * 1000)));
  const std::string request_bytes = EncodeRequest(service);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::CompletionQueue queue;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!queue.Next(&tag, &ok) || !ok) {
    absl::FPrintF(stderr, "dstrain-health-probe: %s: the call did not complete\n", addr);
    return 1;
  }
  queue.Shutdown();
  const std::string what = absl::StrCat(addr, " service \"", service, "\"");
  if (!status.ok()) {
    absl::FPrintF(stderr, "dstrain-health-probe: %s: %s (code %d)\n", what, status.error_message(),
                  static_cast<int>(status.error_code()));
    return 1;
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  uint64_t serving = 0;
  if (!DecodeStatus(bytes, &serving)) {
    absl::FPrintF(stderr, "dstrain-health-probe: %s: the answer is not a HealthCheckResponse\n",
                  what);
    return 1;
  }
  if (serving != 1) {
    absl::FPrintF(stderr, "dstrain-health-probe: %s: %s\n", what, StatusName(serving));
    return 1;
  }
  absl::PrintF("dstrain-health-probe: %s: SERVING\n", what);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
