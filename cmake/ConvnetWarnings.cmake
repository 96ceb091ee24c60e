# Warnings for our own targets (never for third-party code).
set(CONVNET_MARCH "native" CACHE STRING "-march for the CPU kernels (native, x86-64-v3, ...)")
function(convnet_warnings target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()
