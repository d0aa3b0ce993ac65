// docs/security.md's table of limits says what common/limits/limits.h says: every constant is a
// row with its value, and every row is a constant.
#include "common/limits/limits.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace dstrain::limits {
namespace {

// The rows "| `kName` | value | ... |" of the doc's table.
std::map<std::string, std::string> DocumentedLimits() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  std::ifstream in(std::string(srcdir) + "/" + workspace + "/docs/security.md");
  EXPECT_TRUE(in.good()) << "docs/security.md is not in the runfiles";
  std::map<std::string, std::string> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `k", 0) != 0) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|');
    if (cells.size() < 4) continue;
    std::string name(absl::StripAsciiWhitespace(cells[1]));
    name = name.substr(1, name.size() - 2);  // the backquotes
    rows[name] = std::string(absl::StripAsciiWhitespace(cells[2]));
  }
  return rows;
}

template <typename T>
std::string Text(T value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

TEST(Limits, TheDocumentedTableIsTheCodesTable) {
  const std::map<std::string, std::string> code = {
      {"kMaxSpecBytes", Text(kMaxSpecBytes)},
      {"kMaxLogLineBytes", Text(kMaxLogLineBytes)},
      {"kLogLinesPerSecond", Text(kLogLinesPerSecond)},
      {"kLogBurstLines", Text(kLogBurstLines)},
      {"kLogLinesKeptPerJob", Text(kLogLinesKeptPerJob)},
      {"kMaxStoreKeyBytes", Text(kMaxStoreKeyBytes)},
      {"kMaxStoreValueBytes", Text(kMaxStoreValueBytes)},
      {"kMaxReceiveBytes", Text(kMaxReceiveBytes)},
      {"kMaxStoreWaitSeconds", Text(kMaxStoreWaitSeconds)},
      {"kDefaultListPage", Text(kDefaultListPage)},
      {"kMaxListPage", Text(kMaxListPage)},
      {"kMaxMetricsPerGetJob", Text(kMaxMetricsPerGetJob)},
      {"kWatchMetricsPage", Text(kWatchMetricsPage)},
      {"kLogBatchLines", Text(kLogBatchLines)},
      {"kMaxStreamSeconds", Text(kMaxStreamSeconds)},
      {"kSubmissionsPerMinute", Text(kSubmissionsPerMinute)},
      {"kSubmissionBurst", Text(kSubmissionBurst)},
      {"kMaxTokenFileBytes", Text(kMaxTokenFileBytes)},
  };
  EXPECT_EQ(DocumentedLimits(), code);
}

}  // namespace
}  // namespace dstrain::limits
