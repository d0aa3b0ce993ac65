#include "coordinator/auth/caller.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dstrain::coordinator {
namespace {

constexpr struct {
  Role role;
  const char* name;
} kRoles[] = {{kViewer, "viewer"}, {kSubmitter, "submitter"}, {kAdmin, "admin"}};

}  // namespace

absl::StatusOr<uint32_t> ParseRoles(absl::string_view text) {
  uint32_t roles = 0;
  for (absl::string_view name : absl::StrSplit(text, ',')) {
    bool known = false;
    for (const auto& r : kRoles) {
      if (name == r.name) {
        roles |= r.role;
        known = true;
      }
    }
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown role '", name, "' (viewer, submitter, admin)"));
    }
  }
  return roles;
}

std::string RoleNames(uint32_t roles) {
  std::vector<const char*> names;
  for (const auto& r : kRoles) {
    if (roles & r.role) names.push_back(r.name);
  }
  return absl::StrJoin(names, ",");
}

absl::Status Caller::MaySee(absl::string_view job_id, absl::string_view owner) const {
  if (SeesAllJobs() || (!principal.empty() && owner == principal)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("job ", job_id, " belongs to another principal; ",
                                                  Describe(), " sees only its own jobs"));
}

absl::Status Caller::MayControl(absl::string_view job_id, absl::string_view owner) const {
  if (ControlsAllJobs()) return absl::OkStatus();
  if ((roles & kSubmitter) != 0 && !principal.empty() && owner == principal) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat("job ", job_id, ": only its owner (a submitter) or an admin may change it, not ",
                   Describe()));
}

absl::Status Caller::IsWorker(absl::string_view worker_id) const {
  if (trusted || worker == worker_id) return absl::OkStatus();
  if (worker.empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "worker_id ", worker_id, ": the call carries no worker certificate (CN worker:<id>)"));
  }
  return absl::PermissionDeniedError(
      absl::StrCat("worker_id ", worker_id, ": the client certificate is worker ", worker));
}

std::string Caller::Describe() const {
  if (!principal.empty()) return principal;
  if (!worker.empty()) return absl::StrCat("worker ", worker);
  return trusted ? "" : "an anonymous caller";
}

}  // namespace dstrain::coordinator
