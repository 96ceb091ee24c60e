# The instruction set convnet_core's C++ is compiled for: CONVNET_MARCH, the one place it is set.
#   native    (the default for a plain CMake build) tune for this machine's CPU: -march=native.
#   portable  (what pyproject.toml sets, so every `pip install .` / `pip wheel .`) the x86-64
#             baseline that any 64-bit x86 CPU runs (-march=x86-64, as manylinux wheels), with the
#             hot hand-written loops of cpp/src/cpu compiled once more for x86-64-v3 (AVX2, FMA)
#             and x86-64-v4 (AVX-512) and chosen at load time (cpu/simd_dispatch.h). A wheel built
#             on one CPU then runs on any other: no SIGILL, and no slower than native (see
#             bench/RESULTS.md, 2026-12-03). Elsewhere than x86-64 it is the compiler's default.
#   anything else is passed on as -march=VALUE (x86-64-v3, skylake-avx512, ...).
set(CONVNET_MARCH "native" CACHE STRING "CPU instruction set: native, portable, or a -march value")

function(convnet_march target)
  if(NOT CONVNET_MARCH STREQUAL "portable")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=${CONVNET_MARCH}>)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-march=x86-64 -mtune=generic>)
    target_compile_definitions(${target} PRIVATE CONVNET_RUNTIME_DISPATCH=1)
  endif()
  target_compile_definitions(${target} PRIVATE CONVNET_MARCH="${CONVNET_MARCH}")
endfunction()
