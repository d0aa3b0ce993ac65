#include "worker/config/strict_json.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dstrain::config::internal {
namespace {

using nlohmann::json;

// Builds the DOM from SAX events. It keeps its own stack of open containers so that it knows the
// key path of every event; nlohmann's DOM parser offers no hook that sees a key together with
// the object it is being added to.
class StrictDomBuilder {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit StrictDomBuilder(absl::string_view source) : source_(source) {}

  bool null() { return AddValue(json(nullptr)); }
  bool boolean(bool v) { return AddValue(json(v)); }
  bool number_integer(number_integer_t v) { return AddValue(json(v)); }
  bool number_unsigned(number_unsigned_t v) { return AddValue(json(v)); }
  bool number_float(number_float_t v, const string_t& /*text*/) { return AddValue(json(v)); }
  bool string(string_t& v) { return AddValue(json(std::move(v))); }
  bool binary(binary_t& /*v*/) {
    // Only reachable from binary formats (CBOR, ...), never from JSON text.
    return Fail(absl::StrCat(CurrentPath(), ": binary values are not JSON"));
  }

  bool start_object(std::size_t /*size*/) { return Open(json::object()); }
  bool end_object() { return Close(); }
  bool start_array(std::size_t /*size*/) { return Open(json::array()); }
  bool end_array() { return Close(); }

  bool key(string_t& k) {
    Frame& f = stack_.back();
    if (f.value->contains(k)) {
      return Fail(absl::StrCat(JoinPath(f.path, k), ": duplicate key"));
    }
    f.pending_key = k;
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) {
    // ex.what() reads "[json.exception.parse_error.101] parse error at line 3, column 7: ...".
    absl::string_view what = ex.what();
    const size_t bracket = what.find("] ");
    if (bracket != absl::string_view::npos) what.remove_prefix(bracket + 2);
    absl::ConsumePrefix(&what, "parse error ");
    const std::string where = CurrentPath();
    return Fail(
        absl::StrCat(where.empty() ? std::string(source_) : where, ": invalid JSON ", what));
  }

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  json TakeRoot() { return std::move(root_); }

 private:
  struct Frame {
    json* value;              // the open object or array
    std::string path;         // its key path
    std::string pending_key;  // objects: the key whose value comes next
  };

  // Path of the value about to be read (used for syntax errors).
  std::string CurrentPath() const {
    if (stack_.empty()) return "";
    const Frame& f = stack_.back();
    if (f.value->is_array()) return IndexPath(f.path, f.value->size());
    return f.pending_key.empty() ? f.path : JoinPath(f.path, f.pending_key);
  }

  // Places `v` into the innermost open container (or as the root) and returns where it went.
  json* Place(json v, std::string* path) {
    if (stack_.empty()) {
      root_ = std::move(v);
      *path = "";
      return &root_;
    }
    Frame& f = stack_.back();
    if (f.value->is_array()) {
      *path = IndexPath(f.path, f.value->size());
      f.value->push_back(std::move(v));
      return &f.value->back();
    }
    *path = JoinPath(f.path, f.pending_key);
    json& slot = (*f.value)[f.pending_key];
    slot = std::move(v);
    f.pending_key.clear();
    return &slot;
  }

  bool AddValue(json v) {
    std::string path;
    Place(std::move(v), &path);
    return true;
  }

  // Pointers into the tree stay valid while a child is open: a parent array only grows after its
  // open child is closed, and object members (std::map nodes) never move.
  bool Open(json container) {
    std::string path;
    json* slot = Place(std::move(container), &path);
    stack_.push_back(Frame{slot, std::move(path), ""});
    return true;
  }

  bool Close() {
    stack_.pop_back();
    return true;
  }

  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  absl::string_view source_;
  json root_;
  std::vector<Frame> stack_;
  std::string error_;
};

// Optimal string alignment distance: Levenshtein plus adjacent transpositions, the usual typos.
size_t EditDistance(absl::string_view a, absl::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

}  // namespace

absl::StatusOr<json> ParseStrictJson(absl::string_view text, absl::string_view source) {
  StrictDomBuilder builder(source);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/true);
  } catch (const std::exception& e) {
    // The SAX path reports errors through parse_error(); this is only a safety net.
    return absl::InvalidArgumentError(absl::StrCat(source, ": invalid JSON: ", e.what()));
  }
  if (!ok || builder.failed()) {
    return absl::InvalidArgumentError(builder.failed() ? builder.error()
                                                       : absl::StrCat(source, ": invalid JSON"));
  }
  return builder.TakeRoot();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read \"", path, "\": is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string message = absl::StrCat("cannot read \"", path, "\": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read \"", path, "\": read error"));
  }
  return buffer.str();
}

std::string JoinPath(absl::string_view parent, absl::string_view key) {
  if (parent.empty()) return std::string(key);
  return absl::StrCat(parent, ".", key);
}

std::string IndexPath(absl::string_view parent, size_t index) {
  return absl::StrCat(parent, "[", index, "]");
}

std::string ClosestKey(absl::string_view key, const std::vector<std::string>& candidates) {
  const std::string lower_key = absl::AsciiStrToLower(key);
  std::string best;
  size_t best_distance = 3;
  for (const std::string& c : candidates) {
    const size_t d = EditDistance(lower_key, absl::AsciiStrToLower(c));
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::string JsonTypeName(const json& value) {
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "number";
  return value.type_name();
}

std::string ShortDump(const json& value) {
  std::string s = value.dump(-1, ' ', false, json::error_handler_t::replace);
  constexpr size_t kMax = 60;
  if (s.size() > kMax) s = absl::StrCat(s.substr(0, kMax), "...");
  return s;
}

}  // namespace dstrain::config::internal
