// Fuzzes the job-file parser (worker/config): the strict JSON reader on its own
// (ParseStrictJson: duplicate keys, comments, nesting) and the whole ParseJobSpec (schema, types,
// batch rules, every block's validation). Bad input must be an error, never a crash, an uncaught
// exception or a hang. One property besides: the effective configuration of a job that parses
// (what the coordinator stores and every trainer parses again) parses again to the same effective
// configuration (docs/job-file.md).
//
// deepspeed_config names a file to merge. The parser reads whatever path it is given (the file
// is the user's own), so here it may name only the files this target writes beside the base
// directory (ds_*.json below); an input naming anything else skips ParseJobSpec rather than have
// the fuzzer read /dev/zero or /proc.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/string_view.h"
#include "worker/config/config.h"
#include "worker/config/strict_json.h"

namespace {

using nlohmann::json;

// A fresh base directory holding the deepspeed_config files the inputs may name.
const std::string& BaseDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/config_fuzz.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    const auto write = [&](const char* name, const char* text) {
      std::ofstream(pattern + "/" + name) << text;
    };
    write("ds_ok.json",
          R"({"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 1.0,
              // a comment, as hjson allows
              "zero_optimization": {"stage": 2}})");
    write("ds_bad.json", R"({"train_batch_size": 8, "train_batch_size": 8})");
    write("ds_array.json", "[1, 2]");
    write("ds_job.json", R"({"job": {"train_steps": 1}})");
    return new std::string(pattern);
  }();
  return *dir;
}

bool NamesOnlyOurFiles(const json& root) {
  static const std::set<std::string> ours = {"ds_ok.json", "ds_bad.json", "ds_array.json",
                                             "ds_job.json"};
  if (!root.is_object()) return true;
  const auto it = root.find("deepspeed_config");
  return it == root.end() || !it->is_string() || ours.count(it->get<std::string>()) > 0;
}

json WithoutNotes(json effective) {
  effective.erase("notes");
  return effective;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<json> root = dstrain::config::internal::ParseStrictJson(text, "fuzz");
  if (root.ok()) {
    (void)dstrain::config::internal::ShortDump(*root);
    if (!NamesOnlyOurFiles(*root)) return 0;
  }
  absl::StatusOr<dstrain::config::JobSpec> spec =
      dstrain::config::ParseJobSpec(std::string_view(text.data(), text.size()), BaseDir());
  if (!spec.ok()) return 0;
  const std::string effective = spec->effective.dump();
  absl::StatusOr<dstrain::config::JobSpec> again = dstrain::config::ParseJobSpec(effective, "");
  if (!again.ok()) {
    std::fprintf(stderr, "effective configuration does not parse: %s\n%s\n",
                 std::string(again.status().message()).c_str(), effective.c_str());
    std::abort();
  }
  if (WithoutNotes(again->effective) != WithoutNotes(spec->effective)) {
    std::fprintf(stderr, "effective configuration changes when parsed again:\n%s\n%s\n",
                 effective.c_str(), again->effective.dump().c_str());
    std::abort();
  }
  return 0;
}
