#include "coordinator/state/state.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "coordinator/state/state_keys.h"
#include "google/protobuf/timestamp.pb.h"

namespace dstrain::coordinator {
namespace {

using state_keys::JobPrefix;
using state_keys::ValidateJobId;

absl::Status DataLoss(Table table, absl::string_view key, absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("table ", TableName(table), " key \"", absl::CHexEscape(key), "\": ", what));
}

template <typename Proto>
absl::StatusOr<Proto> ParseRecord(Table table, absl::string_view key, absl::string_view value) {
  Proto record;
  if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return DataLoss(table, key, absl::StrCat("value does not parse as ", record.GetTypeName()));
  }
  return record;
}

template <typename Proto>
absl::StatusOr<std::optional<Proto>> GetRecord(KvDb& db, Table table, absl::string_view key) {
  DT_ASSIGN_OR_RETURN(std::optional<std::string> value, db.Get(table, key));
  if (!value.has_value()) return std::optional<Proto>();
  DT_ASSIGN_OR_RETURN(Proto record, ParseRecord<Proto>(table, key, *value));
  return std::optional<Proto>(std::move(record));
}

// Called with each parsed record of a scan; returns whether to go on, or an error that ends the
// scan and becomes its result.
template <typename Proto>
using RecordFn = std::function<absl::StatusOr<bool>(absl::string_view key, Proto record)>;

enum class Direction { kForward, kReverse };

// KvDb::Scan / ReverseScan with the values parsed as `Proto`.
template <typename Proto>
absl::Status ScanRecords(KvDb& db, Table table, absl::string_view prefix, absl::string_view start,
                         Direction direction, const RecordFn<Proto>& fn) {
  absl::Status error;
  const KvDb::ScanFn visit = [&](absl::string_view key, absl::string_view value) {
    absl::StatusOr<Proto> record = ParseRecord<Proto>(table, key, value);
    if (!record.ok()) {
      error = record.status();
      return false;
    }
    absl::StatusOr<bool> more = fn(key, *std::move(record));
    if (!more.ok()) {
      error = more.status();
      return false;
    }
    return *more;
  };
  DT_RETURN_IF_ERROR(direction == Direction::kForward
                         ? db.Scan(table, prefix, start, visit)
                         : db.ReverseScan(table, prefix, start, visit));
  return error;
}

absl::Status RequireNonNegative(int64_t value, absl::string_view what) {
  if (value >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " must be >= 0, not ", value));
}

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  google::protobuf::Timestamp proto;
  const int64_t seconds = absl::ToUnixSeconds(time);  // rounds down, so nanos is in [0, 1e9)
  proto.set_seconds(seconds);
  proto.set_nanos(
      static_cast<int32_t>(absl::ToInt64Nanoseconds(time - absl::FromUnixSeconds(seconds))));
  return proto;
}

int64_t TotalBytes(const v1::Checkpoint& checkpoint) {
  int64_t total = 0;
  for (const v1::ShardInfo& shard : checkpoint.shards()) total += shard.bytes();
  return total;
}

std::string CheckpointName(absl::string_view job_id, absl::string_view tag) {
  return absl::StrCat("checkpoint \"", absl::CHexEscape(tag), "\" of job ", job_id);
}

}  // namespace

CoordinatorState::CoordinatorState(KvDb* db, CoordinatorStateOptions options)
    : db_(db),
      max_log_lines_per_job_(std::max<int64_t>(1, options.max_log_lines_per_job)),
      max_log_line_bytes_(std::max<int64_t>(64, options.max_log_line_bytes)) {
  DT_CHECK(db != nullptr);
}

// --- Jobs ---------------------------------------------------------------------------------------

absl::StatusOr<int64_t> CoordinatorState::PutJob(const v1::Job& job, const v1::JobEvent* event) {
  return PutJob(job, event, {});
}

absl::StatusOr<int64_t> CoordinatorState::PutJob(const v1::Job& job, const v1::JobEvent* event,
                                                 const std::vector<v1::Worker>& workers) {
  DT_RETURN_IF_ERROR(ValidateJobId(job.job_id()));
  WriteBatch batch;
  batch.Put(Table::kJobs, job.job_id(), job.SerializeAsString());
  for (const v1::Worker& worker : workers) {
    if (worker.worker_id().empty()) return absl::InvalidArgumentError("worker_id is empty");
    batch.Put(Table::kWorkers, worker.worker_id(), worker.SerializeAsString());
  }
  if (event == nullptr) {
    DT_RETURN_IF_ERROR(db_->Write(batch, Durability::kSync));
    return 0;
  }
  if (!event->job_id().empty() && event->job_id() != job.job_id()) {
    return absl::InvalidArgumentError(
        absl::StrCat("event of job ", event->job_id(), " stored with job ", job.job_id()));
  }
  absl::MutexLock lock(&mu_);  // the sequence read and the write that uses it
  DT_ASSIGN_OR_RETURN(const int64_t last, LastSequence(Table::kJobEvents, job.job_id()));
  v1::JobEvent stored = *event;
  stored.set_job_id(job.job_id());
  stored.set_sequence(last + 1);
  batch.Put(Table::kJobEvents, state_keys::EventKey(job.job_id(), stored.sequence()),
            stored.SerializeAsString());
  DT_RETURN_IF_ERROR(db_->Write(batch, Durability::kSync));
  return stored.sequence();
}

absl::StatusOr<std::optional<v1::Job>> CoordinatorState::GetJob(absl::string_view job_id) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  return GetRecord<v1::Job>(*db_, Table::kJobs, job_id);
}

absl::Status CoordinatorState::ListJobs(const JobFn& fn) {
  return ScanRecords<v1::Job>(
      *db_, Table::kJobs, "", "", Direction::kForward,
      [&](absl::string_view, v1::Job job) -> absl::StatusOr<bool> { return fn(job); });
}

absl::StatusOr<std::vector<v1::Job>> CoordinatorState::ListJobsPage(
    absl::string_view start_after_id, int limit, const JobFn& filter) {
  if (limit <= 0) return absl::InvalidArgumentError(absl::StrCat("limit ", limit, " must be > 0"));
  // The smallest key after start_after_id is start_after_id followed by a NUL byte.
  std::string start(start_after_id);
  if (!start.empty()) start.push_back('\0');
  std::vector<v1::Job> page;
  DT_RETURN_IF_ERROR(
      ScanRecords<v1::Job>(*db_, Table::kJobs, "", start, Direction::kForward,
                           [&](absl::string_view, v1::Job job) -> absl::StatusOr<bool> {
                             if (!filter || filter(job)) page.push_back(std::move(job));
                             return page.size() < static_cast<size_t>(limit);
                           }));
  return page;
}

absl::StatusOr<std::vector<v1::JobEvent>> CoordinatorState::ListEvents(absl::string_view job_id,
                                                                       int64_t from_sequence) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  std::vector<v1::JobEvent> events;
  DT_RETURN_IF_ERROR(ScanRecords<v1::JobEvent>(
      *db_, Table::kJobEvents, JobPrefix(job_id),
      state_keys::EventKey(job_id, std::max<int64_t>(0, from_sequence)), Direction::kForward,
      [&](absl::string_view, v1::JobEvent event) -> absl::StatusOr<bool> {
        events.push_back(std::move(event));
        return true;
      }));
  return events;
}

absl::StatusOr<int64_t> CoordinatorState::LastSequence(Table table, absl::string_view job_id) {
  const std::string prefix = JobPrefix(job_id);
  int64_t last = 0;
  absl::Status error;
  DT_RETURN_IF_ERROR(
      db_->ReverseScan(table, prefix, "", [&](absl::string_view key, absl::string_view) {
        std::optional<uint64_t> sequence = state_keys::DecodeSequence(key, prefix.size());
        if (!sequence.has_value() || *sequence > std::numeric_limits<int64_t>::max()) {
          error = DataLoss(table, key, "not a sequence key");
        } else {
          last = static_cast<int64_t>(*sequence);
        }
        return false;
      }));
  DT_RETURN_IF_ERROR(error);
  return last;
}

// --- Workers ------------------------------------------------------------------------------------

absl::Status CoordinatorState::PutWorker(const v1::Worker& worker) {
  if (worker.worker_id().empty()) return absl::InvalidArgumentError("worker_id is empty");
  WriteBatch batch;
  batch.Put(Table::kWorkers, worker.worker_id(), worker.SerializeAsString());
  return db_->Write(batch, Durability::kSync);
}

absl::StatusOr<std::optional<v1::Worker>> CoordinatorState::GetWorker(absl::string_view worker_id) {
  return GetRecord<v1::Worker>(*db_, Table::kWorkers, worker_id);
}

absl::StatusOr<std::vector<v1::Worker>> CoordinatorState::ListWorkers() {
  std::vector<v1::Worker> workers;
  DT_RETURN_IF_ERROR(
      ScanRecords<v1::Worker>(*db_, Table::kWorkers, "", "", Direction::kForward,
                              [&](absl::string_view, v1::Worker worker) -> absl::StatusOr<bool> {
                                workers.push_back(std::move(worker));
                                return true;
                              }));
  return workers;
}

// --- Checkpoint catalog -------------------------------------------------------------------------

absl::StatusOr<std::optional<v1::Checkpoint>> CoordinatorState::GetCheckpoint(
    absl::string_view job_id, absl::string_view tag) {
  return GetRecord<v1::Checkpoint>(*db_, Table::kCheckpoints,
                                   state_keys::CheckpointKey(job_id, tag));
}

absl::Status CoordinatorState::RegisterShard(absl::string_view job_id, absl::string_view tag,
                                             int64_t step, const v1::ShardInfo& shard) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  if (tag.empty()) return absl::InvalidArgumentError("checkpoint tag is empty");
  DT_RETURN_IF_ERROR(RequireNonNegative(step, "checkpoint step"));
  DT_RETURN_IF_ERROR(RequireNonNegative(shard.rank(), "shard rank"));

  absl::MutexLock lock(&mu_);  // ranks register concurrently: no lost updates
  DT_ASSIGN_OR_RETURN(std::optional<v1::Checkpoint> checkpoint, GetCheckpoint(job_id, tag));
  if (!checkpoint.has_value()) {
    checkpoint.emplace();
    checkpoint->set_job_id(std::string(job_id));
    checkpoint->set_tag(std::string(tag));
    checkpoint->set_step(step);
    checkpoint->set_state(v1::CHECKPOINT_STATE_PENDING);
  } else if (checkpoint->state() == v1::CHECKPOINT_STATE_COMMITTED) {
    return absl::FailedPreconditionError(
        absl::StrCat(CheckpointName(job_id, tag), " is already COMMITTED"));
  } else if (checkpoint->step() != step) {
    return absl::FailedPreconditionError(absl::StrCat(
        CheckpointName(job_id, tag), " was created at step ", checkpoint->step(), ", not ", step));
  }

  auto* shards = checkpoint->mutable_shards();
  auto same_rank = std::find_if(shards->begin(), shards->end(),
                                [&](const v1::ShardInfo& s) { return s.rank() == shard.rank(); });
  if (same_rank != shards->end()) {
    *same_rank = shard;
  } else {
    *shards->Add() = shard;
    std::sort(shards->begin(), shards->end(),
              [](const v1::ShardInfo& a, const v1::ShardInfo& b) { return a.rank() < b.rank(); });
  }
  checkpoint->set_total_bytes(TotalBytes(*checkpoint));

  WriteBatch batch;
  batch.Put(Table::kCheckpoints, state_keys::CheckpointKey(job_id, tag),
            checkpoint->SerializeAsString());
  return db_->Write(batch, Durability::kSync);
}

absl::StatusOr<v1::Checkpoint> CoordinatorState::CommitCheckpoint(absl::string_view job_id,
                                                                  absl::string_view tag,
                                                                  int64_t step,
                                                                  absl::string_view path,
                                                                  absl::Time commit_time) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  absl::MutexLock lock(&mu_);
  DT_ASSIGN_OR_RETURN(std::optional<v1::Checkpoint> checkpoint, GetCheckpoint(job_id, tag));
  if (!checkpoint.has_value()) {
    return absl::NotFoundError(
        absl::StrCat(CheckpointName(job_id, tag), " has no registered shard"));
  }
  if (checkpoint->step() != step) {
    return absl::FailedPreconditionError(absl::StrCat(CheckpointName(job_id, tag), " is at step ",
                                                      checkpoint->step(), ", not ", step));
  }
  if (checkpoint->state() == v1::CHECKPOINT_STATE_COMMITTED) {
    if (checkpoint->path() == path) return *std::move(checkpoint);  // a retried commit
    return absl::FailedPreconditionError(
        absl::StrCat(CheckpointName(job_id, tag), " is already COMMITTED at ", checkpoint->path()));
  }
  checkpoint->set_state(v1::CHECKPOINT_STATE_COMMITTED);
  checkpoint->set_path(std::string(path));
  *checkpoint->mutable_commit_time() = ToTimestamp(commit_time);
  checkpoint->set_total_bytes(TotalBytes(*checkpoint));

  WriteBatch batch;
  batch.Put(Table::kCheckpoints, state_keys::CheckpointKey(job_id, tag),
            checkpoint->SerializeAsString());
  DT_RETURN_IF_ERROR(db_->Write(batch, Durability::kSync));
  return *std::move(checkpoint);
}

absl::StatusOr<std::vector<v1::Checkpoint>> CoordinatorState::ListCheckpoints(
    absl::string_view job_id) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  std::vector<v1::Checkpoint> checkpoints;
  DT_RETURN_IF_ERROR(ScanRecords<v1::Checkpoint>(
      *db_, Table::kCheckpoints, JobPrefix(job_id), "", Direction::kForward,
      [&](absl::string_view, v1::Checkpoint checkpoint) -> absl::StatusOr<bool> {
        checkpoints.push_back(std::move(checkpoint));
        return true;
      }));
  // Keys are in tag order; a job keeps few checkpoints, so sorting here beats a second index.
  std::stable_sort(
      checkpoints.begin(), checkpoints.end(),
      [](const v1::Checkpoint& a, const v1::Checkpoint& b) { return a.step() < b.step(); });
  return checkpoints;
}

absl::StatusOr<std::optional<v1::Checkpoint>> CoordinatorState::LatestCommitted(
    absl::string_view job_id) {
  DT_ASSIGN_OR_RETURN(std::vector<v1::Checkpoint> checkpoints, ListCheckpoints(job_id));
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend(); ++it) {
    if (it->state() == v1::CHECKPOINT_STATE_COMMITTED) return std::optional(std::move(*it));
  }
  return std::optional<v1::Checkpoint>();
}

// --- Metrics ------------------------------------------------------------------------------------

absl::Status CoordinatorState::AppendMetrics(absl::string_view job_id,
                                             const v1::StepMetrics& metrics) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  DT_RETURN_IF_ERROR(RequireNonNegative(metrics.attempt(), "metrics attempt"));
  DT_RETURN_IF_ERROR(RequireNonNegative(metrics.step(), "metrics step"));
  WriteBatch batch;
  batch.Put(Table::kMetrics, state_keys::MetricsKey(job_id, metrics.attempt(), metrics.step()),
            metrics.SerializeAsString());
  return db_->Write(batch, Durability::kBuffered);
}

absl::StatusOr<std::vector<v1::StepMetrics>> CoordinatorState::ListMetrics(absl::string_view job_id,
                                                                           int64_t from_step,
                                                                           int limit_last) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  from_step = std::max<int64_t>(0, from_step);
  const std::string prefix = JobPrefix(job_id);
  std::vector<v1::StepMetrics> out;

  if (limit_last > 0) {
    // Newest first, so a "last N" query reads N records, not the job's whole history.
    DT_RETURN_IF_ERROR(ScanRecords<v1::StepMetrics>(
        *db_, Table::kMetrics, prefix, "", Direction::kReverse,
        [&](absl::string_view key, v1::StepMetrics metrics) -> absl::StatusOr<bool> {
          std::optional<state_keys::MetricsPosition> at =
              state_keys::DecodeMetricsKey(key, prefix.size());
          if (!at.has_value()) return DataLoss(Table::kMetrics, key, "not a metrics key");
          if (at->step >= static_cast<uint64_t>(from_step)) out.push_back(std::move(metrics));
          return out.size() < static_cast<size_t>(limit_last);
        }));
    std::reverse(out.begin(), out.end());
    return out;
  }

  return ListMetricsPage(job_id, from_step, MetricsCursor{}, 0);
}

absl::StatusOr<std::vector<v1::StepMetrics>> CoordinatorState::ListMetricsPage(
    absl::string_view job_id, int64_t from_step, MetricsCursor after, int limit) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  const uint64_t from = static_cast<uint64_t>(std::max<int64_t>(0, from_step));
  const std::string prefix = JobPrefix(job_id);
  std::vector<v1::StepMetrics> out;
  // Keys are attempt-major, so each attempt's steps below from_step sit between the previous
  // attempt's records and the wanted ones: scan from (attempt, from_step), and on reaching a
  // later attempt below from_step start again at (that attempt, from_step).
  uint32_t attempt = after.attempt;
  uint64_t step = after.attempt == 0 && after.step == 0 ? from : std::max(after.step + 1, from);
  bool jumped = true;
  while (jumped) {
    jumped = false;
    DT_RETURN_IF_ERROR(ScanRecords<v1::StepMetrics>(
        *db_, Table::kMetrics, prefix, state_keys::MetricsKey(job_id, attempt, step),
        Direction::kForward,
        [&](absl::string_view key, v1::StepMetrics metrics) -> absl::StatusOr<bool> {
          std::optional<state_keys::MetricsPosition> at =
              state_keys::DecodeMetricsKey(key, prefix.size());
          if (!at.has_value()) return DataLoss(Table::kMetrics, key, "not a metrics key");
          if (at->step < from) {
            attempt = at->attempt;
            step = from;
            jumped = true;
            return false;
          }
          out.push_back(std::move(metrics));
          return limit <= 0 || out.size() < static_cast<size_t>(limit);
        }));
  }
  return out;
}

absl::StatusOr<std::optional<v1::StepMetrics>> CoordinatorState::LatestMetrics(
    absl::string_view job_id) {
  DT_ASSIGN_OR_RETURN(std::vector<v1::StepMetrics> last, ListMetrics(job_id, 0, 1));
  if (last.empty()) return std::optional<v1::StepMetrics>();
  return std::optional(std::move(last.front()));
}

// --- Logs ---------------------------------------------------------------------------------------

absl::StatusOr<std::vector<v1::LogLine>> CoordinatorState::AppendLogs(
    absl::string_view job_id, std::vector<v1::LogLine> lines) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  if (lines.empty()) return lines;

  absl::MutexLock lock(&mu_);
  DT_ASSIGN_OR_RETURN(const int64_t last, LastSequence(Table::kLogs, job_id));
  const int64_t new_last = last + static_cast<int64_t>(lines.size());
  // The oldest sequence kept; lines of this call below it are never written at all.
  const int64_t keep_from = new_last - max_log_lines_per_job_ + 1;
  WriteBatch batch;
  for (size_t i = 0; i < lines.size(); ++i) {
    lines[i].set_sequence(last + 1 + static_cast<int64_t>(i));
    std::string& text = *lines[i].mutable_text();
    if (static_cast<int64_t>(text.size()) > max_log_line_bytes_) {
      // Cut at a character boundary: never inside a UTF-8 sequence (continuation bytes 10xxxxxx).
      size_t cut = static_cast<size_t>(max_log_line_bytes_);
      while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
      const size_t dropped = text.size() - cut;
      text.resize(cut);
      absl::StrAppend(&text, " [... ", dropped, " bytes cut]");
    }
    if (lines[i].sequence() >= keep_from) {
      batch.Put(Table::kLogs, state_keys::LogKey(job_id, lines[i].sequence()),
                lines[i].SerializeAsString());
    }
  }
  // Retention in the same batch as the append, so the bound holds at every point in time.
  if (keep_from > 1) {
    batch.DeleteRange(Table::kLogs, JobPrefix(job_id), state_keys::LogKey(job_id, keep_from));
  }
  DT_RETURN_IF_ERROR(db_->Write(batch, Durability::kBuffered));
  return lines;
}

absl::StatusOr<std::vector<v1::LogLine>> CoordinatorState::ListLogs(absl::string_view job_id,
                                                                    int64_t from_sequence,
                                                                    std::optional<int32_t> rank,
                                                                    int tail_lines, int limit) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  const size_t max_lines = limit > 0 ? static_cast<size_t>(limit) : SIZE_MAX;
  auto wanted = [&](const v1::LogLine& line) { return !rank || line.rank() == *rank; };
  const std::string prefix = JobPrefix(job_id);
  std::vector<v1::LogLine> out;

  if (from_sequence <= 0 && tail_lines > 0) {
    DT_RETURN_IF_ERROR(
        ScanRecords<v1::LogLine>(*db_, Table::kLogs, prefix, "", Direction::kReverse,
                                 [&](absl::string_view, v1::LogLine line) -> absl::StatusOr<bool> {
                                   if (wanted(line)) out.push_back(std::move(line));
                                   return out.size() < static_cast<size_t>(tail_lines);
                                 }));
    std::reverse(out.begin(), out.end());
    if (out.size() > max_lines) out.resize(max_lines);
    return out;
  }

  const std::string start = from_sequence > 0 ? state_keys::LogKey(job_id, from_sequence) : "";
  DT_RETURN_IF_ERROR(
      ScanRecords<v1::LogLine>(*db_, Table::kLogs, prefix, start, Direction::kForward,
                               [&](absl::string_view, v1::LogLine line) -> absl::StatusOr<bool> {
                                 if (wanted(line)) out.push_back(std::move(line));
                                 return out.size() < max_lines;
                               }));
  return out;
}

// --- Rendezvous key-value space -----------------------------------------------------------------

absl::StatusOr<std::optional<std::string>> CoordinatorState::KvGet(absl::string_view key) {
  return db_->Get(Table::kKv, key);
}

absl::Status CoordinatorState::KvPut(absl::string_view key, absl::string_view value) {
  WriteBatch batch;
  batch.Put(Table::kKv, key, value);
  return db_->Write(batch, Durability::kSync);
}

absl::Status CoordinatorState::KvDelete(absl::string_view key) {
  WriteBatch batch;
  batch.Delete(Table::kKv, key);
  return db_->Write(batch, Durability::kSync);
}

absl::StatusOr<std::string> CoordinatorState::Secret(absl::string_view name, size_t bytes) {
  DT_ASSIGN_OR_RETURN(std::optional<std::string> stored, db_->Get(Table::kSecrets, name));
  if (stored.has_value()) return *std::move(stored);
  std::string secret(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = getrandom(secret.data() + got, bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    got += static_cast<size_t>(n);
  }
  WriteBatch batch;
  batch.Put(Table::kSecrets, name, secret);
  DT_RETURN_IF_ERROR(db_->Write(batch, Durability::kSync));
  return secret;
}

absl::Status CoordinatorState::KvScanPrefix(absl::string_view prefix, const KvDb::ScanFn& fn) {
  return db_->Scan(Table::kKv, prefix, "", fn);
}

// --- Retention ----------------------------------------------------------------------------------

absl::Status CoordinatorState::DeleteCheckpoint(absl::string_view job_id, absl::string_view tag) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  WriteBatch batch;
  batch.Delete(Table::kCheckpoints, state_keys::CheckpointKey(job_id, tag));
  return db_->Write(batch, Durability::kSync);
}

absl::Status CoordinatorState::DeleteJob(absl::string_view job_id) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  const std::string begin = JobPrefix(job_id);
  const std::string end = PrefixEnd(begin);
  WriteBatch batch;
  batch.Delete(Table::kJobs, job_id);
  for (Table table : {Table::kJobEvents, Table::kCheckpoints, Table::kMetrics, Table::kLogs}) {
    batch.DeleteRange(table, begin, end);
  }
  absl::MutexLock lock(&mu_);  // not between a sequence read and its write
  return db_->Write(batch, Durability::kSync);
}

absl::Status CoordinatorState::DeleteJobData(absl::string_view job_id) {
  DT_RETURN_IF_ERROR(ValidateJobId(job_id));
  const std::string begin = JobPrefix(job_id);
  const std::string end = PrefixEnd(begin);
  WriteBatch batch;
  for (Table table : {Table::kJobEvents, Table::kCheckpoints, Table::kMetrics, Table::kLogs}) {
    batch.DeleteRange(table, begin, end);
  }
  absl::MutexLock lock(&mu_);  // not between a sequence read and its write
  return db_->Write(batch, Durability::kSync);
}

}  // namespace dstrain::coordinator
