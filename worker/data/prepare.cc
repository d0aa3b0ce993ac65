#include "worker/data/prepare.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <optional>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/status/status_macros.h"
#include "worker/data/bpe_tokenizer.h"
#include "worker/data/byte_tokenizer.h"
#include "worker/data/token_shard.h"

namespace dstrain::data {
namespace {

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

constexpr char kTokenizerFile[] = "tokenizer.txt";

// Writes all of `data` to `fd`.
absl::Status WriteAll(int fd, const std::string& path, const char* data, size_t bytes) {
  while (bytes > 0) {
    const ssize_t n = ::write(fd, data, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("write ", path));
    }
    data += n;
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Reads exactly `bytes` bytes at `offset`.
absl::Status PreadExactly(int fd, const std::string& path, uint64_t offset, size_t bytes,
                          char* out) {
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd, out + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("read ", path));
    }
    if (n == 0) return absl::DataLossError(absl::StrCat(path, " shrank while being read"));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// The BPE tokenizer the options name, or nullopt for the byte-level one.
absl::StatusOr<std::optional<BpeTokenizer>> LoadTokenizer(const PrepareOptions& options) {
  const bool json = !options.tokenizer_json.empty();
  const bool vocab = !options.vocab_json.empty();
  const bool merges = !options.merges_txt.empty();
  if (json && (vocab || merges)) {
    return absl::InvalidArgumentError(
        "give either a tokenizer.json or a vocab.json and merges.txt, not both");
  }
  if (vocab != merges) {
    return absl::InvalidArgumentError("a GPT-2 tokenizer needs both vocab.json and merges.txt");
  }
  if (json) return BpeTokenizer::LoadTokenizerJson(options.tokenizer_json);
  if (vocab) return BpeTokenizer::LoadVocabMerges(options.vocab_json, options.merges_txt);
  return std::nullopt;
}

// Appends `ids` to the temporary id file and clears them.
absl::Status FlushIds(int fd, const std::string& path, std::vector<uint16_t>& ids,
                      uint64_t& count) {
  DT_RETURN_IF_ERROR(
      WriteAll(fd, path, reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(uint16_t)));
  count += ids.size();
  ids.clear();
  return absl::OkStatus();
}

// Encodes the next `bytes` bytes of `text_fd` as one text, streaming: chunks are cut at
// SafeSplit points, so the ids are those of encoding it whole. Appends them to `ids_fd`; returns
// how many.
absl::StatusOr<uint64_t> EncodeSplit(int text_fd, const std::string& text_path, uint64_t bytes,
                                     BpeTokenizer& tokenizer, const PrepareOptions& options,
                                     int ids_fd, const std::string& ids_path) {
  const size_t chunk_bytes = static_cast<size_t>(options.read_chunk_bytes);
  uint64_t count = 0;
  std::string buffer;
  std::string chunk;
  std::vector<uint16_t> ids;
  bool continuation = false;
  while (bytes > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes, chunk_bytes));
    DT_RETURN_IF_ERROR(ReadExactly(text_fd, text_path, n, chunk));
    // Points before the new bytes were searched already (all but the last code point).
    const size_t searched = buffer.size() >= 4 ? buffer.size() - 4 : 0;
    buffer += chunk;
    bytes -= n;
    if (bytes == 0) break;
    const size_t cut = tokenizer.SafeSplit(buffer, searched);
    if (cut == 0) {
      if (buffer.size() > static_cast<uint64_t>(options.max_unsplit_bytes)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "text ", text_path, " has a stretch of more than ", options.max_unsplit_bytes,
            " bytes with no point where BPE encoding may be cut (a space after an ASCII letter or "
            "digit, or a line break between non-space characters; none at all when the "
            "tokenizer's pre_tokenizer.use_regex is false): prepare would have to hold it whole"));
      }
      continue;  // no safe point yet: read on
    }
    tokenizer.EncodeAppend(absl::string_view(buffer).substr(0, cut), continuation, ids);
    continuation = true;
    buffer.erase(0, cut);
    DT_RETURN_IF_ERROR(FlushIds(ids_fd, ids_path, ids, count));
  }
  tokenizer.EncodeAppend(buffer, continuation, ids);
  DT_RETURN_IF_ERROR(FlushIds(ids_fd, ids_path, ids, count));
  return count;
}

// Writes `tokens` ids from `ids_fd` at token `first` into the shards `names` under `out_dir`.
absl::Status WriteSplitFromIds(int ids_fd, const std::string& ids_path, uint64_t first,
                               uint64_t tokens, uint64_t shard_tokens, const std::string& out_dir,
                               const std::vector<std::string>& names,
                               std::vector<std::string>& files) {
  std::vector<uint16_t> ids;
  for (const std::string& name : names) {
    const uint64_t n = std::min(tokens, shard_tokens);
    ids.resize(n);
    DT_RETURN_IF_ERROR(PreadExactly(ids_fd, ids_path, first * sizeof(uint16_t),
                                    n * sizeof(uint16_t), reinterpret_cast<char*>(ids.data())));
    const std::string path = absl::StrCat(out_dir, "/", name);
    DT_RETURN_IF_ERROR(WriteTokenShard(path, ids));
    files.push_back(path);
    first += n;
    tokens -= n;
  }
  return absl::OkStatus();
}

// An unlinked temporary file in `dir`: gone when closed, and never seen by a shard glob.
absl::StatusOr<int> AnonymousFile(const std::string& dir, std::string& path) {
  path = absl::StrCat(dir, "/.prepare-ids-XXXXXX");
  const int fd = ::mkstemp(path.data());
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("create a temporary file in ", dir));
  ::unlink(path.c_str());
  return fd;
}

std::string TokenizerText(const std::optional<BpeTokenizer>& bpe) {
  std::string text = absl::StrCat(
      "# Written by `dstrain prepare`: the tokenizer of the shards in this directory\n"
      "# (docs/tokenization.md). A model trained on them needs model.vocab_size >= vocab_size.\n");
  if (!bpe.has_value()) {
    absl::StrAppend(&text, "tokenizer byte\nvocab_size ", ByteTokenizer::kVocabSize, "\n");
    return text;
  }
  absl::StrAppend(&text, "tokenizer bpe\nformat ", bpe->format(), "\nvocab_size ",
                  bpe->vocab_size(), "\n");
  for (size_t i = 0; i < bpe->files().size(); ++i) {
    absl::StrAppend(&text, "sha256 ", bpe->sha256()[i], " ", bpe->files()[i], "\n");
  }
  return text;
}

// Writes `text` to `path` atomically: a temporary file in the same directory, fsynced, renamed.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  std::string tmp = absl::StrCat(path, ".tmp-XXXXXX");
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("create ", tmp));
  absl::Status status = WriteAll(fd, tmp, text.data(), text.size());
  if (status.ok() && ::fchmod(fd, 0644) != 0) status = absl::ErrnoToStatus(errno, "chmod " + tmp);
  if (status.ok() && ::fsync(fd) != 0) status = absl::ErrnoToStatus(errno, "fsync " + tmp);
  ::close(fd);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("rename ", tmp, " to ", path));
  }
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
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
  if (options.read_chunk_bytes < 1 || options.max_unsplit_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("read_chunk_bytes and max_unsplit_bytes must be >= 1, got ",
                     options.read_chunk_bytes, " and ", options.max_unsplit_bytes));
  }
  // Before the text, so that a bad tokenizer is reported before anything is created.
  DT_ASSIGN_OR_RETURN(std::optional<BpeTokenizer> bpe, LoadTokenizer(options));

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
  summary.train_bytes =
      static_cast<uint64_t>(static_cast<double>(summary.text_bytes) * (1.0 - options.val_fraction));
  if (bpe.has_value()) {
    // Not inside a UTF-8 character: both splits stay valid UTF-8 when the text is.
    char next[4];
    const size_t peek =
        static_cast<size_t>(std::min<uint64_t>(4, summary.text_bytes - summary.train_bytes));
    DT_RETURN_IF_ERROR(PreadExactly(fd, text_path, summary.train_bytes, peek, next));
    for (size_t i = 0; i < peek && (static_cast<unsigned char>(next[i]) & 0xC0) == 0x80; ++i) {
      ++summary.train_bytes;
    }
  }
  summary.val_bytes = summary.text_bytes - summary.train_bytes;
  if (summary.train_bytes == 0 || (options.val_fraction > 0 && summary.val_bytes == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text ", text_path, " has ", summary.text_bytes,
        " bytes, too few to give both the training and the validation split (val_fraction ",
        options.val_fraction, ") at least one token"));
  }
  DT_RETURN_IF_ERROR(MakeDirs(out_dir));

  // BPE: the ids first, to count them (each split of n > 0 bytes gives at least one).
  int ids_fd = -1;
  std::string ids_path;
  if (bpe.has_value()) {
    DT_ASSIGN_OR_RETURN(ids_fd, AnonymousFile(out_dir, ids_path));
  }
  FdCloser ids_closer(ids_fd);
  if (bpe.has_value()) {
    DT_ASSIGN_OR_RETURN(summary.train_tokens, EncodeSplit(fd, text_path, summary.train_bytes, *bpe,
                                                          options, ids_fd, ids_path));
    DT_ASSIGN_OR_RETURN(summary.val_tokens, EncodeSplit(fd, text_path, summary.val_bytes, *bpe,
                                                        options, ids_fd, ids_path));
    summary.tokenizer = absl::StrCat("BPE (", bpe->format(), ")");
    summary.vocab_size = bpe->vocab_size();
  } else {
    summary.train_tokens = summary.train_bytes;
    summary.val_tokens = summary.val_bytes;
    summary.tokenizer = "byte-level";
    summary.vocab_size = ByteTokenizer::kVocabSize;
  }

  const std::vector<std::string> train_names =
      PlanShards("train", summary.train_tokens, shard_tokens);
  const std::vector<std::string> val_names = PlanShards("val", summary.val_tokens, shard_tokens);
  std::set<std::string> planned(train_names.begin(), train_names.end());
  planned.insert(val_names.begin(), val_names.end());
  DT_RETURN_IF_ERROR(CheckNoStaleShards(out_dir, planned));

  if (bpe.has_value()) {
    DT_RETURN_IF_ERROR(WriteSplitFromIds(ids_fd, ids_path, 0, summary.train_tokens, shard_tokens,
                                         out_dir, train_names, summary.train_files));
    DT_RETURN_IF_ERROR(WriteSplitFromIds(ids_fd, ids_path, summary.train_tokens, summary.val_tokens,
                                         shard_tokens, out_dir, val_names, summary.val_files));
  } else {
    DT_RETURN_IF_ERROR(WriteSplit(fd, text_path, summary.train_tokens, shard_tokens, out_dir,
                                  train_names, summary.train_files));
    DT_RETURN_IF_ERROR(WriteSplit(fd, text_path, summary.val_tokens, shard_tokens, out_dir,
                                  val_names, summary.val_files));
  }
  summary.tokenizer_file = absl::StrCat(out_dir, "/", kTokenizerFile);
  DT_RETURN_IF_ERROR(WriteFileAtomically(summary.tokenizer_file, TokenizerText(bpe)));
  return summary;
}

absl::StatusOr<TokenizerInfo> ReadTokenizerInfo(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kTokenizerFile);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  FdCloser closer(fd);
  std::string text;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("read ", path));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 1 MiB"));
    }
  }
  TokenizerInfo info;
  int line_number = 0;
  for (const absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (line.empty() || line[0] == '#') continue;
    const std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits(' ', 1));
    const auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": ", why));
    };
    if (kv.first == "tokenizer") {
      if (kv.second != "byte" && kv.second != "bpe") return bad("tokenizer must be byte or bpe");
      info.kind = std::string(kv.second);
    } else if (kv.first == "format") {
      info.format = std::string(kv.second);
    } else if (kv.first == "vocab_size") {
      if (!absl::SimpleAtoi(kv.second, &info.vocab_size) || info.vocab_size < 1) {
        return bad("vocab_size must be a positive integer");
      }
    } else if (kv.first == "sha256") {
      const std::pair<absl::string_view, absl::string_view> hash_path =
          absl::StrSplit(kv.second, absl::MaxSplits(' ', 1));
      if (hash_path.first.size() != 64 || hash_path.second.empty()) {
        return bad("expected \"sha256 HEX PATH\"");
      }
      info.sha256.emplace_back(hash_path.first, hash_path.second);
    } else {
      return bad(absl::StrCat("unknown key \"", kv.first, "\""));
    }
  }
  if (info.kind.empty() || info.vocab_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": needs tokenizer and vocab_size lines"));
  }
  return info;
}

}  // namespace dstrain::data
