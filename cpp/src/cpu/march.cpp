// What this build's CPU code was compiled for (CONVNET_MARCH; cmake/ConvnetMarch.cmake).
#include "cpu/cpu_ops.h"

namespace convnet::cpu {

const char* march() { return CONVNET_MARCH; }

}  // namespace convnet::cpu
