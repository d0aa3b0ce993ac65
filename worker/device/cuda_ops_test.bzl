"""cuda_ops_test: a test of code running on CudaOps, on a GPU and on the CUDA simulator.

cuda_ops_test(name, srcs, deps, ...) makes
  :<name>_objs  the test sources, compiled once against //worker/device:cuda_ops_hdrs;
  :<name>       tagged "gpu": linked with //worker/device:cuda_ops; skips itself without a device;
  :<name>_sim   linked with //worker/device:cuda_ops_sim; runs on any machine where CUDA builds.
The sources must not depend on which of the two they are linked with (nothing in them may test
DT_CUDA_SIM); only the link differs, so the pair costs one compile.
"""

load("//kernels/cuda_common:cuda.bzl", "CUDA_ONLY")

def cuda_ops_test(name, srcs, deps, size = "small", shard_count = None):
    native.cc_library(
        name = name + "_objs",
        testonly = True,
        srcs = srcs,
        # gtest registers the cases from static initializers nothing else references.
        alwayslink = True,
        target_compatible_with = CUDA_ONLY,
        deps = deps + ["//worker/device:cuda_ops_hdrs"],
        visibility = ["//visibility:private"],
    )
    for test, lib, tags in [
        # "exclusive": GPU tests run one at a time; "no_sanitizer": ASan and the CUDA driver do
        # not mix.
        (name, "//worker/device:cuda_ops", ["gpu", "exclusive", "no_sanitizer"]),
        # ucontext fibers and AddressSanitizer's stack tracking do not mix.
        (name + "_sim", "//worker/device:cuda_ops_sim", ["cuda_sim", "no_sanitizer"]),
    ]:
        native.cc_test(
            name = test,
            size = size,
            shard_count = shard_count,
            tags = tags,
            target_compatible_with = CUDA_ONLY,
            deps = [lib, ":" + name + "_objs"],
        )
