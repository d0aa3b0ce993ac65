"""Bazel macros for this project's CUDA kernels (no rules_cuda offline: nvcc runs in a genrule).

dt_cuda_library(name, cu, ...) makes
  :<name>       the host API: the wrapper `.cc` files plus the `.cu` compiled by nvcc into a static
                library (sm_80 and sm_90 SASS + compute_90 PTX), linked against the CUDA runtime;
  :<name>_sim   test-only: the same wrapper `.cc` files plus the `.cu` compiled as host C++
                against the CPU simulator (kernels/cuda_common/sim.h), no GPU needed;
  :<name>_hdrs  test-only: the public headers alone, for code compiled once and linked with
                either of the two.
dt_cuda_test(name, srcs, ...) makes
  :<name>_objs  the test sources, compiled once (against the `_hdrs` targets);
  :<name>       tagged "gpu": links them with :<name of each cuda_dep>; skips itself without a
                device;
  :<name>_sim   links the same objects with the `_sim` libraries; runs on any machine.

Everything is incompatible under --config=nocuda (--define=cuda=off), so `bazel build //...`
skips these targets there, and every CUDA label sits inside select(): Bazel 4.2 loads the packages
a plain dependency names even for a skipped target (docs/architecture.md, "Build").
"""

load("@cuda//:defs.bzl", "NVCC")

CUDA_ONLY = select({
    "//:cuda_off": ["//:cuda_disabled"],
    "//conditions:default": [],
})

_NVCC_FLAGS = " ".join([
    "--lib",
    "-std=c++17",
    "-O3",
    "-Xcompiler=-fPIC",
    "-ccbin=/usr/bin/g++",
    "-gencode=arch=compute_80,code=sm_80",  # A100
    "-gencode=arch=compute_90,code=sm_90",  # H100 / H200 (no sm_90a: nothing Hopper-only here)
    "-gencode=arch=compute_90,code=compute_90",  # PTX, JIT-compiled on newer GPUs
    "-I.",
])

_DEVICE_HEADERS = "//kernels/cuda_common:device_headers"
_SIM_DEVICE = "//kernels/cuda_common:sim_device"
_SIM_RUNTIME = "//kernels/cuda_common:sim_runtime"

def _cuda_select(labels):
    return select({
        "//:cuda_off": [],
        "//conditions:default": labels,
    })

def _sim_label(label):
    return label + "_sim"

def dt_cuda_library(
        name,
        cu,
        hdrs,
        srcs = [],
        cu_hdrs = [],
        deps = [],
        cuda_deps = [],
        cuda_libs = ["@cuda//:cudart"],
        testonly = False,
        visibility = None):
    """A CUDA kernel library and its simulator twin.

    Args:
      name: target name.
      cu: the one `.cu` file (kernels + plain launchers returning cudaError_t).
      hdrs: public headers (the absl::Status API).
      srcs: host `.cc` files (the wrappers: validation, then the launchers).
      cu_hdrs: private headers that the `.cu` includes (e.g. the launcher declarations); also
        visible to srcs. Public hdrs are passed to nvcc too.
      deps: ordinary C++ dependencies of srcs (no dt_cuda_library targets).
      cuda_deps: other dt_cuda_library targets; the `_sim` twin depends on their `_sim` twins.
      cuda_libs: CUDA libraries to link (inside select()), e.g. "@cuda//:cublas".
      testonly: of the nvcc-built library.
      visibility: of both libraries.
    """
    lib = "lib" + name + "_device.a"
    native.genrule(
        name = name + "_nvcc",
        srcs = [cu] + cu_hdrs + hdrs + [_DEVICE_HEADERS],
        outs = [lib],
        cmd = NVCC + " " + _NVCC_FLAGS + " -o $@ $(location " + cu + ")",
        message = "nvcc " + cu,
        testonly = testonly,
        target_compatible_with = CUDA_ONLY,
    )
    # The nvcc archive on its own, after the wrappers on the link line. linkstatic everywhere:
    # a test's dynamic (fastbuild) link would otherwise put the wrappers in a shared object that
    # does not carry the archive's symbols.
    native.cc_library(
        name = name + "_device",
        srcs = [":" + lib],
        linkstatic = True,
        testonly = testonly,
        deps = _cuda_select(cuda_libs),
        target_compatible_with = CUDA_ONLY,
        visibility = ["//visibility:private"],
    )
    native.cc_library(
        name = name,
        srcs = srcs + cu_hdrs,
        hdrs = hdrs,
        linkstatic = True,
        deps = deps + _cuda_select(cuda_deps + cuda_libs + [":" + name + "_device"]),
        testonly = testonly,
        target_compatible_with = CUDA_ONLY,
        visibility = visibility,
    )
    # The headers alone: a test compiled against them links with either library.
    native.cc_library(
        name = name + "_hdrs",
        testonly = True,
        hdrs = hdrs,
        deps = deps + _cuda_select([d + "_hdrs" for d in cuda_deps]),
        target_compatible_with = CUDA_ONLY,
        visibility = visibility,
    )
    native.genrule(
        name = name + "_sim_src",
        srcs = [cu],
        outs = [name + "_sim_device.cc"],
        cmd = "cp $< $@",
        testonly = True,
        target_compatible_with = CUDA_ONLY,
    )
    native.cc_library(
        name = name + "_sim",
        testonly = True,
        srcs = srcs + cu_hdrs + [":" + name + "_sim_device.cc"],
        hdrs = hdrs,
        linkstatic = True,
        local_defines = ["DT_CUDA_SIM=1"],
        deps = deps + _cuda_select([_sim_label(d) for d in cuda_deps] + [_SIM_DEVICE]),
        target_compatible_with = CUDA_ONLY,
        visibility = visibility,
    )

def dt_cuda_test(name, srcs, deps = [], cuda_deps = [], size = "small", shard_count = None):
    """A GPU test and the same test against the CPU simulator.

    Args:
      name: target name; the simulator twin is name + "_sim".
      srcs: test sources; they start each test with DT_SKIP_WITHOUT_CUDA_DEVICE().
      deps: ordinary dependencies (gtest_main and //kernels/cuda_common:test_util are added).
      cuda_deps: dt_cuda_library targets under test.
      size: test size of both.
      shard_count: optional sharding of the simulator twin (the GPU test is never sharded).
    """
    common = ["//kernels/cuda_common:test_util", "@system//:gtest_main"]
    # Compiled once for both tests (the sources do not depend on DT_CUDA_SIM; only the link
    # differs), which halves the compile time of the pair. alwayslink: gtest registers the cases
    # from static initializers that nothing else references.
    native.cc_library(
        name = name + "_objs",
        testonly = True,
        srcs = srcs,
        alwayslink = True,
        deps = deps + _cuda_select([d + "_hdrs" for d in cuda_deps] + common),
        target_compatible_with = CUDA_ONLY,
        visibility = ["//visibility:private"],
    )
    native.cc_test(
        name = name,
        size = size,
        # "exclusive": GPU tests run one at a time; "no_sanitizer": ASan and the CUDA driver do
        # not mix (ASan's shadow memory collides with the driver's mappings).
        tags = ["gpu", "exclusive", "no_sanitizer"],
        deps = [":" + name + "_objs"] + _cuda_select(cuda_deps + common),
        target_compatible_with = CUDA_ONLY,
    )
    native.cc_test(
        name = name + "_sim",
        size = size,
        shard_count = shard_count,
        # ucontext fibers and AddressSanitizer's stack tracking do not mix.
        tags = ["cuda_sim", "no_sanitizer"],
        deps = [":" + name + "_objs"] +
               _cuda_select([_sim_label(d) for d in cuda_deps] + common + [_SIM_RUNTIME]),
        target_compatible_with = CUDA_ONLY,
    )
