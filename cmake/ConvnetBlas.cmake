# The CPU BLAS, as the interface target `convnet_blas`. Two sources:
#  SYSTEM          a CBLAS from the system (Debian: libopenblas-dev), found through FindBLAS + cblas.h
#  SCIPY_OPENBLAS  the OpenBLAS inside the `scipy-openblas32` Python wheel (symbols prefixed scipy_),
#                  for machines without apt (the GPU image); located by asking Python.
# AUTO takes the wheel when Python can import it, the system one otherwise: the wheel's OpenBLAS
# is recent, while Debian 12's (0.3.21) does not recognise recent Xeons and falls back to its
# SSE3 (Prescott) kernels, 3-4x slower.
add_library(convnet_blas INTERFACE)

function(_convnet_try_scipy_openblas out)
  find_package(Python 3.9 QUIET COMPONENTS Interpreter)
  if(NOT Python_Interpreter_FOUND)
    set(${out} FALSE PARENT_SCOPE)
    return()
  endif()
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c "import scipy_openblas32 as s; print(s.get_include_dir()); print(s.get_lib_dir()); print(s.get_library())"
    OUTPUT_VARIABLE _info RESULT_VARIABLE _rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _rc EQUAL 0)
    set(${out} FALSE PARENT_SCOPE)
    return()
  endif()
  string(REPLACE "\n" ";" _info "${_info}")
  list(GET _info 0 _inc)
  list(GET _info 1 _libdir)
  list(GET _info 2 _lib)
  target_include_directories(convnet_blas INTERFACE ${_inc})
  target_link_directories(convnet_blas INTERFACE ${_libdir})
  target_link_libraries(convnet_blas INTERFACE ${_lib})
  target_compile_definitions(convnet_blas INTERFACE CONVNET_SCIPY_OPENBLAS=1)
  set(CONVNET_BLAS_RUNTIME_DIR ${_libdir} PARENT_SCOPE)
  set(CMAKE_BUILD_RPATH ${CMAKE_BUILD_RPATH} ${_libdir} PARENT_SCOPE)
  set(${out} TRUE PARENT_SCOPE)
endfunction()

set(_blas_found FALSE)
if(CONVNET_BLAS STREQUAL "AUTO" OR CONVNET_BLAS STREQUAL "SCIPY_OPENBLAS")
  _convnet_try_scipy_openblas(_blas_found)
  if(_blas_found)
    message(STATUS "convnet: CPU BLAS = scipy-openblas32 wheel (${CONVNET_BLAS_RUNTIME_DIR})")
  elseif(CONVNET_BLAS STREQUAL "SCIPY_OPENBLAS")
    message(FATAL_ERROR "convnet: CONVNET_BLAS=SCIPY_OPENBLAS but `import scipy_openblas32` failed "
                        "(pip install scipy-openblas32)")
  endif()
endif()
if(NOT _blas_found AND (CONVNET_BLAS STREQUAL "AUTO" OR CONVNET_BLAS STREQUAL "SYSTEM"))
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS QUIET)
  # Prefer OpenBLAS's own cblas.h over whatever the alternatives system points cblas.h at.
  find_path(CONVNET_CBLAS_INCLUDE cblas.h
            PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread
                  /usr/include/openblas NO_DEFAULT_PATH)
  find_path(CONVNET_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas)
  if(BLAS_FOUND AND CONVNET_CBLAS_INCLUDE)
    target_link_libraries(convnet_blas INTERFACE ${BLAS_LIBRARIES})
    target_include_directories(convnet_blas INTERFACE ${CONVNET_CBLAS_INCLUDE})
    message(STATUS "convnet: CPU BLAS = system OpenBLAS (${BLAS_LIBRARIES})")
    set(_blas_found TRUE)
  elseif(CONVNET_BLAS STREQUAL "SYSTEM")
    message(FATAL_ERROR "convnet: no system OpenBLAS with cblas.h (apt-get install libopenblas-dev)")
  endif()
endif()
if(NOT _blas_found)
  message(FATAL_ERROR "convnet: no CPU BLAS found. Install the scipy-openblas32 wheel "
                      "(pip install scipy-openblas32) or libopenblas-dev (apt).")
endif()
