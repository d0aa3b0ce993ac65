// Every bound the dstrain service puts on what callers send it and on what it keeps, in one table
// (docs/security.md, "Limits", which limits_test checks against this file). Code that enforces a
// limit names it from here; going over a size or rate limit is RESOURCE_EXHAUSTED with a message
// naming the limit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dstrain::limits {

// A submitted spec_json (SubmitJob).
inline constexpr size_t kMaxSpecBytes = size_t{1} << 20;
// One trainer output line; a longer one is cut at a character boundary and marked (the agent).
inline constexpr size_t kMaxLogLineBytes = 16 * 1024;
// Lines a job's ranks together add to its log per second, and the burst (ReportStatus): lines
// beyond are dropped, and one line says how many.
inline constexpr double kLogLinesPerSecond = 1000;
inline constexpr double kLogBurstLines = 10000;
// A job's newest log lines the coordinator keeps.
inline constexpr int64_t kLogLinesKeptPerJob = 100000;
// A rendezvous key and value (StoreService).
inline constexpr size_t kMaxStoreKeyBytes = 4096;
inline constexpr size_t kMaxStoreValueBytes = size_t{1} << 20;
// Any message the coordinator receives (gRPC's receive limit, set explicitly on the server).
inline constexpr size_t kMaxReceiveBytes = size_t{4} << 20;
// A store Wait, at most (also bounded by the call's deadline).
inline constexpr int kMaxStoreWaitSeconds = 600;
// ListJobs' page: without a page size, and at most.
inline constexpr int kDefaultListPage = 100;
inline constexpr int kMaxListPage = 1000;
// GetJob's metrics_limit, at most.
inline constexpr int kMaxMetricsPerGetJob = 1000;
// Metrics WatchJob reads into memory at a time.
inline constexpr int kWatchMetricsPage = 500;
// Log lines per GetJobLogs message.
inline constexpr int kLogBatchLines = 500;
// A streaming call (WatchJob, GetJobLogs following, StreamAssignments), at most: it then ends
// (UNAVAILABLE; OK for StreamAssignments) and the client reconnects where it was.
inline constexpr int kMaxStreamSeconds = 3600;
// Jobs a principal creates per minute, and the burst (SubmitJob; the coordinator's
// --submissions-per-minute and --submission-burst).
inline constexpr double kSubmissionsPerMinute = 60;
inline constexpr double kSubmissionBurst = 100;
// The coordinator's --tokens file.
inline constexpr size_t kMaxTokenFileBytes = size_t{1} << 20;

// Whatever passes the size checks fits the receive limit, with room for the message's framing
// and the other fields: an oversized request is the service's RESOURCE_EXHAUSTED naming the limit,
// never gRPC's anonymous one.
static_assert(kMaxStoreKeyBytes + kMaxStoreValueBytes + 64 * 1024 <= kMaxReceiveBytes);
static_assert(kMaxSpecBytes + 64 * 1024 <= kMaxReceiveBytes);

}  // namespace dstrain::limits
