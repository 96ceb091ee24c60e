// cuda_emu: running a kernel. Blocks run one after another; the threads of a block are fibers
// with their own stacks, switched by a few instructions of x86-64 assembly (swapcontext would
// make a system call per switch). A fiber runs until it finishes or waits at __syncthreads or a
// warp shuffle; when every live thread of the block (of the warp) waits there, they go on.
#include <sys/mman.h>

#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"

// AddressSanitizer is told about every stack switch (its fiber protocol), and each fiber stack is
// unpoisoned before reuse, so an ASan build reports the kernels' own errors, not the switching.
#if defined(CUDA_EMU_ASAN)  // (cuda_runtime.h)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "cuda_emu switches fibers with x86-64 assembly"
#endif

// cuda_emu_switch(save, load): saves the callee-saved registers on the current stack, stores the
// stack pointer in *save, and continues on the stack `load` (as left by an earlier switch).
extern "C" void cuda_emu_switch(void** save, void* load);
asm(R"(
  .text
  .globl cuda_emu_switch
  .type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch, .-cuda_emu_switch
)");

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace cuda_emu {

void check_kernel_pointers(const Kernel& k, int device);  // runtime.cpp

namespace {

constexpr size_t kStackBytes = size_t(64) << 10;

enum class Wait { Running, Block, Warp, Done };

struct Fiber {
  uint3 thread;
  char* stack = nullptr;  // its lowest address; kStackBytes long
  void* asan_fake_stack = nullptr;
  void* sp = nullptr;
  Wait wait = Wait::Running;
  uint64_t shuffle_bits = 0;
  int shuffle_delta = 0;
  int barriers = 0;  // __syncthreads passed
};

// The block being run.
struct Block {
  Kernel* kernel = nullptr;
  std::vector<Fiber> fibers;
  Fiber* running = nullptr;
  void* scheduler_sp = nullptr;
  const void* scheduler_stack = nullptr;  // for ASan: the scheduler's stack, learnt on the way in
  size_t scheduler_stack_bytes = 0;
  void* asan_fake_stack = nullptr;
  std::exception_ptr error;
};
Block* block = nullptr;

// Room for `fibers` stacks, mapped outside the heap (an ASan build keeps stack poison there).
char* stacks(size_t fibers) {
  static char* base = nullptr;
  static size_t bytes = 0;
  if (bytes < fibers * kStackBytes) {
    if (base) munmap(base, bytes);
    bytes = fibers * kStackBytes;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      base = nullptr;
      bytes = 0;
      throw std::runtime_error("cuda_emu: cannot map fiber stacks");
    }
    base = static_cast<char*>(p);
  }
  return base;
}

// Between barriers the threads of a block run one after another, in index order, or in reverse
// with CUDA_EMU_ORDER=reverse (blocks too): a kernel that reads another thread's write without a
// barrier between them sees it in one order and not in the other, so running the tests both
// ways shows a missing __syncthreads (or a race between blocks).
bool reverse_order() {
  static const bool reverse = [] {
    const char* e = std::getenv("CUDA_EMU_ORDER");
    return e && std::string(e) == "reverse";
  }();
  return reverse;
}

// Scheduler -> fiber f, until f waits or finishes.
void enter(Block& b, Fiber& f) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(&b.asan_fake_stack, f.stack, kStackBytes);
#endif
  cuda_emu_switch(&b.scheduler_sp, f.sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(b.asan_fake_stack, nullptr, nullptr);
#endif
}

// Fiber f -> the scheduler; returns when f is entered again (never when it has finished).
void leave(Fiber& f, bool finished) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(finished ? nullptr : &f.asan_fake_stack, block->scheduler_stack,
                                 block->scheduler_stack_bytes);
#else
  (void)finished;
#endif
  cuda_emu_switch(&f.sp, block->scheduler_sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &block->scheduler_stack,
                                  &block->scheduler_stack_bytes);
#endif
}

[[noreturn]] void fiber_main() {
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &block->scheduler_stack, &block->scheduler_stack_bytes);
#endif
  Fiber* f = block->running;
  try {
    block->kernel->run_thread();
  } catch (...) {
    if (!block->error) block->error = std::current_exception();
  }
  f->wait = Wait::Done;
  leave(*f, true);
  __builtin_unreachable();
}

void wait_here(Wait w) {
  if (!block) throw std::logic_error("cuda_emu: a barrier or shuffle outside a kernel");
  Fiber* f = block->running;
  f->wait = w;
  leave(*f, false);
}

// Lets the threads of each warp whose live threads all wait at a shuffle go on, with their
// values exchanged. Returns whether any did.
bool release_warps(const std::string& where) {
  bool released = false;
  auto& fs = block->fibers;
  for (size_t w0 = 0; w0 < fs.size(); w0 += 32) {
    const size_t w1 = std::min(fs.size(), w0 + 32);
    bool all = true, any = false;
    for (size_t i = w0; i < w1; ++i) {
      if (fs[i].wait == Wait::Done) continue;
      if (fs[i].wait != Wait::Warp) all = false;
      else any = true;
    }
    if (!all || !any) continue;
    std::vector<uint64_t> out(w1 - w0);
    for (size_t i = w0; i < w1; ++i) {
      if (fs[i].wait != Wait::Warp) continue;
      const size_t src = i + size_t(fs[i].shuffle_delta);
      if (src - w0 >= 32 || src >= w1) {  // past the warp's end: the thread's own value
        out[i - w0] = fs[i].shuffle_bits;
      } else if (fs[src].wait != Wait::Warp) {
        throw std::logic_error("cuda_emu: kernel launched at " + where + ": thread " +
                               std::to_string(i) + " shuffles from thread " + std::to_string(src) +
                               ", which has exited");
      } else {
        out[i - w0] = fs[src].shuffle_bits;
      }
    }
    for (size_t i = w0; i < w1; ++i)
      if (fs[i].wait == Wait::Warp) {
        fs[i].shuffle_bits = out[i - w0];
        fs[i].wait = Wait::Running;
      }
    released = true;
  }
  return released;
}

void run_block(Kernel& k, uint3 block_index) {
  const dim3 bd = k.config.block;
  const size_t n = size_t(bd.x) * bd.y * bd.z;
  Block b;
  b.kernel = &k;
  b.fibers.resize(n);
  char* stack_base = stacks(n);
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.stack = stack_base + i * kStackBytes;
#ifdef CUDA_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);  // frames left by an earlier block
#endif
    f.thread = uint3{unsigned(i % bd.x), unsigned(i / bd.x % bd.y), unsigned(i / (size_t(bd.x) * bd.y))};
    // The stack as cuda_emu_switch leaves it: six registers, then fiber_main as the return
    // address, entered with the stack 8 bytes off 16-byte alignment, as after a call.
    auto top = reinterpret_cast<uintptr_t>(stack_base + (i + 1) * kStackBytes) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&fiber_main);
    for (int r = 0; r < 6; ++r) *--sp = nullptr;
    f.sp = sp;
  }
  // `block` is the running block while this one runs, whichever way run_block leaves.
  struct Current {
    Block* outer;
    ~Current() { block = outer; }
  } restore{block};
  block = &b;
  blockIdx = block_index;
  blockDim = bd;
  gridDim = k.config.grid;
  for (;;) {
    bool ran = false;
    for (size_t i = 0; i < n; ++i) {
      Fiber& f = b.fibers[reverse_order() ? n - 1 - i : i];
      if (f.wait != Wait::Running) continue;
      b.running = &f;
      threadIdx = f.thread;
      enter(b, f);
      ran = true;
      if (b.error) break;
    }
    if (b.error) break;
    bool done = true, at_block = false, at_warp = false;
    for (const Fiber& f : b.fibers) {
      done = done && f.wait == Wait::Done;
      at_block = at_block || f.wait == Wait::Block;
      at_warp = at_warp || f.wait == Wait::Warp;
    }
    if (done) break;
    if (at_warp && release_warps(k.where)) continue;
    if (at_block && !at_warp) {  // every live thread is at __syncthreads
      // A thread that has exited without reaching it makes the barrier undefined on a GPU
      // (the programming guide: a hang or worse), so it is an error here.
      int passed = 0;
      for (const Fiber& f : b.fibers)
        if (f.wait == Wait::Block) passed = f.barriers;
      for (size_t i = 0; i < b.fibers.size(); ++i)
        if (b.fibers[i].wait == Wait::Done && b.fibers[i].barriers <= passed)
          throw std::logic_error(std::string("cuda_emu: kernel launched at ") + k.where +
                                 ": thread " + std::to_string(i) + " exited without reaching a "
                                 "__syncthreads that other threads wait at: deadlock or undefined "
                                 "on a GPU");
      for (Fiber& f : b.fibers)
        if (f.wait == Wait::Block) {
          f.wait = Wait::Running;
          ++f.barriers;
        }
      continue;
    }
    if (!ran)
      throw std::logic_error(std::string("cuda_emu: kernel launched at ") + k.where +
                             ": threads wait at different barriers (a __syncthreads or shuffle "
                             "not reached by every thread): deadlock on a GPU");
  }
  if (b.error) std::rethrow_exception(b.error);
}

}  // namespace

void syncthreads() { wait_here(Wait::Block); }

uint64_t shfl_down_bits(uint64_t bits, int delta) {
  Fiber* f = block ? block->running : nullptr;
  if (!f) throw std::logic_error("cuda_emu: a shuffle outside a kernel");
  f->shuffle_bits = bits;
  f->shuffle_delta = delta;
  wait_here(Wait::Warp);
  return block->running->shuffle_bits;
}

void run_kernel(Kernel& k, int device) {
  check_kernel_pointers(k, device);
  // One kernel at a time in the process: the block being run, its fibers' stacks and the
  // threadIdx/blockIdx of the kernel code are shared (host threads of several devices launch).
  static std::mutex one_at_a_time;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  const dim3 g = k.config.grid;
  // Blocks too go in reverse under CUDA_EMU_ORDER=reverse: two blocks writing one element, or one
  // reading what another writes, then give a different result.
  const bool rev = reverse_order();
  for (unsigned i = 0; i < g.z; ++i)
    for (unsigned j = 0; j < g.y; ++j)
      for (unsigned l = 0; l < g.x; ++l)
        run_block(k, rev ? uint3{g.x - 1 - l, g.y - 1 - j, g.z - 1 - i} : uint3{l, j, i});
}

}  // namespace cuda_emu
