// Float64 references for residual.h: obviously correct loops, the specification the vectorised
// kernels are tested against.
#pragma once

#include <cstdint>

namespace dstrain::kernels {

void ResidualForwardReference(double* out,      // (n)
                              const double* a,  // (n)
                              const double* b,  // (n)
                              int64_t n);

double SumSquaresReference(const double* x,  // (n)
                           int64_t n);

}  // namespace dstrain::kernels
