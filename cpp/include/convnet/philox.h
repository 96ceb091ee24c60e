// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator. The CPU and CUDA backends both draw dropout masks from it, so a
// given (seed, step, index) yields the same number on either device.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define CONVNET_HD __host__ __device__ __forceinline__
#else
#define CONVNET_HD inline
#endif

namespace convnet {

struct Philox4 {
  uint32_t v[4];
};

CONVNET_HD uint32_t philox_mulhi(uint32_t a, uint32_t b, uint32_t* lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  *lo = uint32_t(p);
  return uint32_t(p >> 32);
}

// counter = (c0, c1, c2, c3), key = (k0, k1): ten rounds.
CONVNET_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                 uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t lo0, lo1;
    uint32_t hi0 = philox_mulhi(M0, c0, &lo0);
    uint32_t hi1 = philox_mulhi(M1, c2, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) for element `index` of draw `step` under `seed`. Each Philox call yields four
// numbers: element i uses word i % 4 of the block for counter i / 4.
CONVNET_HD float philox_uniform(uint64_t seed, uint64_t step, uint64_t index) {
  uint64_t block = index >> 2;
  Philox4 r = philox4x32_10(uint32_t(block), uint32_t(block >> 32), uint32_t(step),
                            uint32_t(step >> 32), uint32_t(seed), uint32_t(seed >> 32));
  return float(r.v[index & 3] >> 8) * (1.0f / 16777216.0f);  // 24 random bits
}

}  // namespace convnet
