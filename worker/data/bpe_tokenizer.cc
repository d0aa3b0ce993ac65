#include "worker/data/bpe_tokenizer.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status/status_macros.h"
#include "worker/data/gpt2_split.h"

namespace dstrain::data {
namespace {

using nlohmann::json;

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD, as ByteTokenizer writes
constexpr absl::string_view kEndOfText = "<|endoftext|>";
// Longer pieces are merged every time rather than cached (as `tokenizers` does); they are rare in
// text and would crowd the cache.
constexpr size_t kMaxCachedPiece = 256;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, and the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) for U+0100 onwards in byte order, so that every token
// is printable text with no whitespace in it. "Ġ" (U+0120) is the space.
constexpr std::array<char32_t, 256> ByteToChar() {
  std::array<char32_t, 256> chars{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    chars[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return chars;
}
constexpr std::array<char32_t, 256> kByteToChar = ByteToChar();
constexpr char32_t kCharLimit = 256 + 68;  // every byte symbol is below this

// The byte a symbol stands for, or -1.
int CharToByte(char32_t c) {
  static const std::array<int, kCharLimit>* const table = [] {
    auto* t = new std::array<int, kCharLimit>;
    t->fill(-1);
    for (int b = 0; b < 256; ++b) (*t)[kByteToChar[b]] = b;
    return t;
  }();
  return c < kCharLimit ? (*table)[c] : -1;
}

std::string Spelling(unsigned char byte) {
  const char32_t c = kByteToChar[byte];
  std::string s;
  if (c < 0x80) {
    s.push_back(static_cast<char>(c));
  } else {  // all symbols are below U+0800: two bytes
    s.push_back(static_cast<char>(0xC0 | (c >> 6)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
  return s;
}

// The bytes a token spelled in byte-level symbols stands for. A spelling with any other character
// stands for its own UTF-8, as `tokenizers`' ByteLevel decoder treats it; *byte_level says which.
std::string SpellingToBytes(absl::string_view spelling, bool* byte_level) {
  std::string bytes;
  *byte_level = true;
  for (size_t i = 0; i < spelling.size();) {
    char32_t c;
    i += DecodeUtf8(spelling.substr(i), &c);
    const int b = c == kInvalidCodePoint ? -1 : CharToByte(c);
    if (b < 0) {
      *byte_level = false;
      return std::string(spelling);
    }
    bytes.push_back(static_cast<char>(b));
  }
  return bytes;
}

// For messages: the token in quotes, control characters escaped, UTF-8 kept.
std::string Quote(absl::string_view token) {
  return absl::StrCat("\"", absl::Utf8SafeCEscape(token), "\"");
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", what, " ", path));
  std::string data;
  struct stat st;
  absl::Status status;
  if (::fstat(fd, &st) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("stat ", path));
  } else if (!S_ISREG(st.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is not a regular file"));
  } else {
    char buf[1 << 16];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = absl::ErrnoToStatus(errno, absl::StrCat("read ", path));
        break;
      }
      if (n == 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  if (!status.ok()) return status;
  return data;
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // A failure would mean libcrypto is broken; the identity is then empty, which matches nothing.
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    return std::string();
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(length)));
}

absl::StatusOr<json> ParseJson(const std::string& path, absl::string_view text) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 3, column 7: ...".
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
}

// Fields of an object: absent and null mean the same to `tokenizers`.
const json* Field(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::StatusOr<bool> OptionalBool(const json& object, const char* key, bool default_value,
                                  const std::string& where) {
  const json* v = Field(object, key);
  if (v == nullptr) return default_value;
  if (!v->is_boolean()) {
    return Invalid(absl::StrCat(where, ".", key),
                   absl::StrCat("expected true or false, got ", v->type_name()));
  }
  return v->get<bool>();
}

// The "type" of a component object such as "pre_tokenizer", or an error naming the field.
absl::StatusOr<std::string> ComponentType(const json& component, const std::string& where) {
  if (!component.is_object()) {
    return Invalid(where, absl::StrCat("expected an object, got ", component.type_name()));
  }
  const json* type = Field(component, "type");
  if (type == nullptr || !type->is_string()) return Invalid(where + ".type", "missing");
  return type->get<std::string>();
}

// Vocabulary entries of a JSON object of token -> id, checked to be integers.
absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> VocabEntries(
    const json& vocab, const std::string& where) {
  if (!vocab.is_object()) {
    return Invalid(where,
                   absl::StrCat("expected an object of token -> id, got ", vocab.type_name()));
  }
  std::vector<std::pair<std::string, int64_t>> entries;
  entries.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer()) {
      return Invalid(absl::StrCat(where, "[", Quote(token), "]"),
                     absl::StrCat("expected an integer id, got ", id.type_name()));
    }
    // Unsigned ids above INT64_MAX read as negative here, and are refused as out of range.
    entries.emplace_back(token, id.get<int64_t>());
  }
  return entries;
}

}  // namespace

absl::Status BpeTokenizer::SetVocab(const std::vector<std::pair<std::string, int64_t>>& vocab,
                                    const std::string& where) {
  if (vocab.size() > static_cast<size_t>(kMaxVocabSize)) {
    return Invalid(where, absl::StrCat(vocab.size(),
                                       " tokens: token shards store uint16 ids (llm.c's format, "
                                       "worker/data/token_shard.h), so at most ",
                                       kMaxVocabSize, " tokens fit"));
  }
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    if (id < 0 || id >= kMaxVocabSize) {
      return Invalid(absl::StrCat(where, "[", Quote(token), "]"),
                     absl::StrCat("id ", id, " is outside [0, ", kMaxVocabSize - 1,
                                  "]: token shards store uint16 ids (llm.c's format, "
                                  "worker/data/token_shard.h)"));
    }
    max_id = std::max(max_id, id);
  }
  token_bytes_.assign(static_cast<size_t>(max_id + 1), std::string());
  has_token_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : vocab) {
    if (has_token_[id]) {
      for (const auto& [other, other_id] : vocab) {
        if (other_id == id && other != token) {
          return Invalid(where, absl::StrCat("id ", id, " is given to both ", Quote(other), " and ",
                                             Quote(token)));
        }
      }
    }
    bool byte_level = false;
    token_bytes_[id] = SpellingToBytes(token, &byte_level);
    has_token_[id] = true;
    by_spelling_.emplace(token, static_cast<uint16_t>(id));
    // Only byte-level spellings can be the bytes of a piece.
    if (byte_level) by_bytes_.emplace(token_bytes_[id], static_cast<uint16_t>(id));
  }
  vocab_where_ = where;
  for (int b = 0; b < 256; ++b) {
    const auto it = by_spelling_.find(Spelling(static_cast<unsigned char>(b)));
    if (it == by_spelling_.end()) {
      return Invalid(where, absl::StrFormat("has no token for byte 0x%02X (%s): a byte-level BPE "
                                            "vocabulary needs all 256 byte symbols",
                                            b, Quote(Spelling(static_cast<unsigned char>(b)))));
    }
    byte_id_[b] = it->second;
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::AddMerge(const std::string& left, const std::string& right,
                                    uint32_t rank, const std::string& where) {
  const auto l = by_spelling_.find(left);
  if (l == by_spelling_.end()) {
    return Invalid(where, absl::StrCat(Quote(left), " is not in ", vocab_where_));
  }
  const auto r = by_spelling_.find(right);
  if (r == by_spelling_.end()) {
    return Invalid(where, absl::StrCat(Quote(right), " is not in ", vocab_where_));
  }
  const std::string merged = left + right;
  const auto m = by_spelling_.find(merged);
  if (m == by_spelling_.end()) {
    return Invalid(where,
                   absl::StrCat("the merged token ", Quote(merged), " is not in ", vocab_where_));
  }
  // A repeated merge takes its later rank, as in `tokenizers` and GPT-2's encoder.py (both build
  // a map from the list).
  merges_[uint64_t{l->second} << 32 | r->second] = MergeRule{rank, m->second};
  return absl::OkStatus();
}

absl::Status BpeTokenizer::AddAddedToken(const std::string& content, int64_t id, bool normalized,
                                         const std::string& where) {
  if (content.empty()) return Invalid(where + ".content", "empty");
  if (id < 0 || id >= kMaxVocabSize) {
    return Invalid(where + ".id",
                   absl::StrCat("id ", id, " is outside [0, ", kMaxVocabSize - 1,
                                "]: token shards store uint16 ids (llm.c's format)"));
  }
  const auto in_vocab = by_spelling_.find(content);
  if (in_vocab != by_spelling_.end() && in_vocab->second != id) {
    return Invalid(where, absl::StrCat(Quote(content), " has id ", in_vocab->second, " in ",
                                       vocab_where_, ", not ", id));
  }
  if (in_vocab == by_spelling_.end() && static_cast<size_t>(id) < has_token_.size() &&
      has_token_[id]) {
    return Invalid(where, absl::StrCat("id ", id, " of ", Quote(content), " is already taken by ",
                                       Quote(token_bytes_[id])));
  }
  for (const auto* list : {&added_raw_, &added_normalized_}) {
    for (const AddedToken& t : *list) {
      if (t.content == content)
        return Invalid(where, absl::StrCat(Quote(content), " is listed twice"));
    }
  }
  if (static_cast<size_t>(id) >= token_bytes_.size()) {
    token_bytes_.resize(id + 1);
    has_token_.resize(id + 1, false);
  }
  token_bytes_[id] = content;
  has_token_[id] = true;
  (normalized ? added_normalized_ : added_raw_)
      .push_back(AddedToken{content, static_cast<uint16_t>(id)});
  added_first_byte_[static_cast<unsigned char>(content[0])] = true;
  return absl::OkStatus();
}

void BpeTokenizer::Finish(std::vector<std::string> files, std::vector<std::string> digests,
                          std::string format) {
  files_ = std::move(files);
  sha256_ = std::move(digests);
  format_ = std::move(format);
  by_spelling_ = {};  // only needed while loading
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::LoadTokenizerJson(const std::string& path) {
  DT_ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path, "tokenizer"));
  return FromTokenizerJson(path, text);
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::LoadVocabMerges(const std::string& vocab_path,
                                                           const std::string& merges_path) {
  DT_ASSIGN_OR_RETURN(const std::string vocab, ReadWholeFile(vocab_path, "vocabulary"));
  DT_ASSIGN_OR_RETURN(const std::string merges, ReadWholeFile(merges_path, "merges"));
  return FromVocabMerges(vocab_path, vocab, merges_path, merges);
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromTokenizerJson(const std::string& path,
                                                             absl::string_view text) {
  DT_ASSIGN_OR_RETURN(const json root, ParseJson(path, text));
  if (!root.is_object()) {
    return Invalid(path, absl::StrCat("expected a JSON object at the top, got ", root.type_name()));
  }
  const auto at = [&](absl::string_view field) { return absl::StrCat(path, ": ", field); };

  // Everything that would change the ids and is not implemented is refused by name.
  for (const char* key : {"truncation", "padding"}) {
    if (Field(root, key) != nullptr) {
      return Invalid(at(key), "not supported (it changes the ids); must be null");
    }
  }
  if (const json* normalizer = Field(root, "normalizer")) {
    const absl::StatusOr<std::string> type = ComponentType(*normalizer, at("normalizer"));
    return Invalid(at("normalizer"),
                   absl::StrCat(type.ok() ? absl::StrCat("type ", Quote(*type)) : "a normalizer",
                                " is not supported; only null (byte-level BPE as in GPT-2)"));
  }
  const json* pre = Field(root, "pre_tokenizer");
  if (pre == nullptr) {
    return Invalid(at("pre_tokenizer"), "missing; only ByteLevel is supported");
  }
  DT_ASSIGN_OR_RETURN(const std::string pre_type, ComponentType(*pre, at("pre_tokenizer")));
  if (pre_type != "ByteLevel") {
    return Invalid(at("pre_tokenizer.type"),
                   absl::StrCat(Quote(pre_type), " is not supported; only \"ByteLevel\""));
  }
  const json* prefix = Field(*pre, "add_prefix_space");
  if (prefix == nullptr || !prefix->is_boolean()) {
    return Invalid(at("pre_tokenizer.add_prefix_space"), "expected true or false");
  }
  BpeTokenizer t;
  t.add_prefix_space_ = prefix->get<bool>();
  DT_ASSIGN_OR_RETURN(t.use_regex_, OptionalBool(*pre, "use_regex", true, at("pre_tokenizer")));
  for (const char* key : {"decoder", "post_processor"}) {
    // Neither changes the ids when ByteLevel (the post-processor only moves offsets); Decode is
    // byte-level whatever the file says, so null is taken as ByteLevel.
    if (const json* component = Field(root, key)) {
      DT_ASSIGN_OR_RETURN(const std::string type, ComponentType(*component, at(key)));
      if (type != "ByteLevel") {
        return Invalid(at(absl::StrCat(key, ".type")),
                       absl::StrCat(Quote(type), " is not supported; only \"ByteLevel\" or null"));
      }
    }
  }

  const json* model = Field(root, "model");
  if (model == nullptr || !model->is_object()) return Invalid(at("model"), "missing");
  if (const json* type = Field(*model, "type")) {
    if (!type->is_string() || type->get<std::string>() != "BPE") {
      return Invalid(at("model.type"),
                     absl::StrCat(type->is_string() ? Quote(type->get<std::string>())
                                                    : std::string(type->type_name()),
                                  " is not supported; only \"BPE\""));
    }
  }
  if (const json* dropout = Field(*model, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      return Invalid(at("model.dropout"),
                     "BPE dropout (random merges) is not supported; must be null");
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const json* affix = Field(*model, key)) {
      if (!affix->is_string() || !affix->get<std::string>().empty()) {
        return Invalid(at(absl::StrCat("model.", key)), "not supported; must be null");
      }
    }
  }
  DT_ASSIGN_OR_RETURN(t.ignore_merges_, OptionalBool(*model, "ignore_merges", false, at("model")));

  const json* vocab = Field(*model, "vocab");
  if (vocab == nullptr) return Invalid(at("model.vocab"), "missing");
  DT_ASSIGN_OR_RETURN(const auto entries, VocabEntries(*vocab, at("model.vocab")));
  DT_RETURN_IF_ERROR(t.SetVocab(entries, at("model.vocab")));

  const json* merges = Field(*model, "merges");
  if (merges == nullptr || !merges->is_array()) {
    return Invalid(at("model.merges"), "expected an array");
  }
  for (size_t i = 0; i < merges->size(); ++i) {
    const json& m = (*merges)[i];
    const std::string where = at(absl::StrCat("model.merges[", i, "]"));
    std::vector<std::string> pair;
    if (m.is_string()) {  // "a b", the form of tokenizers < 0.20 and of merges.txt
      pair = absl::StrSplit(m.get<std::string>(), ' ');
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      pair = {m[0].get<std::string>(), m[1].get<std::string>()};
    }
    if (pair.size() != 2 || pair[0].empty() || pair[1].empty()) {
      return Invalid(where, "expected \"left right\" or [\"left\", \"right\"]");
    }
    DT_RETURN_IF_ERROR(t.AddMerge(pair[0], pair[1], static_cast<uint32_t>(i), where));
  }

  if (const json* added = Field(root, "added_tokens")) {
    if (!added->is_array()) return Invalid(at("added_tokens"), "expected an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const std::string where = at(absl::StrCat("added_tokens[", i, "]"));
      if (!a.is_object()) return Invalid(where, "expected an object");
      const json* content = Field(a, "content");
      const json* id = Field(a, "id");
      if (content == nullptr || !content->is_string()) {
        return Invalid(where + ".content", "expected a string");
      }
      if (id == nullptr || !id->is_number_integer())
        return Invalid(where + ".id", "expected an integer");
      for (const char* key : {"single_word", "lstrip", "rstrip"}) {
        DT_ASSIGN_OR_RETURN(const bool set, OptionalBool(a, key, false, where));
        if (set) {
          return Invalid(absl::StrCat(where, ".", key),
                         absl::StrCat("true is not supported (token ",
                                      Quote(content->get<std::string>()), ")"));
        }
      }
      DT_ASSIGN_OR_RETURN(const bool normalized, OptionalBool(a, "normalized", false, where));
      DT_RETURN_IF_ERROR(
          t.AddAddedToken(content->get<std::string>(), id->get<int64_t>(), normalized, where));
    }
  }
  t.Finish({path}, {Sha256Hex(text)}, "tokenizer.json");
  return t;
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::FromVocabMerges(const std::string& vocab_path,
                                                           absl::string_view vocab_json,
                                                           const std::string& merges_path,
                                                           absl::string_view merges_txt) {
  DT_ASSIGN_OR_RETURN(const json vocab, ParseJson(vocab_path, vocab_json));
  DT_ASSIGN_OR_RETURN(const auto entries, VocabEntries(vocab, vocab_path));
  BpeTokenizer t;  // GPT-2: ByteLevel, no prefix space, the regex
  DT_RETURN_IF_ERROR(t.SetVocab(entries, vocab_path));

  uint32_t rank = 0;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(merges_txt, '\n')) {
    ++line_number;
    absl::ConsumeSuffix(&line, "\r");
    // GPT-2's file starts "#version: 0.2"; `tokenizers` skips such a line wherever it is.
    if (line.empty() || absl::StartsWith(line, "#version")) continue;
    const std::string where = absl::StrCat(merges_path, ":", line_number);
    const std::vector<std::string> pair = absl::StrSplit(line, ' ');
    if (pair.size() != 2 || pair[0].empty() || pair[1].empty()) {
      return Invalid(where, absl::StrCat("expected \"left right\", got ", Quote(line)));
    }
    DT_RETURN_IF_ERROR(t.AddMerge(pair[0], pair[1], rank++, where));
  }
  // GPT-2's tokenizers (OpenAI's, tiktoken, transformers') treat <|endoftext|> as special.
  const auto eot = t.by_spelling_.find(kEndOfText);
  if (eot != t.by_spelling_.end()) {
    DT_RETURN_IF_ERROR(
        t.AddAddedToken(std::string(kEndOfText), eot->second, /*normalized=*/false, vocab_path));
  }
  t.Finish({vocab_path, merges_path}, {Sha256Hex(vocab_json), Sha256Hex(merges_txt)},
           "vocab.json + merges.txt");
  return t;
}

std::pair<size_t, int> BpeTokenizer::FindAdded(const std::vector<AddedToken>& tokens,
                                               absl::string_view text, size_t from) const {
  if (tokens.empty()) return {absl::string_view::npos, -1};
  for (size_t i = from; i < text.size(); ++i) {
    if (!added_first_byte_[static_cast<unsigned char>(text[i])]) continue;
    int best = -1;
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string& c = tokens[k].content;
      if ((best < 0 || c.size() > tokens[best].content.size()) &&
          absl::StartsWith(text.substr(i), c)) {
        best = static_cast<int>(k);
      }
    }
    if (best >= 0) return {i, best};
  }
  return {absl::string_view::npos, -1};
}

std::vector<uint16_t> BpeTokenizer::Encode(absl::string_view text) {
  std::vector<uint16_t> ids;
  ids.reserve(text.size() / 3);
  EncodeAppend(text, /*continuation=*/false, ids);
  return ids;
}

void BpeTokenizer::EncodeAppend(absl::string_view text, bool continuation,
                                std::vector<uint16_t>& out) {
  constexpr size_t npos = absl::string_view::npos;
  size_t pos = 0;
  while (true) {
    const auto [start, k] = FindAdded(added_raw_, text, pos);
    const absl::string_view gap = text.substr(0, start == npos ? text.size() : start);
    // The normalized added tokens are looked for only between the others, as `tokenizers` does.
    size_t p = pos;
    while (true) {
      const auto [s, j] = FindAdded(added_normalized_, gap, p);
      const size_t end = s == npos ? gap.size() : s;
      EncodeSegment(gap.substr(p, end - p), add_prefix_space_ && !(continuation && p == 0), out);
      if (s == npos) break;
      out.push_back(added_normalized_[j].id);
      p = s + added_normalized_[j].content.size();
    }
    if (start == npos) break;
    out.push_back(added_raw_[k].id);
    pos = start + added_raw_[k].content.size();
  }
}

void BpeTokenizer::EncodeSegment(absl::string_view segment, bool add_prefix,
                                 std::vector<uint16_t>& out) {
  if (segment.empty()) return;
  std::string prefixed;
  if (add_prefix && segment[0] != ' ') {
    prefixed.reserve(segment.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(segment.data(), segment.size());
    segment = prefixed;
  }
  if (!use_regex_) {
    EncodePiece(segment, out);
    return;
  }
  pieces_.clear();
  SplitGpt2(segment, pieces_);
  for (const absl::string_view piece : pieces_) EncodePiece(piece, out);
}

void BpeTokenizer::EncodePiece(absl::string_view piece, std::vector<uint16_t>& out) {
  if (ignore_merges_) {
    // A piece that is a token as a whole is that token, merges or not (Llama 3's setting).
    const auto it = by_bytes_.find(piece);
    if (it != by_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (piece.size() == 1) {
    out.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  if (cacheable) {
    const auto it = cache_.find(piece);
    if (it != cache_.end()) {
      const auto first = cache_ids_.begin() + it->second.offset;
      out.insert(out.end(), first, first + it->second.length);
      return;
    }
  }
  const size_t before = out.size();
  MergePiece(piece, out);
  if (!cacheable) return;
  if (cache_.size() >= kCacheEntries) {
    // Simpler than LRU, and a text's frequent words are back within a few kilobytes.
    cache_.clear();
    cache_ids_.clear();
  }
  cache_.emplace(std::string(piece), Cached{static_cast<uint32_t>(cache_ids_.size()),
                                            static_cast<uint32_t>(out.size() - before)});
  cache_ids_.insert(cache_ids_.end(), out.begin() + before, out.end());
}

// `tokenizers`' Word::merge_all, step for step, so that the ids agree even where merge lists are
// odd: a heap of candidate merges ordered by (rank, position); a popped candidate is applied only
// if its symbol still exists, has a right neighbour, and that pair still merges into the same
// token; each merge offers the new pairs with its neighbours.
void BpeTokenizer::MergePiece(absl::string_view piece, std::vector<uint16_t>& out) {
  const int n = static_cast<int>(piece.size());
  symbols_.resize(n);
  for (int i = 0; i < n; ++i) {
    symbols_[i] =
        Symbol{byte_id_[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  const auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  const auto rule = [&](uint32_t left, uint32_t right) -> const MergeRule* {
    const auto it = merges_.find(uint64_t{left} << 32 | right);
    return it == merges_.end() ? nullptr : &it->second;
  };
  heap_.clear();
  for (int i = 0; i + 1 < n; ++i) {
    if (const MergeRule* r = rule(symbols_[i].id, symbols_[i + 1].id)) {
      heap_.push_back(Candidate{r->rank, i, r->new_id});
    }
  }
  std::make_heap(heap_.begin(), heap_.end(), later);
  while (!heap_.empty()) {
    std::pop_heap(heap_.begin(), heap_.end(), later);
    const Candidate top = heap_.back();
    heap_.pop_back();
    Symbol& s = symbols_[top.pos];
    if (!s.alive || s.next < 0) continue;
    Symbol& right = symbols_[s.next];
    const MergeRule* r = rule(s.id, right.id);
    if (r == nullptr || r->new_id != top.new_id) continue;  // a stale candidate
    s.id = top.new_id;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) symbols_[s.next].prev = top.pos;
    if (s.prev >= 0) {
      if (const MergeRule* p = rule(symbols_[s.prev].id, s.id)) {
        heap_.push_back(Candidate{p->rank, s.prev, p->new_id});
        std::push_heap(heap_.begin(), heap_.end(), later);
      }
    }
    if (s.next >= 0) {
      if (const MergeRule* q = rule(s.id, symbols_[s.next].id)) {
        heap_.push_back(Candidate{q->rank, top.pos, q->new_id});
        std::push_heap(heap_.begin(), heap_.end(), later);
      }
    }
  }
  // Merges keep the left symbol, so the first is always alive.
  for (int i = 0; i >= 0; i = symbols_[i].next)
    out.push_back(static_cast<uint16_t>(symbols_[i].id));
}

bool BpeTokenizer::AddedOverlaps(absl::string_view text, size_t p) const {
  for (const auto* list : {&added_raw_, &added_normalized_}) {
    for (const AddedToken& t : *list) {
      const size_t len = t.content.size();
      const size_t first = p >= len ? p - len : 0;
      for (size_t s = first; s <= p && s < text.size(); ++s) {
        const absl::string_view rest = text.substr(s, len);  // shorter at the end of `text`
        if (absl::StartsWith(t.content, rest)) return true;
      }
    }
  }
  return false;
}

namespace {

// Whether a valid code point that is not whitespace starts at `i`.
bool NonSpaceStartsAt(absl::string_view text, size_t i) {
  char32_t cp;
  DecodeUtf8(text.substr(i), &cp);
  // An invalid byte could be a whitespace character cut off by the end of a chunk: not safe.
  return cp != kInvalidCodePoint && ClassOf(cp) != CharClass::kSpace;
}

// Whether a valid code point that is not whitespace ends just before `end`. Its lead byte cannot
// be the continuation of an earlier sequence, so the forward split sees the same code point.
bool NonSpaceEndsAt(absl::string_view text, size_t end) {
  size_t start = end;
  for (int back = 0; back < 4 && start > 0; ++back) {
    --start;
    if ((static_cast<unsigned char>(text[start]) & 0xC0) != 0x80) break;
  }
  char32_t cp;
  const int len = DecodeUtf8(text.substr(start, end - start), &cp);
  return cp != kInvalidCodePoint && start + len == end && ClassOf(cp) != CharClass::kSpace;
}

}  // namespace

size_t BpeTokenizer::SafeSplit(absl::string_view text, size_t from) const {
  // Without the regex the whole text is one piece: nowhere is safe.
  if (!use_regex_) return 0;
  // Two kinds of point where a piece always ends and nothing before it looks past it, so that
  // encoding the two sides apart gives the same pieces (and with no added token across the point,
  // the same added-token matches):
  //  - before a space that follows an ASCII letter or digit: the letter or number run, or the
  //    contraction, stops at the space;
  //  - after a line break between two code points that are not whitespace (text without spaces,
  //    e.g. Chinese, still has these): the lone "\n" is a piece of its own, whether the regex's
  //    \s+(?!\S) sees non-space after it (whole text) or the end (first side).
  for (size_t p = text.size(); p-- > std::max<size_t>(from, 1);) {
    bool safe = false;
    if (text[p] == ' ') {
      safe = absl::ascii_isalnum(static_cast<unsigned char>(text[p - 1]));
    } else if (text[p - 1] == '\n' && p >= 2) {
      safe = NonSpaceEndsAt(text, p - 1) && NonSpaceStartsAt(text, p);
    }
    if (safe && !AddedOverlaps(text, p)) return p;
  }
  return 0;
}

std::string BpeTokenizer::Decode(absl::Span<const uint16_t> ids) const {
  std::string text;
  text.reserve(ids.size() * 4);
  for (const uint16_t id : ids) {
    if (id < token_bytes_.size() && has_token_[id]) {
      text += token_bytes_[id];
    } else {
      text.append(kReplacement.data(), kReplacement.size());
    }
  }
  return text;
}

int BpeTokenizer::TokenId(absl::string_view bytes) const {
  const auto it = by_bytes_.find(bytes);
  if (it != by_bytes_.end()) return it->second;
  for (const auto* list : {&added_raw_, &added_normalized_}) {
    for (const AddedToken& t : *list) {
      if (t.content == bytes) return t.id;
    }
  }
  return -1;
}

}  // namespace dstrain::data
