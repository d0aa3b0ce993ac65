#include "worker/data/prepare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/status/status_macros.h"
#include "worker/data/byte_tokenizer.h"
#include "worker/data/token_shard.h"

namespace dstrain::data {
namespace {

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// mkdir -p.
absl::Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("output directory is empty");
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrCat("create directory ", prefix));
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", dir));
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("output path ", dir, " is not a directory"));
  }
  return absl::OkStatus();
}

std::string ShardName(absl::string_view split, uint64_t index) {
  return absl::StrFormat("%s_%06d.bin", split, index);
}

// The shard names (not paths) this run will write for a split of `tokens` tokens.
std::vector<std::string> PlanShards(absl::string_view split, uint64_t tokens,
                                    uint64_t shard_tokens) {
  std::vector<std::string> names;
  const uint64_t count = (tokens + shard_tokens - 1) / shard_tokens;
  for (uint64_t i = 0; i < count; ++i) names.push_back(ShardName(split, i));
  return names;
}

// FailedPrecondition when `dir` holds a train_*.bin or val_*.bin this run will not overwrite.
// readdir rather than glob(3): `dir` itself may contain glob metacharacters.
absl::Status CheckNoStaleShards(const std::string& dir, const std::set<std::string>& planned) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("open directory ", dir));
  std::vector<std::string> stale;
  while (const struct dirent* e = ::readdir(d)) {
    const absl::string_view name = e->d_name;
    const bool shard_like = (absl::StartsWith(name, "train_") || absl::StartsWith(name, "val_")) &&
                            absl::EndsWith(name, ".bin");
    if (shard_like && planned.count(std::string(name)) == 0) stale.emplace_back(name);
  }
  ::closedir(d);
  if (stale.empty()) return absl::OkStatus();
  std::sort(stale.begin(), stale.end());
  return absl::FailedPreconditionError(absl::StrCat(
      "output directory ", dir, " holds ", stale.size(), " shard(s) this run would not overwrite (",
      stale.front(), stale.size() > 1 ? ", ..." : "",
      "), left by an earlier run; a training glob would pick them up. Remove them or choose "
      "another directory"));
}

// Reads exactly `bytes` bytes into `buf`.
absl::Status ReadExactly(int fd, const std::string& path, size_t bytes, std::string& buf) {
  buf.resize(bytes);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::read(fd, buf.data() + done, bytes - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("read ", path));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path, " shrank while being read"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Streams the next `tokens` bytes of `fd` into shards named by `names` under `out_dir`.
absl::Status WriteSplit(int fd, const std::string& text_path, uint64_t tokens,
                        uint64_t shard_tokens, const std::string& out_dir,
                        const std::vector<std::string>& names, std::vector<std::string>& files) {
  std::string buf;
  for (const std::string& name : names) {
    const uint64_t n = std::min(tokens, shard_tokens);
    DT_RETURN_IF_ERROR(ReadExactly(fd, text_path, n, buf));
    const std::string path = absl::StrCat(out_dir, "/", name);
    DT_RETURN_IF_ERROR(WriteTokenShard(path, ByteTokenizer::Encode(buf)));
    files.push_back(path);
    tokens -= n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PrepareSummary> PrepareText(const std::string& text_path, const std::string& out_dir,
                                           const PrepareOptions& options) {
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("val_fraction must be in [0, 1), got ", options.val_fraction));
  }
  if (options.shard_tokens < 1 || options.shard_tokens > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("shard_tokens must be in [1, ",
                                                   std::numeric_limits<int32_t>::max(), "], got ",
                                                   options.shard_tokens));
  }
  const uint64_t shard_tokens = static_cast<uint64_t>(options.shard_tokens);

  const int fd = ::open(text_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open text ", text_path));
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", text_path));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("text ", text_path, " is not a regular file"));
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);  // A hint; ignoring failure is harmless.

  PrepareSummary summary;
  summary.text_bytes = static_cast<uint64_t>(st.st_size);
  // The same arithmetic as nanoGPT's int(n * 0.9), so the cut lands on the same byte.
  summary.train_tokens =
      static_cast<uint64_t>(static_cast<double>(summary.text_bytes) * (1.0 - options.val_fraction));
  summary.val_tokens = summary.text_bytes - summary.train_tokens;
  if (summary.train_tokens == 0 || (options.val_fraction > 0 && summary.val_tokens == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text ", text_path, " has ", summary.text_bytes,
        " bytes, too few to give both the training and the validation split (val_fraction ",
        options.val_fraction, ") at least one token"));
  }

  const std::vector<std::string> train_names =
      PlanShards("train", summary.train_tokens, shard_tokens);
  const std::vector<std::string> val_names = PlanShards("val", summary.val_tokens, shard_tokens);
  DT_RETURN_IF_ERROR(MakeDirs(out_dir));
  std::set<std::string> planned(train_names.begin(), train_names.end());
  planned.insert(val_names.begin(), val_names.end());
  DT_RETURN_IF_ERROR(CheckNoStaleShards(out_dir, planned));

  DT_RETURN_IF_ERROR(WriteSplit(fd, text_path, summary.train_tokens, shard_tokens, out_dir,
                                train_names, summary.train_files));
  DT_RETURN_IF_ERROR(WriteSplit(fd, text_path, summary.val_tokens, shard_tokens, out_dir, val_names,
                                summary.val_files));
  return summary;
}

}  // namespace dstrain::data
