// Who is calling the coordinator, and what that lets them do (docs/security.md, "Who can do
// what"). The Authorizer decides at the door whether a call may reach its handler at all; the
// Coordinator then asks the Caller about the one job a call names (a submitter sees and cancels
// its own jobs, a viewer sees all, an admin does everything) and records the principal in the
// job's events.
//
//   if (absl::Status s = caller.MayControl(job.owner()); !s.ok()) return s;
//
// A coordinator started with --insecure authenticates no one: its callers are Caller::Trusted(),
// as are in-process calls (tests, the coordinator's own sweeps).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dstrain::coordinator {

// Roles a token grants; a principal may hold several.
enum Role : uint32_t {
  kViewer = 1,     // reads every job, worker and checkpoint catalog
  kSubmitter = 2,  // submits jobs; reads, cancels and deletes its own
  kAdmin = 4,      // everything, on every job
};

// "viewer,submitter" → kViewer | kSubmitter; INVALID_ARGUMENT naming an unknown role.
absl::StatusOr<uint32_t> ParseRoles(absl::string_view text);
std::string RoleNames(uint32_t roles);  // "viewer,submitter"

struct Caller {
  // Everything is allowed: an --insecure coordinator, or an in-process call.
  bool trusted = false;
  // The principal a bearer token names ("" for none), and its roles.
  std::string principal;
  uint32_t roles = 0;
  // The worker a verified client certificate names ("" for none).
  std::string worker;

  static Caller Trusted() {
    Caller caller;
    caller.trusted = true;
    return caller;
  }

  bool SeesAllJobs() const { return trusted || (roles & (kViewer | kAdmin)) != 0; }
  bool ControlsAllJobs() const { return trusted || (roles & kAdmin) != 0; }

  // PERMISSION_DENIED unless the caller may read / cancel or delete a job owned by `owner`.
  absl::Status MaySee(absl::string_view job_id, absl::string_view owner) const;
  absl::Status MayControl(absl::string_view job_id, absl::string_view owner) const;
  // PERMISSION_DENIED unless the caller is the worker `worker_id` (its certificate names it).
  absl::Status IsWorker(absl::string_view worker_id) const;

  // How events name the caller: "alice", "worker wa", or "" when no one was authenticated.
  std::string Describe() const;
};

}  // namespace dstrain::coordinator
