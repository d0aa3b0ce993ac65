// A conformance suite every Communicator backend passes (after Gloo's parameterized tests:
// every op x world size x element count x dtype, ranks as threads of one process).
//
// A backend's test instantiates it with a CommBackend that makes fresh groups:
//
//   INSTANTIATE_TEST_SUITE_P(Fake, CommConformanceTest,
//                            ::testing::ValuesIn(ConformanceParams(FakeBackend())),
//                            ConformanceParamName);
//
// Each test runs one group of `size` ranks on `size` threads and checks the results against a
// reference computed here in float64 from every rank's deterministic inputs. The inputs are chosen
// so that f32 accumulation is exact: f32 results must equal the reference exactly, and bf16/f16
// results must equal the exact sum rounded once to nearest even (avg: the f32 quotient rounded
// once), which is the contract of communicator.h. Gathers, broadcasts and point to point compare
// bits.
//
// The suite covers: AllReduce (sum, avg, max), ReduceScatter, AllGather, Broadcast (several roots)
// over counts {0, 1, 3, 4, 1000, 2^20 (f32 only)} and dtypes {f32, bf16, f16}; Barrier; Send/Recv
// rings with several tags in flight; many async operations in flight, zero-count operations in
// order; Split (disjoint, nested, single-rank, non-members); argument validation; Abort; and a
// rank that never arrives (the others fail within the timeout naming the op, group and rank).
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/comm/communicator.h"

namespace dstrain::comm::testing {

// Creates rank `rank` of the group prepared by CommBackend::new_group.
using RankFactory = std::function<absl::StatusOr<std::unique_ptr<Communicator>>(int rank)>;

struct CommBackend {
  std::string name;
  // Prepares the shared state of a fresh group of `size` ranks (a FakeWorld, an InMemoryStore)
  // and returns the factory of its ranks. The factory is called concurrently from `size` threads
  // and stays alive until every communicator of the group is destroyed.
  std::function<RankFactory(int size)> new_group;
  // Extra time allowed past an operation's timeout before a failure must have been reported
  // (failure diagnosis, thread scheduling on a loaded machine).
  absl::Duration failure_slack = absl::Seconds(2);
};

// Creates a group of `size` ranks on `size` threads, runs fn(rank, comm) on each, waits for all
// of them, then destroys the communicators. Creation failures are test failures.
void RunRanks(const CommBackend& backend, int size,
              const std::function<void(int rank, Communicator& comm)>& fn);

struct ConformanceParam {
  std::shared_ptr<const CommBackend> backend;
  int size = 1;
};

// "gloo, 4 ranks" instead of gtest's byte dump.
void PrintTo(const ConformanceParam& param, std::ostream* os);

// One parameter per world size.
std::vector<ConformanceParam> ConformanceParams(std::shared_ptr<const CommBackend> backend,
                                                std::vector<int> sizes = {1, 2, 3, 4, 8});
std::string ConformanceParamName(const ::testing::TestParamInfo<ConformanceParam>& info);

class CommConformanceTest : public ::testing::TestWithParam<ConformanceParam> {
 protected:
  const CommBackend& backend() const { return *GetParam().backend; }
  int size() const { return GetParam().size; }
};

}  // namespace dstrain::comm::testing
