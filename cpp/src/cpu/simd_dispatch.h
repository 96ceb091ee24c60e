// CONVNET_CPU_CLONES: marks a hot CPU loop for run-time dispatch in a portable build
// (CONVNET_MARCH=portable, see cmake/ConvnetMarch.cmake; what `pip install .` builds).
//
// Such a build compiles for the x86-64 baseline, so a wheel runs on any x86-64 CPU. The few loops
// that the compiler vectorises and that take measurable time in training (im2col/col2im, LRN,
// pooling, neurons and biases, dropout, SGD, axpby) carry this macro: GCC compiles each of them
// three times -- baseline, x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512) -- and an ifunc resolver
// picks one from cpuid when the library is loaded (target_clones). We chose this over separate
// per-ISA translation units because it keeps each loop where it is, written once. An OpenMP
// parallel region inside a cloned function is outlined into a function that GCC (12) clones and
// dispatches too; tests/python/test_portable.py checks in the built module that the hot loops'
// parallel bodies have AVX2/AVX-512 clones and that nothing outside the clones uses AVX.
// The GEMMs are OpenBLAS's, which dispatches at run time itself.
//
// The macro is empty in a native build (everything already targets this CPU), off x86-64, and
// for compilers other than GCC.
#pragma once

#if defined(CONVNET_RUNTIME_DISPATCH) && defined(__x86_64__) && defined(__GNUC__) && \
    !defined(__clang__)
#define CONVNET_CPU_CLONES \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define CONVNET_CPU_CLONES
#endif
