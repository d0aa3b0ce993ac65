// Path confinement against a real directory tree: a symlink out of the root is refused even
// though the path reads as inside; one that stays inside is fine; a path that does not exist yet
// is judged by the part that does; ".." and relative paths are handled.
#include "common/paths/beneath.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"

namespace dstrain::paths {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

TEST(NormalizeLexically, Basics) {
  EXPECT_EQ(NormalizeLexically("/a/b/../c/./d/"), "/a/c/d");
  EXPECT_EQ(NormalizeLexically("/../x"), "/x");
  EXPECT_EQ(NormalizeLexically("/"), "/");
  EXPECT_EQ(NormalizeLexically("a/./b/../c"), "a/c");
  EXPECT_EQ(NormalizeLexically("../x/.."), "..");
  EXPECT_EQ(NormalizeLexically("a/.."), ".");
}

TEST(CheckBeneath, SymlinksAreFollowedBeforeComparing) {
  namespace fs = std::filesystem;
  const fs::path base = fs::path(::testing::TempDir()) / "beneath_test";
  fs::remove_all(base);
  fs::create_directories(base / "root" / "data");
  fs::create_directories(base / "outside");
  fs::create_symlink(base / "outside", base / "root" / "escape");
  fs::create_symlink(base / "root" / "data", base / "root" / "alias");
  const std::string root = (base / "root").string();

  EXPECT_THAT(CheckBeneath(root, (base / "root" / "data" / "train.bin").string(), "data.train"),
              IsOk());
  EXPECT_THAT(CheckBeneath(root, (base / "root" / "alias" / "train.bin").string(), "data.train"),
              IsOk());
  EXPECT_THAT(CheckBeneath(root, (base / "root" / "new" / "ckpt").string(), "job.checkpoint_dir"),
              IsOk())
      << "a directory a run will create";
  EXPECT_THAT(CheckBeneath(root, (base / "root" / "escape" / "secret").string(), "data.train"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("data.train: ")));
  EXPECT_THAT(CheckBeneath(root, (base / "root" / "escape").string(), "job.checkpoint_dir"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the data root")));
  EXPECT_THAT(CheckBeneath(root, (base / "root" / ".." / "outside").string(), "data.val"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("data.val")));
  EXPECT_THAT(CheckBeneath(root, "relative/path", "data.train"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not absolute")));
  EXPECT_THAT(CheckBeneath((base / "missing").string(), root, "data.train"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not exist")));
  // The root itself may be a symlink.
  fs::create_symlink(base / "root", base / "root-link");
  EXPECT_THAT(CheckBeneath((base / "root-link").string(), (base / "root" / "data" / "x").string(),
                           "data.train"),
              IsOk());
  fs::remove_all(base);
}

}  // namespace
}  // namespace dstrain::paths
