#include "worker/device/ops.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dstrain::device {
namespace {

// The argument checks of one operation: the first failing check wins, and its message names the
// operation, the argument and what was expected.
class ArgCheck {
 public:
  ArgCheck(Device device, const char* op) : device_(device), op_(op) {}

  // A view that must be given and live on this device (a null view of no elements is nowhere:
  // it passes, and the element counts below decide whether none was right).
  ArgCheck& Given(const char* name, const View& v) {
    if (!ok()) return *this;
    if (v.empty()) return v.numel() > 0 ? Fail(name, v, "is null") : *this;
    return OnDevice(name, v);
  }
  // Given, and f32.
  ArgCheck& F32(const char* name, const View& v) {
    return Given(name, v).Type(name, v, {DType::kF32});
  }
  // A view that may be empty (not given); when given, on this device.
  ArgCheck& Optional(const char* name, const View& v) {
    if (!ok() || v.empty()) return *this;
    return OnDevice(name, v);
  }
  // An activation of the layers: f32, or bf16 where `bf16_taken` (Sizing::bf16_matmul_inputs).
  ArgCheck& Activation(const char* name, const View& v, bool bf16_taken) {
    Type(name, v, {DType::kF32, DType::kBF16});
    return That(v.dtype() != DType::kBF16 || bf16_taken,
                absl::StrCat(name,
                             " is bf16, which this device's layers do not take (only the "
                             "CPU's do)"));
  }
  ArgCheck& Type(const char* name, const View& v, std::initializer_list<DType> allowed) {
    if (!ok() || v.empty()) return *this;
    for (DType t : allowed) {
      if (v.dtype() == t) return *this;
    }
    std::vector<const char*> names;
    for (DType t : allowed) names.push_back(DTypeName(t));
    return Fail(name, v, absl::StrCat("has the wrong dtype (", absl::StrJoin(names, " or "), ")"));
  }
  ArgCheck& Elements(const char* name, const View& v, int64_t n, const char* what) {
    if (!ok() || v.numel() == n) return *this;
    return Fail(name, v,
                absl::StrCat("has ", v.numel(), " elements, expected ", n, " (", what, ")"));
  }
  ArgCheck& That(bool condition, const std::string& message) {
    if (!ok() || condition) return *this;
    status_ = absl::InvalidArgumentError(absl::StrCat(op_, ": ", message));
    return *this;
  }
  absl::Status status() const { return status_; }

 private:
  bool ok() const { return status_.ok(); }
  ArgCheck& OnDevice(const char* name, const View& v) {
    if (v.device() == device_) return *this;
    return Fail(name, v,
                absl::StrCat("is not on this operation's device ", tensor::DeviceName(device_)));
  }
  ArgCheck& Fail(const char* name, const View& v, const std::string& what) {
    status_ =
        absl::InvalidArgumentError(absl::StrCat(op_, ": ", name, " ", v.DebugString(), " ", what));
    return *this;
  }

  const Device device_;
  const char* const op_;
  absl::Status status_;
};

constexpr std::initializer_list<DType> kFloat = {DType::kF32, DType::kBF16, DType::kF16};
constexpr std::initializer_list<DType> kF32 = {DType::kF32};
constexpr std::initializer_list<DType> kI32 = {DType::kI32};

// C of a (rows, C) operand given as a view of any rank: its last dimension.
int64_t LastDim(const View& v) { return v.rank() == 0 ? 1 : v.dim(-1); }

constexpr char kBf16InpNeedsBf16Products[] =
    "inp is bf16 but the products are fp32 (a bf16 input needs compute or the weight in bf16)";

// Whether two views' bytes do not overlap (an empty one overlaps nothing).
bool Apart(const View& a, const View& b) {
  const char* x = static_cast<const char*>(a.data());
  const char* y = static_cast<const char*>(b.data());
  return x == nullptr || y == nullptr || x + a.bytes() <= y || y + b.bytes() <= x;
}

// Whether a linear layer's products run in bf16: asked for, or a bf16 weight.
bool Bf16Products(const LinearOptions& options, const View& weight) {
  return options.compute == DType::kBF16 || weight.dtype() == DType::kBF16;
}

}  // namespace

void Ops::Fail(absl::Status error) {
  if (status_.ok()) status_ = std::move(error);
}

bool Ops::Check(absl::Status checks) {
  if (!status_.ok()) return false;
  Fail(std::move(checks));
  return status_.ok();
}

absl::Status Ops::Synchronize() {
  absl::Status s = DoSynchronize();
  Fail(s);
  return status_;
}

void Ops::Copy(View dst, View src) {
  if (!Check(ArgCheck(device(), "Copy")
                 .Given("dst", dst)
                 .Given("src", src)
                 .That(dst.dtype() == src.dtype(), "dst and src have different dtypes")
                 .Elements("src", src, dst.numel(), "dst's elements")
                 .status())) {
    return;
  }
  if (dst.numel() > 0 && dst.data() != src.data()) DoCopy(dst, src);
}

// The checks of a copy between `device` (view `v`) and host memory at `host`; true to go on with
// a copy of more than nothing.
bool Ops::CheckHostCopy(const char* op, View v, const void* host, bool to_host) {
  return Check(ArgCheck(device(), op)
                   .Given(to_host ? "src" : "dst", v)
                   .That(host != nullptr || v.numel() == 0, to_host ? "dst is null" : "src is null")
                   .status()) &&
         v.numel() > 0;
}

void Ops::CopyFromHost(View dst, const void* src) {
  if (CheckHostCopy("CopyFromHost", dst, src, /*to_host=*/false)) DoCopyFromHost(dst, src);
}

void Ops::CopyToHost(void* dst, View src) {
  if (CheckHostCopy("CopyToHost", src, dst, /*to_host=*/true)) DoCopyToHost(dst, src);
}

absl::StatusOr<std::unique_ptr<tensor::Allocator>> Ops::NewPinnedHostAllocator(int64_t) {
  return absl::UnimplementedError(absl::StrCat(
      Describe(), ": no page-locked host memory (this device's memory is host memory)"));
}

void Ops::CopyFromHostAsync(View dst, const void* src) {
  if (CheckHostCopy("CopyFromHostAsync", dst, src, /*to_host=*/false)) {
    DoCopyFromHostAsync(dst, src);
  }
}

void Ops::CopyToHostAsync(void* dst, View src) {
  if (CheckHostCopy("CopyToHostAsync", src, dst, /*to_host=*/true)) DoCopyToHostAsync(dst, src);
}

int Ops::RecordFence() { return failed() ? -1 : DoRecordFence(); }

absl::Status Ops::WaitFence(int fence) {
  if (fence >= 0) Fail(DoWaitFence(fence));
  return status_;
}

void Ops::Fill(View x, float value) {
  if (!Check(ArgCheck(device(), "Fill").Given("x", x).Type("x", x, kFloat).status())) return;
  if (x.numel() > 0) DoFill(x, value);
}

void Ops::Convert(View dst, View src) {
  if (!Check(ArgCheck(device(), "Convert")
                 .Given("dst", dst)
                 .Given("src", src)
                 .Type("dst", dst, kFloat)
                 .Type("src", src, kFloat)
                 .Elements("src", src, dst.numel(), "dst's elements")
                 .That(dst.dtype() == src.dtype() || dst.dtype() == DType::kF32 ||
                           src.dtype() == DType::kF32,
                       "converts only to or from f32")
                 .status())) {
    return;
  }
  if (dst.numel() > 0) DoConvert(dst, src);
}

void Ops::AddInto(View acc, View x) {
  if (!Check(ArgCheck(device(), "AddInto")
                 .Given("acc", acc)
                 .Given("x", x)
                 .Type("acc", acc, kFloat)
                 .Type("x", x,
                       acc.dtype() == DType::kF32
                           ? kFloat
                           : std::initializer_list<DType>{DType::kF32, acc.dtype()})
                 .Elements("x", x, acc.numel(), "acc's elements")
                 .status())) {
    return;
  }
  if (acc.numel() > 0) DoAddInto(acc, x);
}

void Ops::Scale(View x, double s) {
  if (!Check(ArgCheck(device(), "Scale").Given("x", x).Type("x", x, kFloat).status())) return;
  if (x.numel() > 0) DoScale(x, s);
}

absl::StatusOr<double> Ops::SumSquares(absl::Span<const View> xs) {
  ArgCheck check(device(), "SumSquares");
  for (const View& x : xs) check.Given("x", x).Type("x", x, kFloat);
  if (!Check(check.status())) return status_;
  absl::StatusOr<double> sum = DoSumSquares(xs);
  if (!sum.ok()) Fail(sum.status());
  return sum;
}

void Ops::EncoderForward(View out, View tokens, View wte, View wpe) {
  const int64_t C = LastDim(out);
  if (!Check(ArgCheck(device(), "EncoderForward")
                 .F32("out", out)
                 .Given("tokens", tokens)
                 .Given("wte", wte)
                 .F32("wpe", wpe)
                 .Type("tokens", tokens, kI32)
                 .Type("wte", wte, {DType::kF32, DType::kBF16})
                 .Elements("out", out, tokens.numel() * C, "tokens × C")
                 .That(LastDim(wte) == C && LastDim(wpe) == C, "wte, wpe and out disagree on C")
                 .That(tokens.rank() == 2 && tokens.dim(1) <= wpe.numel() / C,
                       "tokens must be (B, T) with T at most wpe's rows")
                 .status())) {
    return;
  }
  if (out.numel() > 0) DoEncoderForward(out, tokens, wte, wpe);
}

void Ops::EncoderBackward(View dwte, View dwpe, View dout, View tokens) {
  const int64_t C = LastDim(dout);
  if (!Check(
          ArgCheck(device(), "EncoderBackward")
              .F32("dwte", dwte)
              .F32("dwpe", dwpe)
              .F32("dout", dout)
              .Given("tokens", tokens)
              .Type("tokens", tokens, kI32)
              .Elements("dout", dout, tokens.numel() * C, "tokens × C")
              .That(LastDim(dwte) == C && LastDim(dwpe) == C, "dwte, dwpe and dout disagree on C")
              .That(tokens.rank() == 2 && tokens.dim(1) <= dwpe.numel() / C,
                    "tokens must be (B, T) with T at most dwpe's rows")
              .status())) {
    return;
  }
  if (dout.numel() > 0) DoEncoderBackward(dwte, dwpe, dout, tokens);
}

void Ops::LayerNormForward(View out, View mean, View rstd, View inp, View weight, View bias) {
  const int64_t C = weight.numel();
  const int64_t N = C > 0 ? inp.numel() / C : 0;
  if (!Check(ArgCheck(device(), "LayerNormForward")
                 .Given("out", out)
                 .Optional("mean", mean)
                 .Optional("rstd", rstd)
                 .F32("inp", inp)
                 .F32("weight", weight)
                 .F32("bias", bias)
                 .Activation("out", out, bf16_matmul_inputs())
                 .Type("mean", mean, kF32)
                 .Type("rstd", rstd, kF32)
                 .That(C > 0 && LastDim(inp) == C, "inp's last dimension is not weight's C")
                 .Elements("out", out, inp.numel(), "inp's elements")
                 .Elements("bias", bias, C, "C")
                 .That(mean.empty() || mean.numel() == N, "mean must have N elements")
                 .That(rstd.empty() || rstd.numel() == N, "rstd must have N elements")
                 .status())) {
    return;
  }
  if (N > 0) DoLayerNormForward(out, mean, rstd, inp, weight, bias);
}

void Ops::LayerNormBackward(View dinp, View dweight, View dbias, View dout, View inp, View weight,
                            View mean, View rstd) {
  const int64_t C = weight.numel();
  const int64_t N = C > 0 ? inp.numel() / C : 0;
  if (!Check(ArgCheck(device(), "LayerNormBackward")
                 .F32("dinp", dinp)
                 .F32("dweight", dweight)
                 .F32("dbias", dbias)
                 .F32("dout", dout)
                 .F32("inp", inp)
                 .F32("weight", weight)
                 .F32("mean", mean)
                 .F32("rstd", rstd)
                 .That(C > 0 && LastDim(inp) == C, "inp's last dimension is not weight's C")
                 .Elements("dinp", dinp, inp.numel(), "inp's elements")
                 .Elements("dout", dout, inp.numel(), "inp's elements")
                 .Elements("dweight", dweight, C, "C")
                 .Elements("dbias", dbias, C, "C")
                 .Elements("mean", mean, N, "N")
                 .Elements("rstd", rstd, N, "N")
                 .status())) {
    return;
  }
  if (N > 0) DoLayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd);
}

void Ops::LinearForward(View out, View inp, View weight, View bias, const LinearOptions& options) {
  const int64_t K = LastDim(weight);
  const int64_t N = K > 0 ? weight.numel() / K : 0;
  const int64_t M = K > 0 ? inp.numel() / K : 0;
  if (!Check(ArgCheck(device(), "LinearForward")
                 .Given("out", out)
                 .Given("inp", inp)
                 .Given("weight", weight)
                 .Optional("bias", bias)
                 .Optional("output_gelu", options.output_gelu)
                 .Activation("out", out, bf16_matmul_inputs())
                 .That(out.dtype() != DType::kBF16 || !options.output_gelu.empty(),
                       "out may be bf16 only after GELU (output_gelu given)")
                 .Activation("inp", inp, bf16_matmul_inputs())
                 .That(inp.dtype() != DType::kBF16 || Bf16Products(options, weight),
                       kBf16InpNeedsBf16Products)
                 .Type("weight", weight, {DType::kF32, DType::kBF16})
                 .Type("bias", bias, kF32)
                 .Type("output_gelu", options.output_gelu, kF32)
                 .That(options.compute == DType::kF32 || options.compute == DType::kBF16,
                       "compute must be f32 or bf16")
                 .That(K > 0 && LastDim(inp) == K, "inp's last dimension is not weight's K")
                 .Elements("out", out, M * N, "M × N")
                 .That(bias.empty() || bias.numel() == N, "bias must have N elements")
                 .That(options.output_gelu.empty() || options.output_gelu.numel() == M * N,
                       "output_gelu must have M × N elements")
                 .status())) {
    return;
  }
  if (M > 0) DoLinearForward(out, inp, weight, bias, options);
}

void Ops::LinearBackward(View dinp, View dweight, View dbias, View dout, View inp, View weight,
                         const LinearOptions& options) {
  const int64_t K = LastDim(weight);
  const int64_t N = K > 0 ? weight.numel() / K : 0;
  const int64_t M = K > 0 ? inp.numel() / K : 0;
  if (!Check(ArgCheck(device(), "LinearBackward")
                 .F32("dinp", dinp)
                 .F32("dweight", dweight)
                 .Optional("dbias", dbias)
                 .F32("dout", dout)
                 .Given("inp", inp)
                 .Given("weight", weight)
                 .Optional("input_gelu", options.input_gelu)
                 .Type("dbias", dbias, kF32)
                 .Activation("inp", inp, bf16_matmul_inputs())
                 .That(inp.dtype() != DType::kBF16 || Bf16Products(options, weight),
                       kBf16InpNeedsBf16Products)
                 .Type("weight", weight, {DType::kF32, DType::kBF16})
                 .Type("input_gelu", options.input_gelu, kF32)
                 .That(options.compute == DType::kF32 || options.compute == DType::kBF16,
                       "compute must be f32 or bf16")
                 .That(K > 0 && LastDim(inp) == K, "inp's last dimension is not weight's K")
                 .Elements("dinp", dinp, M * K, "M × K")
                 .Elements("dweight", dweight, N * K, "N × K")
                 .Elements("dout", dout, M * N, "M × N")
                 .That(dbias.empty() || dbias.numel() == N, "dbias must have N elements")
                 .That(options.input_gelu.empty() || options.input_gelu.numel() == M * K,
                       "input_gelu must have M × K elements")
                 .status())) {
    return;
  }
  if (M > 0) DoLinearBackward(dinp, dweight, dbias, dout, inp, weight, options);
}

void Ops::AttentionForward(View out, View state, View qkv, int NH, DType products) {
  const int64_t C = LastDim(out);
  const int B = out.rank() == 3 ? static_cast<int>(out.dim(0)) : 0;
  const int T = out.rank() == 3 ? static_cast<int>(out.dim(1)) : 0;
  if (!Check(ArgCheck(device(), "AttentionForward")
                 .Given("out", out)
                 .F32("state", state)
                 .F32("qkv", qkv)
                 .Activation("out", out, bf16_matmul_inputs())
                 .That(out.rank() == 3, "out must be (B, T, C)")
                 .That(NH > 0 && C % NH == 0, "C is not a multiple of NH")
                 .Elements("qkv", qkv, 3 * out.numel(), "B × T × 3C")
                 .Elements("state", state, AttentionStateElements(B, T, C, NH), "attention state")
                 .That(products == DType::kF32 || products == DType::kBF16,
                       "products must be f32 or bf16")
                 .status())) {
    return;
  }
  if (out.numel() > 0) DoAttentionForward(out, state, qkv, NH, products);
}

void Ops::AttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                            DType products) {
  const int64_t C = LastDim(dout);
  const int B = dout.rank() == 3 ? static_cast<int>(dout.dim(0)) : 0;
  const int T = dout.rank() == 3 ? static_cast<int>(dout.dim(1)) : 0;
  if (!Check(ArgCheck(device(), "AttentionBackward")
                 .F32("dqkv", dqkv)
                 .F32("scratch", scratch)
                 .F32("dout", dout)
                 .F32("qkv", qkv)
                 .F32("state", state)
                 .That(dout.rank() == 3, "dout must be (B, T, C)")
                 .That(NH > 0 && C % NH == 0, "C is not a multiple of NH")
                 .Elements("qkv", qkv, 3 * dout.numel(), "B × T × 3C")
                 .Elements("dqkv", dqkv, 3 * dout.numel(), "B × T × 3C")
                 .Elements("state", state, AttentionStateElements(B, T, C, NH), "attention state")
                 .That(scratch.numel() >= AttentionScratchElements(B, T, C, NH),
                       "scratch is smaller than AttentionScratchElements")
                 .That(products == DType::kF32 || products == DType::kBF16,
                       "products must be f32 or bf16")
                 .status())) {
    return;
  }
  if (dout.numel() > 0) DoAttentionBackward(dqkv, scratch, dout, qkv, state, NH, products);
}

void Ops::GeluForward(View out, View inp) {
  if (!Check(ArgCheck(device(), "GeluForward")
                 .F32("out", out)
                 .F32("inp", inp)
                 .Elements("out", out, inp.numel(), "inp's elements")
                 .status())) {
    return;
  }
  if (out.numel() > 0) DoGeluForward(out, inp);
}

void Ops::GeluBackward(View dinp, View inp, View dout) {
  if (!Check(ArgCheck(device(), "GeluBackward")
                 .F32("dinp", dinp)
                 .F32("inp", inp)
                 .F32("dout", dout)
                 .Elements("dinp", dinp, inp.numel(), "inp's elements")
                 .Elements("dout", dout, inp.numel(), "inp's elements")
                 .status())) {
    return;
  }
  if (dinp.numel() > 0) DoGeluBackward(dinp, inp, dout);
}

void Ops::CrossEntropy(View losses, View logits, View targets, int V, float dlogits_scale) {
  const int64_t N = targets.numel();
  const int64_t Vp = LastDim(logits);
  if (!Check(ArgCheck(device(), "CrossEntropy")
                 .Optional("losses", losses)
                 .F32("logits", logits)
                 .Given("targets", targets)
                 .Type("losses", losses, kF32)
                 .Type("targets", targets, kI32)
                 .That(V > 0 && V <= Vp, absl::StrCat("V = ", V, " is not in [1, Vp = ", Vp, "]"))
                 .Elements("logits", logits, N * Vp, "N × Vp")
                 .That(losses.empty() || losses.numel() == N, "losses must have N elements")
                 .status())) {
    return;
  }
  if (N > 0) DoCrossEntropy(losses, logits, targets, V, dlogits_scale);
}

absl::StatusOr<double> Ops::MeanLoss(View losses) {
  if (!Check(ArgCheck(device(), "MeanLoss")
                 .F32("losses", losses)
                 .That(losses.numel() > 0, "no losses")
                 .status())) {
    return status_;
  }
  absl::StatusOr<double> mean = DoMeanLoss(losses);
  if (!mean.ok()) Fail(mean.status());
  return mean;
}

void Ops::RmsNormForward(View out, View rstd, View inp, View weight, float eps) {
  const int64_t C = weight.numel();
  const int64_t N = C > 0 ? inp.numel() / C : 0;
  if (!Check(ArgCheck(device(), "RmsNormForward")
                 .Given("out", out)
                 .Optional("rstd", rstd)
                 .F32("inp", inp)
                 .F32("weight", weight)
                 .Activation("out", out, bf16_matmul_inputs())
                 .That(out.dtype() != DType::kBF16 || Apart(out, inp), "a bf16 out overlaps inp")
                 .Type("rstd", rstd, kF32)
                 .That(C > 0 && LastDim(inp) == C, "inp's last dimension is not weight's C")
                 .Elements("out", out, inp.numel(), "inp's elements")
                 .That(rstd.empty() || rstd.numel() == N, "rstd must have N elements")
                 .That(eps >= 0, absl::StrCat("eps = ", eps, " is negative"))
                 .status())) {
    return;
  }
  if (N > 0) DoRmsNormForward(out, rstd, inp, weight, eps);
}

void Ops::RmsNormBackward(View dinp, View dweight, View dout, View inp, View weight, View rstd) {
  const int64_t C = weight.numel();
  const int64_t N = C > 0 ? inp.numel() / C : 0;
  if (!Check(ArgCheck(device(), "RmsNormBackward")
                 .F32("dinp", dinp)
                 .F32("dweight", dweight)
                 .F32("dout", dout)
                 .F32("inp", inp)
                 .F32("weight", weight)
                 .F32("rstd", rstd)
                 .That(C > 0 && LastDim(inp) == C, "inp's last dimension is not weight's C")
                 .Elements("dinp", dinp, inp.numel(), "inp's elements")
                 .Elements("dout", dout, inp.numel(), "inp's elements")
                 .Elements("dweight", dweight, C, "C")
                 .Elements("rstd", rstd, N, "N")
                 .status())) {
    return;
  }
  if (N > 0) DoRmsNormBackward(dinp, dweight, dout, inp, weight, rstd);
}

void Ops::RopeTable(View table, double theta) {
  const int64_t D = LastDim(table);
  if (!Check(ArgCheck(device(), "RopeTable")
                 .F32("table", table)
                 .That(table.rank() == 2, "table must be (max_pos, D)")
                 .That(D > 0 && D % 2 == 0, absl::StrCat("D = ", D, " is not even and positive"))
                 .That(theta > 0 && std::isfinite(theta),
                       absl::StrCat("theta = ", theta, " is not positive and finite"))
                 .status())) {
    return;
  }
  if (table.numel() > 0) DoRopeTable(table, theta);
}

namespace {

// The checks RopeForward and RopeBackward share: (B, T, W) rows of which the first n_heads·D are
// rotated, D and max_pos from the table.
absl::Status RopeChecks(Device device, const char* op, const char* out_name, const View& out,
                        const char* inp_name, const View& inp, const View& table, int n_heads,
                        int pos_offset) {
  const int64_t D = LastDim(table);
  const int64_t max_pos = table.rank() == 2 ? table.dim(0) : 0;
  const bool ranks = out.rank() == 3 && inp.rank() == 3;
  return ArgCheck(device, op)
      .Given(out_name, out)
      .Given(inp_name, inp)
      .Given("table", table)
      .Type(out_name, out, kF32)
      .Type(inp_name, inp, kF32)
      .Type("table", table, kF32)
      .That(table.rank() == 2 && D > 0 && D % 2 == 0,
            "table must be (max_pos, D) with D even and positive")
      .That(ranks, absl::StrCat(out_name, " and ", inp_name, " must be (B, T, W)"))
      .That(ranks && out.dim(0) == inp.dim(0) && out.dim(1) == inp.dim(1),
            absl::StrCat(out_name, " and ", inp_name, " disagree on B or T"))
      .That(n_heads > 0 && ranks && n_heads * D <= out.dim(2) && n_heads * D <= inp.dim(2),
            absl::StrCat("n_heads = ", n_heads, " heads of D = ", D, " do not fit in the rows"))
      .That(pos_offset >= 0 && ranks && pos_offset + inp.dim(1) <= max_pos,
            absl::StrCat("positions [", pos_offset, ", ", pos_offset + (ranks ? inp.dim(1) : 0),
                         ") are not all in the table's [0, ", max_pos, ")"))
      .That(!ranks || out.data() != inp.data() || out.dim(2) == inp.dim(2),
            absl::StrCat(out_name, " aliases ", inp_name, " with another row length"))
      .status();
}

}  // namespace

void Ops::RopeForward(View out, View inp, View table, int n_heads, int pos_offset) {
  if (!Check(RopeChecks(device(), "RopeForward", "out", out, "inp", inp, table, n_heads,
                        pos_offset))) {
    return;
  }
  if (inp.numel() > 0) DoRopeForward(out, inp, table, n_heads, pos_offset);
}

void Ops::RopeBackward(View dinp, View dout, View table, int n_heads, int pos_offset) {
  if (!Check(RopeChecks(device(), "RopeBackward", "dinp", dinp, "dout", dout, table, n_heads,
                        pos_offset))) {
    return;
  }
  if (dout.numel() > 0) DoRopeBackward(dinp, dout, table, n_heads, pos_offset);
}

void Ops::SwigluForward(View out, View inp) {
  const int64_t I = LastDim(out);
  if (!Check(ArgCheck(device(), "SwigluForward")
                 .Given("out", out)
                 .F32("inp", inp)
                 .Activation("out", out, bf16_matmul_inputs())
                 .That(I > 0 && LastDim(inp) == 2 * I, "inp's last dimension is not 2 × out's I")
                 .Elements("inp", inp, 2 * out.numel(), "N × 2I")
                 .That(Apart(out, inp), "out overlaps inp")
                 .status())) {
    return;
  }
  if (out.numel() > 0) DoSwigluForward(out, inp);
}

void Ops::SwigluBackward(View dinp, View inp, View dout) {
  const int64_t I = LastDim(dout);
  if (!Check(ArgCheck(device(), "SwigluBackward")
                 .F32("dinp", dinp)
                 .F32("inp", inp)
                 .F32("dout", dout)
                 .That(I > 0 && LastDim(inp) == 2 * I, "inp's last dimension is not 2 × dout's I")
                 .Elements("inp", inp, 2 * dout.numel(), "N × 2I")
                 .Elements("dinp", dinp, 2 * dout.numel(), "N × 2I")
                 .That(dinp.data() == inp.data() || dinp.data() == nullptr ||
                           static_cast<const char*>(dinp.data()) + dinp.bytes() <=
                               static_cast<const char*>(inp.data()) ||
                           static_cast<const char*>(inp.data()) + inp.bytes() <=
                               static_cast<const char*>(dinp.data()),
                       "dinp overlaps inp without aliasing it exactly")
                 .status())) {
    return;
  }
  if (dout.numel() > 0) DoSwigluBackward(dinp, inp, dout);
}

namespace {

// The shape checks of both GQA passes: y (B, T, NH·HS) is out or dout.
ArgCheck& GqaShapes(ArgCheck& check, const char* y_name, const View& y, const char* qkv_name,
                    const View& qkv, int NH, int NKV) {
  const int64_t C = LastDim(y);
  const int64_t HS = NH > 0 ? C / NH : 0;
  return check.That(y.rank() == 3, absl::StrCat(y_name, " must be (B, T, NH × HS)"))
      .That(NH > 0 && NKV > 0 && NH % NKV == 0,
            absl::StrCat("NKV = ", NKV, " does not divide NH = ", NH))
      .That(C > 0 && NH > 0 && C % NH == 0, "C is not a multiple of NH")
      .Elements(qkv_name, qkv, y.numel() / std::max<int64_t>(C, 1) * (NH + 2 * NKV) * HS,
                "B × T × (NH + 2·NKV)·HS");
}

}  // namespace

void Ops::GqaAttentionForward(View out, View state, View scratch, View qkv, int NH, int NKV) {
  ArgCheck check(device(), "GqaAttentionForward");
  check.Given("out", out)
      .Given("state", state)
      .Given("scratch", scratch)
      .Given("qkv", qkv)
      .Activation("out", out, bf16_matmul_inputs())
      .Type("state", state, kF32)
      .Type("scratch", scratch, kF32)
      .Type("qkv", qkv, kF32);
  GqaShapes(check, "out", out, "qkv", qkv, NH, NKV);
  if (check.status().ok()) {
    const int B = static_cast<int>(out.dim(0)), T = static_cast<int>(out.dim(1));
    const int HS = static_cast<int>(out.dim(2) / NH);
    check.Elements("state", state, GqaStateElements(B, T, NH, NKV, HS), "GQA state")
        .That(scratch.numel() >= GqaScratchElements(B, T, NH, NKV, HS),
              "scratch is smaller than GqaScratchElements");
  }
  if (!Check(check.status())) return;
  if (out.numel() > 0) DoGqaAttentionForward(out, state, scratch, qkv, NH, NKV);
}

void Ops::GqaAttentionBackward(View dqkv, View scratch, View dout, View qkv, View state, int NH,
                               int NKV) {
  ArgCheck check(device(), "GqaAttentionBackward");
  check.Given("dqkv", dqkv)
      .Given("scratch", scratch)
      .Given("dout", dout)
      .Given("qkv", qkv)
      .Given("state", state)
      .Type("dqkv", dqkv, kF32)
      .Type("scratch", scratch, kF32)
      .Type("dout", dout, kF32)
      .Type("qkv", qkv, kF32)
      .Type("state", state, kF32);
  GqaShapes(check, "dout", dout, "qkv", qkv, NH, NKV);
  check.Elements("dqkv", dqkv, qkv.numel(), "qkv's elements");
  if (check.status().ok()) {
    const int B = static_cast<int>(dout.dim(0)), T = static_cast<int>(dout.dim(1));
    const int HS = static_cast<int>(dout.dim(2) / NH);
    check.Elements("state", state, GqaStateElements(B, T, NH, NKV, HS), "GQA state")
        .That(scratch.numel() >= GqaScratchElements(B, T, NH, NKV, HS),
              "scratch is smaller than GqaScratchElements");
  }
  if (!Check(check.status())) return;
  if (dout.numel() > 0) DoGqaAttentionBackward(dqkv, scratch, dout, qkv, state, NH, NKV);
}

void Ops::AdamW(const AdamWViews& v, const AdamWArgs& args) {
  const int64_t n = v.param.numel();
  if (!Check(ArgCheck(device(), "AdamW")
                 .Given("param", v.param)
                 .Given("grad", v.grad)
                 .Given("m", v.m)
                 .Given("v", v.v)
                 .Optional("param16", v.param16)
                 .Type("param", v.param, kF32)
                 .Type("grad", v.grad, kFloat)
                 .Type("m", v.m, kF32)
                 .Type("v", v.v, kF32)
                 .Type("param16", v.param16, {DType::kBF16, DType::kF16})
                 .Elements("grad", v.grad, n, "param's elements")
                 .Elements("m", v.m, n, "param's elements")
                 .Elements("v", v.v, n, "param's elements")
                 .That(v.param16.empty() || v.param16.numel() == n,
                       "param16 must have param's elements")
                 .status())) {
    return;
  }
  if (n > 0) DoAdamW(v, args);
}

}  // namespace dstrain::device
