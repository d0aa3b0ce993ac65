"""fuzz_test: a libFuzzer target and the test that runs it (docs/fuzzing.md)."""

def fuzz_test(name, srcs, deps = [], dict = None, seconds = 10):
    """A fuzz target NAME_fuzzer (defining LLVMFuzzerTestOneInput) and the sh_test NAME.

    Under --config=fuzz (clang, //:fuzz) the binary links libFuzzer and the test fuzzes for
    `seconds` from the seeds in corpus/NAME/, failing on any crash, leak or sanitizer report.
    Elsewhere (gcc, the plain and ASan phases) it links replay_main.cc instead and the test runs
    each seed once: the corpus stays a regression test on every build, at the cost of a few
    small compiles. Tagged "fuzz" so that tools/test.sh's fuzz phase selects only these.

    Args:
      name: the test; the binary is NAME_fuzzer, the seeds are corpus/NAME/*.
      srcs: the target's sources.
      deps: what they use.
      dict: a libFuzzer dictionary (label), or None.
      seconds: how long the test fuzzes under --config=fuzz (keep it well under 20).
    """
    binary = name + "_fuzzer"
    native.cc_binary(
        name = binary,
        testonly = True,
        srcs = srcs,
        deps = deps + select({
            "//:fuzz": [],
            "//conditions:default": ["//tests/fuzz:replay_main"],
        }),
        linkopts = select({
            "//:fuzz": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
    )
    seeds = native.glob(["corpus/%s/*" % name])
    if not seeds:
        fail("fuzz_test %s: no seeds in corpus/%s/" % (name, name))
    native.sh_test(
        name = name,
        # Fuzzing `seconds`, plus start-up and reading the seeds.
        size = "small",
        srcs = ["run_fuzzer.sh"],
        data = [":" + binary] + seeds + ([dict] if dict else []),
        args = [
            "$(rootpath :%s)" % binary,
            "tests/fuzz/corpus/" + name,
            "$(rootpath %s)" % dict if dict else "''",
            str(seconds),
        ],
        tags = ["fuzz"],
    )
