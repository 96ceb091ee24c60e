// The sum-of-squares cost's forward reduction on the CPU: each case's sum of squares over its
// rows, in double, rows in order (the order the CUDA kernel keeps too).
#include <vector>

#include "cpu/cpu_ops.h"

namespace convnet::cpu {

void sum_squares_per_case(const float* x, float* out, int64_t rows, int batch) {
  std::vector<double> sums(size_t(batch), 0.0);
  // Row by row: consecutive cases are consecutive in memory (CHWN), so the inner loop streams.
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * batch;
    for (int n = 0; n < batch; ++n) sums[size_t(n)] += double(row[n]) * row[n];
  }
  for (int n = 0; n < batch; ++n) out[n] = float(sums[size_t(n)]);
}

}  // namespace convnet::cpu
