// The one matrix product of attention_bf16.h: bf16 operands, f32 accumulation, in AMX tiles or in
// portable code that adds the same products in the same order.
//
//   C (m × n, f32, row stride ldc)  =  [C +]  A (m × k, bf16, row stride lda) · B (k × n)
//
// B is given pair-interleaved, the layout AMX's TDPBF16PS reads: row kk / 2 of `b` (stride ldb
// elements, ldb >= 2n) holds B[kk][j] at 2j + kk % 2, so each 32-bit word is a pair of
// consecutive k for one column. m, n and k must be multiples of 32 (callers pad with zeros).
//
// Arithmetic, per element and per 32 consecutive k (one TDPBF16PS instruction's share): the even
// and the odd products are summed apart, each in order from 0 in f32 (every product of two bf16
// values is exact in f32), and their sum is added to the element, which starts from 0 (or its C
// value when accumulating); every sum rounds to nearest even. That is how the instruction rounds
// on the machine this was written on (an Intel Xeon with AMX, family 6 model 167 as its VM reports
// it: 2,048 of 2,048 elements over chained instructions agreed with this model and not with a
// single running sum); attention_bf16_test asserts it wherever AMX runs. AMX also treats subnormal
// inputs and results as zero, which the portable route does not, so the two agree bitwise wherever
// nothing is subnormal.
//
// Thread-safety: tile state is per thread. AMX products run inside a TileScope on the calling
// thread, which configures the tiles once for any number of products (configuring them per
// product cost more than the products at attention's sizes).
#pragma once

#include <cstdint>

namespace dstrain::kernels {

enum class TileRoute {
  kAmx,       // AMX tiles: only where AmxUsable() (cpu_features.h)
  kPortable,  // plain loops: any machine, for tests and for checking the AMX route
};

// Configures this thread's tiles for kAmx products on construction and releases them on
// destruction (nothing for kPortable). Scopes do not nest.
class TileScope {
 public:
  explicit TileScope(TileRoute route);
  ~TileScope();
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;

 private:
  TileRoute route_;
};

void TileProductBf16(TileRoute route, float* c, int64_t ldc, const uint16_t* a, int64_t lda,
                     const uint16_t* b, int64_t ldb, int m, int n, int k, bool accumulate);

// The layout changes the products' operands need, as data movement only (AVX-512 where the ISA
// cap allows, plain loops otherwise; the same bits either way).
//
// dst (cols × rows words, row stride ldd) = the transpose of src (rows × cols 32-bit words, row
// stride lds). A bf16 matrix seen as words of two columns transposes into its pair-interleaved
// transpose; one seen after InterleaveRowPairs transposes into its plain transpose.
void TransposeWords(void* dst, int64_t ldd, const void* src, int64_t lds, int rows, int cols);

// dst = src (rows × cols bf16, row stride lds) pair-interleaved: pair-row r / 2 (stride ldd
// elements) holds src[r][j] at 2j + r % 2. rows even, cols a multiple of 32.
void InterleaveRowPairs(uint16_t* dst, int64_t ldd, const uint16_t* src, int64_t lds, int rows,
                        int cols);

}  // namespace dstrain::kernels
