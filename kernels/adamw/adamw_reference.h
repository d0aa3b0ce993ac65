// Float64 reference for adamw.h: the textbook AdamW / Adam-with-L2 update, element by element.
#pragma once

#include <cstdint>

#include "kernels/adamw/adamw.h"

namespace dstrain::kernels {

void AdamWUpdateReference(double* param,       // (n) updated in place
                          const double* grad,  // (n)
                          double* m,           // (n) updated in place
                          double* v,           // (n) updated in place
                          int64_t n, const AdamWArgs& a);

}  // namespace dstrain::kernels
