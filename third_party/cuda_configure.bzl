"""Creates @cuda: the real toolkit when nvcc and headers exist, empty stand-ins otherwise.

Bazel 4.2.3 loads packages named in non-selected select() branches, so @cuda must always be
loadable, even on a machine with no CUDA (a plain new_local_repository breaks --config=nocuda).
Override the location with --repo_env=CUDA_PATH=...
"""

_STUB_BUILD = """
package(default_visibility = ["//visibility:public"])
cc_library(name = "cudart")
cc_library(name = "cublas")
cc_library(name = "nccl")
filegroup(name = "nvcc", srcs = [])
"""

def _cuda_configure_impl(rctx):
    cuda_path = rctx.os.environ.get("CUDA_PATH", rctx.attr.default_path)
    found = rctx.path(cuda_path + "/bin/nvcc").exists and \
            rctx.path(cuda_path + "/include/cuda_runtime.h").exists
    if found:
        for d in ["bin", "include", "lib64"]:
            rctx.symlink(cuda_path + "/" + d, d)
        rctx.symlink(rctx.attr.build_file, "BUILD.bazel")
    else:
        rctx.file("BUILD.bazel", _STUB_BUILD)
    rctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % rctx.name)
    rctx.file("defs.bzl", "CUDA_FOUND = %s\nCUDA_PATH = %r\nNVCC = %r\n" % (
        found,
        cuda_path,
        cuda_path + "/bin/nvcc",
    ))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    attrs = {
        "build_file": attr.label(allow_single_file = True),
        "default_path": attr.string(default = "/usr/local/cuda"),
    },
    environ = ["CUDA_PATH"],
    local = True,
)
