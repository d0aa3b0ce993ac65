#include "worker/data/token_shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dstrain::data {
namespace {

// Tokens and header are served straight from the mapping, which is only right on a little-endian
// host; every machine this project targets (x86-64, aarch64 Linux) is one.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token shards are little-endian");

constexpr int32_t kLlama3ShardMagic = 20240801;

// Closes a descriptor on scope exit unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("write ", path));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Makes a rename in `dir` durable: without this a crash can lose the new directory entry even
// though the file's data was fsynced.
absl::Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open directory ", dir));
  FdCloser closer(fd);
  if (::fsync(fd) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("fsync directory ", dir));
  return absl::OkStatus();
}

absl::Status WriteShardToFd(int fd, const std::string& tmp_path,
                            absl::Span<const uint16_t> tokens) {
  int32_t header[kTokenShardHeaderInts] = {};
  header[0] = kTokenShardMagic;
  header[1] = kTokenShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  // mkstemp creates 0600; shards are shared data, readable by the other users of the machine.
  if (::fchmod(fd, 0644) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", tmp_path));
  if (absl::Status s = WriteAll(fd, header, sizeof(header), tmp_path); !s.ok()) return s;
  if (absl::Status s = WriteAll(fd, tokens.data(), tokens.size() * sizeof(uint16_t), tmp_path);
      !s.ok()) {
    return s;
  }
  if (::fsync(fd) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("fsync ", tmp_path));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenShard> TokenShard::Open(const std::string& path, AccessHint hint) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open token shard ", path));
  FdCloser closer(fd);  // The mapping outlives the descriptor; nothing else needs it.

  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("token shard ", path, " is not a regular file"));
  }
  const size_t file_bytes = static_cast<size_t>(st.st_size);
  if (file_bytes < kTokenShardHeaderBytes) {
    return absl::DataLossError(absl::StrCat("token shard ", path, " is truncated: ", file_bytes,
                                            " bytes, shorter than the ", kTokenShardHeaderBytes,
                                            "-byte header"));
  }

  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) return absl::ErrnoToStatus(errno, absl::StrCat("mmap ", path));
  // From here on the mapping belongs to `shard`, whose destructor unmaps it on every error path.
  TokenShard shard(path, map, file_bytes, nullptr, 0);

  int32_t header[3];
  std::memcpy(header, map, sizeof(header));
  if (header[0] != kTokenShardMagic) {
    std::string hint_text;
    if (header[0] == kLlama3ShardMagic) {
      hint_text = " (that is a Llama-3 shard with uint32 tokens, which is not supported)";
    }
    return absl::InvalidArgumentError(absl::StrCat("token shard ", path, " has bad magic ",
                                                   header[0], ", expected ", kTokenShardMagic,
                                                   hint_text));
  }
  if (header[1] != kTokenShardVersion) {
    return absl::InvalidArgumentError(absl::StrCat("token shard ", path,
                                                   " has unsupported version ", header[1],
                                                   ", expected ", kTokenShardVersion));
  }
  if (header[2] < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token shard ", path, " has a negative token count ", header[2]));
  }
  const size_t ntok = static_cast<size_t>(header[2]);
  const size_t expected_bytes = kTokenShardHeaderBytes + ntok * sizeof(uint16_t);
  if (file_bytes < expected_bytes) {
    return absl::DataLossError(absl::StrCat("token shard ", path, " is truncated: header says ",
                                            ntok, " tokens (", expected_bytes,
                                            " bytes) but the file has ", file_bytes, " bytes"));
  }
  if (file_bytes > expected_bytes) {
    return absl::DataLossError(absl::StrCat("token shard ", path, " size mismatch: header says ",
                                            ntok, " tokens (", expected_bytes,
                                            " bytes) but the file has ", file_bytes, " bytes"));
  }

  // Advice only: a kernel that refuses it reads the file the same, just with other prefetching.
  ::madvise(map, file_bytes, hint == AccessHint::kSequential ? MADV_SEQUENTIAL : MADV_WILLNEED);

  shard.tokens_ =
      reinterpret_cast<const uint16_t*>(static_cast<const char*>(map) + kTokenShardHeaderBytes);
  shard.num_tokens_ = ntok;
  return std::move(shard);
}

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      tokens_(std::exchange(other.tokens_, nullptr)),
      num_tokens_(std::exchange(other.num_tokens_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    num_tokens_ = std::exchange(other.num_tokens_, 0);
  }
  return *this;
}

TokenShard::~TokenShard() { Unmap(); }

void TokenShard::Unmap() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
  num_tokens_ = 0;
}

absl::Status WriteTokenShard(const std::string& path, absl::Span<const uint16_t> tokens) {
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("token shard ", path, ": ", tokens.size(),
                                                   " tokens exceed the format's limit of ",
                                                   std::numeric_limits<int32_t>::max()));
  }
  // The temporary lives beside the target so the rename stays within one file system (atomic).
  std::string tmp_path = absl::StrCat(path, ".tmp.XXXXXX");
  const int fd = ::mkstemp(tmp_path.data());
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("create temporary file for ", path));
  }
  absl::Status status = WriteShardToFd(fd, tmp_path, tokens);
  if (::close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("close ", tmp_path));
  }
  if (status.ok() && ::rename(tmp_path.c_str(), path.c_str()) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("rename ", tmp_path, " to ", path));
  }
  if (!status.ok()) {
    ::unlink(tmp_path.c_str());
    return status;
  }
  return SyncDir(DirName(path));
}

absl::StatusOr<std::vector<std::string>> ExpandShardPattern(const std::string& pattern) {
  glob_t g;
  std::memset(&g, 0, sizeof(g));
  // No GLOB_ERR: a directory that does not exist should read as "nothing matches", the message a
  // user can act on, not as an I/O abort.
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> paths;
  if (rc == 0) {
    paths.reserve(g.gl_pathc);
    for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
  }
  ::globfree(&g);
  switch (rc) {
    case 0:
      break;
    case GLOB_NOMATCH:
      return absl::NotFoundError(absl::StrCat("no files match the shard pattern '", pattern, "'"));
    case GLOB_NOSPACE:
      return absl::ResourceExhaustedError(
          absl::StrCat("out of memory expanding the shard pattern '", pattern, "'"));
    default:
      return absl::UnavailableError(
          absl::StrCat("read error expanding the shard pattern '", pattern, "'"));
  }
  // glob(3) sorts with strcoll, i.e. by the locale; ranks must agree on the order regardless.
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace dstrain::data
