// The CUDA simulator's scheduler (fibers per thread block) and the subset of the CUDA runtime API
// that this project's launchers and tests call. See sim.h for what is simulated and what is not.
//
// The runtime functions are defined with the exact names cuda_runtime_api.h declares, so code
// built for the simulator calls them instead of libcudart's (this library is alwayslink and comes
// before -lcudart on the link line).
//
// Fibers start on their own stacks through makecontext/swapcontext, but switch with GCC's
// __builtin_setjmp/__builtin_longjmp, which save and restore only the frame, stack and resume
// addresses (the compiler spills every other live register around the call): no signal-mask
// system call as in swapcontext, and none of glibc's longjmp unwinding bookkeeping, which was a
// tenth of a simulated training step (the scheduler switches several times per simulated thread). A
// fiber's stack outlives its thread block: when a simulated thread finishes, its fiber parks in
// FiberMain's loop and the same thread index of the next block continues from there, so
// getcontext/makecontext/swapcontext (two signal-mask system calls) run once per stack rather than
// once per simulated thread (they were most of a simulated training step's time).
#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda_common/sim.h"

namespace dt_sim {
namespace {

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = 256 << 10;

enum class State { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };

// __builtin_setjmp's buffer: five words.
using JumpBuffer = void* [5];
// __builtin_longjmp may not sit in the function that called __builtin_setjmp, hence its own.
[[gnu::noinline, noreturn]] void JumpTo(JumpBuffer& to) { __builtin_longjmp(to, 1); }

// A fiber's stack and where it continues, kept across blocks and launches.
struct FiberStack {
  ucontext_t context;  // for the first entry only
  JumpBuffer resume;   // where the fiber continues: inside a thread's body, or parked
  bool entered = false;
  bool parked = false;  // waiting in FiberMain's loop for its next thread
  std::unique_ptr<char[]> memory;
};

struct Fiber {
  FiberStack* stack = nullptr;
  uint3 thread_idx;
  int linear = 0;
  State state = State::kReady;
  unsigned warp_mask = 0;  // while kAtWarpBarrier: the lanes taking part
  int predicate = 0;       // while kAtBlockBarrier
  int block_barriers = 0;  // barriers passed; its parity picks the result slot
  int shuffles = 0;        // shuffles passed; its parity picks the value slots
};

struct Machine {
  ucontext_t scheduler;         // for the first entry into a fiber
  JumpBuffer scheduler_resume;  // where a yielding or finishing fiber returns to
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<FiberStack>> stacks;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  uint3 block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  std::vector<uint64_t> slots[2];  // shuffle values by linear thread id
  int barrier_result[2] = {0, 0};
  bool in_kernel = false;
  std::string failure;  // set by a fiber that hit an unsupported or undefined operation
  cudaError_t last_error = cudaSuccess;
  uint64_t rng = 0;
};

// One machine per OS thread: ranks run as threads in tests each drive their own launches, error
// state and fibers. (Never freed: a thread's fiber stacks may outlive ordinary destruction order.)
Machine& TheMachine() {
  // initial-exec: the library is linked, never dlopen'd, so its thread-locals sit at a fixed offset
  // from the thread pointer instead of behind a __tls_get_addr call on every access.
  thread_local Machine* machine __attribute__((tls_model("initial-exec"))) = new Machine;
  return *machine;
}

// __shared__ variables are function-local statics shared by every thread of the process, so
// launches from different OS threads take turns.
std::mutex& LaunchMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

uint64_t NextRandom(Machine& m) {  // xorshift64: a fixed, platform-independent order
  m.rng ^= m.rng << 13;
  m.rng ^= m.rng >> 7;
  m.rng ^= m.rng << 17;
  return m.rng;
}

// Runs the threads this stack is given, one after another: each Resume of a parked stack runs
// m.current's thread (of whichever block and kernel) from the start.
void FiberMain() {
  Machine& m = TheMachine();
  while (true) {
    (*m.body)();
    m.current->state = State::kDone;
    FiberStack& s = *m.current->stack;
    s.parked = true;
    if (__builtin_setjmp(s.resume) == 0) JumpTo(m.scheduler_resume);
    s.parked = false;
  }
}

Fiber& CurrentFiber(const char* what) {
  Machine& m = TheMachine();
  if (!m.in_kernel || m.current == nullptr) {
    std::fprintf(stderr, "dt_sim: %s called outside a kernel\n", what);
    std::abort();
  }
  return *m.current;
}

void Yield(Fiber& f) {
  Machine& m = TheMachine();
  if (__builtin_setjmp(f.stack->resume) == 0) JumpTo(m.scheduler_resume);
}

// Runs fiber `f` until it yields or finishes.
void Resume(Machine& m, Fiber& f) {
  m.current = &f;
  if (__builtin_setjmp(m.scheduler_resume) == 0) {
    if (!f.stack->entered) {
      f.stack->entered = true;
      swapcontext(&m.scheduler, &f.stack->context);  // comes back through scheduler_resume
    } else {
      JumpTo(f.stack->resume);
    }
  }
  m.current = nullptr;
}

void Fail(Machine& m, const std::string& message) {
  if (m.failure.empty()) m.failure = message;
}

std::string BlockName(const Machine& m) {
  return "block (" + std::to_string(m.block_idx.x) + "," + std::to_string(m.block_idx.y) + "," +
         std::to_string(m.block_idx.z) + ")";
}

// Releases warps whose shuffle has every named lane waiting. Returns whether any was released.
bool ReleaseWarps(Machine& m) {
  bool released = false;
  const int n = static_cast<int>(m.fibers.size());
  for (int base = 0; base < n; base += kWarpSize) {
    const int lanes = std::min(kWarpSize, n - base);
    unsigned waiting = 0, need = 0, done = 0;
    for (int l = 0; l < lanes; ++l) {
      const Fiber& f = m.fibers[base + l];
      if (f.state == State::kAtWarpBarrier) {
        waiting |= 1u << l;
        need |= f.warp_mask;
      } else if (f.state == State::kDone) {
        done |= 1u << l;
      }
    }
    if (waiting == 0) continue;
    const unsigned present = lanes == kWarpSize ? 0xffffffffu : (1u << lanes) - 1;
    if ((need & ~present) != 0 || (need & done) != 0) {
      Fail(m, "warp " + std::to_string(base / kWarpSize) +
                  ": shuffle mask names a lane that does not exist or has exited");
      return false;
    }
    if ((need & ~waiting) != 0) continue;  // some lane still on its way
    for (int l = 0; l < lanes; ++l) {
      if (waiting & (1u << l)) m.fibers[base + l].state = State::kReady;
    }
    released = true;
  }
  return released;
}

// Releases a __syncthreads when every thread waits at one. Returns whether it did. Stricter than
// the hardware, which lets exited threads count as arrived: a barrier that some threads of the
// block skip by returning early is reported, since CUDA leaves that undefined.
bool ReleaseBlockBarrier(Machine& m) {
  int count = 0, parity = -1, done = 0;
  for (const Fiber& f : m.fibers) {
    if (f.state == State::kDone) {
      ++done;
      continue;
    }
    if (f.state != State::kAtBlockBarrier) return false;
    count += f.predicate != 0;
    const int p = f.block_barriers & 1;
    if (parity == -1) parity = p;
    if (p != parity) {
      Fail(m, "threads reached different __syncthreads() calls");
      return false;
    }
  }
  if (parity == -1) return false;
  if (done > 0) {
    Fail(m, std::to_string(done) + " threads exited before a __syncthreads() the others wait at");
    return false;
  }
  m.barrier_result[parity] = count;
  for (Fiber& f : m.fibers) {
    if (f.state == State::kAtBlockBarrier) f.state = State::kReady;
  }
  return true;
}

// Runs one thread block to completion; returns false (with m.failure set) when it cannot finish.
bool RunBlock(Machine& m) {
  const int n = static_cast<int>(m.block_dim.x * m.block_dim.y * m.block_dim.z);
  m.fibers.assign(n, Fiber{});
  while (static_cast<int>(m.stacks.size()) < n) {
    m.stacks.push_back(std::make_unique<FiberStack>());
    m.stacks.back()->memory = std::make_unique<char[]>(kStackBytes);
  }
  for (int i = 0; i < n; ++i) {
    Fiber& f = m.fibers[i];
    f.stack = m.stacks[i].get();
    f.linear = i;
    f.thread_idx = uint3{static_cast<unsigned>(i % m.block_dim.x),
                         static_cast<unsigned>((i / m.block_dim.x) % m.block_dim.y),
                         static_cast<unsigned>(i / (m.block_dim.x * m.block_dim.y))};
    FiberStack& s = *f.stack;
    if (s.entered && s.parked) continue;  // continues in FiberMain's loop
    // New, or abandoned inside a thread of a failed launch: start it afresh.
    getcontext(&s.context);
    s.context.uc_stack.ss_sp = s.memory.get();
    s.context.uc_stack.ss_size = kStackBytes;
    s.context.uc_link = nullptr;  // FiberMain never returns
    makecontext(&s.context, FiberMain, 0);
    s.entered = false;
    s.parked = false;
  }
  for (auto& s : m.slots) s.assign(n, 0);
  std::vector<int> order;
  while (true) {
    order.clear();
    for (int i = 0; i < n; ++i) {
      if (m.fibers[i].state == State::kReady) order.push_back(i);
    }
    for (int i = static_cast<int>(order.size()) - 1; i > 0; --i) {
      std::swap(order[i], order[NextRandom(m) % (i + 1)]);
    }
    for (int i : order) {
      Resume(m, m.fibers[i]);
      if (!m.failure.empty()) return false;
    }
    bool all_done = true;
    for (const Fiber& f : m.fibers) all_done = all_done && f.state == State::kDone;
    if (all_done) return true;
    if (ReleaseWarps(m)) continue;
    if (!m.failure.empty()) return false;
    if (ReleaseBlockBarrier(m)) continue;
    if (m.failure.empty()) {
      Fail(m,
           "deadlock: live threads wait at different barriers (__syncthreads() or a warp "
           "shuffle inside divergent code?)");
    }
    return false;
  }
}

bool ValidConfig(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  return threads >= 1 && threads <= 1024 && block.x <= 1024 && block.y <= 1024 && block.z <= 64 &&
         grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 &&
         grid.z <= 65535;
}

}  // namespace

const uint3& ThreadIdx() { return CurrentFiber("threadIdx").thread_idx; }
const uint3& BlockIdx() {
  CurrentFiber("blockIdx");
  return TheMachine().block_idx;
}
const dim3& BlockDim() {
  CurrentFiber("blockDim");
  return TheMachine().block_dim;
}
const dim3& GridDim() {
  CurrentFiber("gridDim");
  return TheMachine().grid_dim;
}

int LaneId() { return CurrentFiber("a warp intrinsic").linear % kWarpSize; }

int SyncThreadsCount(int predicate) {
  Fiber& f = CurrentFiber("__syncthreads");
  f.predicate = predicate;
  f.state = State::kAtBlockBarrier;
  Yield(f);
  const int result = TheMachine().barrier_result[f.block_barriers & 1];
  ++f.block_barriers;
  return result;
}

uint64_t WarpShuffle(unsigned mask, uint64_t value, int src_lane) {
  Fiber& f = CurrentFiber("a warp shuffle");
  Machine& m = TheMachine();
  const int lane = f.linear % kWarpSize;
  const int base = f.linear - lane;
  if ((mask & (1u << lane)) == 0) {
    Fail(m, "lane " + std::to_string(lane) + " shuffles with a mask that excludes itself");
    Yield(f);  // the scheduler stops the block
  }
  const int parity = f.shuffles & 1;
  m.slots[parity][f.linear] = value;
  f.warp_mask = mask;
  f.state = State::kAtWarpBarrier;
  Yield(f);
  ++f.shuffles;
  if (src_lane < 0 || src_lane >= kWarpSize || (mask & (1u << src_lane)) == 0) {
    Fail(m, "lane " + std::to_string(lane) + " reads lane " + std::to_string(src_lane) +
                ", which is not in the shuffle mask");
    return value;
  }
  return m.slots[parity][base + src_lane];
}

namespace {

// Page-locked allocations by start address, shared by every thread (memory is per process).
struct PinnedBlocks {
  std::mutex mu;
  std::map<const char*, size_t> blocks;
};

PinnedBlocks& Pinned() {
  static PinnedBlocks* pinned = new PinnedBlocks;
  return *pinned;
}

// Whether [p, p + n) lies inside one page-locked allocation.
bool IsPinned(const void* p, size_t n) {
  PinnedBlocks& pinned = Pinned();
  std::lock_guard<std::mutex> lock(pinned.mu);
  const char* c = static_cast<const char*>(p);
  auto it = pinned.blocks.upper_bound(c);
  if (it == pinned.blocks.begin()) return false;
  --it;
  return c >= it->first && c + n <= it->first + it->second;
}

struct PendingCopy {
  void* dst;
  const void* src;
  size_t count;
};

// The calling thread's queued copies, numbered in issue order from 0: one queue per thread, as each
// rank of a test drives its own device and streams.
struct PendingCopies {
  uint64_t done = 0;  // copies performed; copies[i] is number done + i
  std::deque<PendingCopy> copies;
  uint64_t issued() const { return done + copies.size(); }
};

PendingCopies& Pending() {
  thread_local PendingCopies pending;
  return pending;
}

// Performs the queued copies numbered below `upto`.
void FlushUpTo(uint64_t upto) {
  PendingCopies& p = Pending();
  while (p.done < upto && !p.copies.empty()) {
    const PendingCopy& c = p.copies.front();
    std::memcpy(c.dst, c.src, c.count);
    p.copies.pop_front();
    ++p.done;
  }
}

void QueueCopy(void* dst, const void* src, size_t count) {
  Pending().copies.push_back(PendingCopy{dst, src, count});
}

bool CopyIsAsynchronous(const void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyDeviceToHost:
      return IsPinned(dst, count);
    case cudaMemcpyHostToDevice:
      return IsPinned(src, count);
    default:
      return false;
  }
}

bool AddPinned(void* p, size_t n) {
  PinnedBlocks& pinned = Pinned();
  std::lock_guard<std::mutex> lock(pinned.mu);
  return pinned.blocks.emplace(static_cast<const char*>(p), n).second;
}

bool RemovePinned(void* p) {
  PinnedBlocks& pinned = Pinned();
  std::lock_guard<std::mutex> lock(pinned.mu);
  return pinned.blocks.erase(static_cast<const char*>(p)) == 1;
}

}  // namespace

void FlushPendingCopies() { FlushUpTo(Pending().issued()); }
uint64_t IssuedCopies() { return Pending().issued(); }
void FlushCopiesUpTo(uint64_t issued) { FlushUpTo(issued); }

void RunKernel(dim3 grid, dim3 block, const std::function<void()>& body) {
  FlushPendingCopies();  // stream order: the copies queued before the launch come first
  std::lock_guard<std::mutex> launch(LaunchMutex());
  Machine& m = TheMachine();
  if (m.in_kernel) {
    std::fprintf(stderr, "dt_sim: kernel launched from inside a kernel\n");
    std::abort();
  }
  if (!ValidConfig(grid, block)) {
    m.last_error = cudaErrorInvalidConfiguration;
    return;
  }
  m.in_kernel = true;
  m.body = &body;
  m.grid_dim = grid;
  m.block_dim = block;
  m.failure.clear();
  m.rng = 0x9E3779B97F4A7C15ull;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        m.block_idx = uint3{x, y, z};
        if (!RunBlock(m)) {
          std::fprintf(stderr, "dt_sim: kernel failed in %s: %s\n", BlockName(m).c_str(),
                       m.failure.c_str());
          m.last_error = cudaErrorLaunchFailure;
          m.in_kernel = false;
          m.fibers.clear();  // abandons the stuck fibers' stacks (nothing on them needs freeing)
          return;
        }
      }
    }
  }
  m.in_kernel = false;
  m.body = nullptr;
}

}  // namespace dt_sim

// ---- CUDA runtime API subset ----

namespace {
cudaError_t Record(cudaError_t e) {
  if (e != cudaSuccess) dt_sim::TheMachine().last_error = e;
  return e;
}
}  // namespace

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : Record(cudaErrorInvalidDevice);
}
cudaError_t cudaGetLastError() {
  auto& m = dt_sim::TheMachine();
  const cudaError_t e = m.last_error;
  m.last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return dt_sim::TheMachine().last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorInsufficientDriver:
      return "cudaErrorInsufficientDriver";
    default:
      return "cudaErrorUnknown (simulator)";
  }
}
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorLaunchFailure:
      return "simulated kernel failed (see stderr)";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    default:
      return "error in the CUDA simulator";
  }
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (ptr == nullptr) return Record(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (size == 0) return cudaSuccess;
  *ptr = std::aligned_alloc(256, (size + 255) / 256 * 256);
  return *ptr != nullptr ? cudaSuccess : Record(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* ptr) {
  dt_sim::FlushPendingCopies();  // cudaFree waits for the device
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags) {
  if (ptr == nullptr || (flags & ~0xfu) != 0) return Record(cudaErrorInvalidValue);
  *ptr = nullptr;
  // A real allocation even for 0 bytes, page-aligned as the driver's are.
  void* p = std::aligned_alloc(4096, std::max<size_t>(4096, (size + 4095) / 4096 * 4096));
  if (p == nullptr) return Record(cudaErrorMemoryAllocation);
  dt_sim::AddPinned(p, size);
  *ptr = p;
  return cudaSuccess;
}
// Page-locked host memory is cudaMemoryTypeHost; everything else, "device" memory included (it is
// host memory here, not tracked), reads as unregistered host memory.
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  if (attr == nullptr) return Record(cudaErrorInvalidValue);
  *attr = cudaPointerAttributes{};
  attr->device = -1;
  if (ptr != nullptr && dt_sim::IsPinned(ptr, 1)) {
    attr->type = cudaMemoryTypeHost;
    attr->device = 0;
    attr->hostPointer = const_cast<void*>(ptr);
    attr->devicePointer = const_cast<void*>(ptr);
  } else {
    attr->type = cudaMemoryTypeUnregistered;
  }
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}
cudaError_t cudaFreeHost(void* ptr) {
  dt_sim::FlushPendingCopies();  // cudaFreeHost waits for the device
  if (ptr == nullptr) return cudaSuccess;
  if (!dt_sim::RemovePinned(ptr)) return Record(cudaErrorInvalidValue);
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t) { return cudaMalloc(ptr, size); }
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) { return cudaFree(ptr); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind) {
  dt_sim::FlushPendingCopies();
  if (count > 0) std::memcpy(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t) {
  // Only a copy with page-locked host memory on one side runs behind the host's back on a GPU;
  // one with pageable memory has taken (or delivered) its bytes when the call returns.
  if (count > 0 && dt_sim::CopyIsAsynchronous(dst, src, count, kind)) {
    dt_sim::QueueCopy(dst, src, count);
    return cudaSuccess;
  }
  return cudaMemcpy(dst, src, count, kind);
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  dt_sim::FlushPendingCopies();
  if (count > 0) std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  return cudaMemset(ptr, value, count);
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  static char fake_stream;  // a non-null handle; the simulator runs everything synchronously
  *stream = reinterpret_cast<cudaStream_t>(&fake_stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  dt_sim::FlushPendingCopies();
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  dt_sim::FlushPendingCopies();
  return cudaSuccess;
}

// Events time the host: the simulator runs every launch synchronously, at CPU speed. An event also
// remembers how many copies its thread had queued when it was recorded: waiting for it performs
// those, not the ones queued later.
struct CUevent_st {
  std::chrono::steady_clock::time_point when;
  uint64_t copies = 0;
};

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  return cudaEventCreate(event);
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  event->when = std::chrono::steady_clock::now();
  event->copies = dt_sim::IssuedCopies();
  return cudaSuccess;
}
// An event waited for on another thread than the one that recorded it performs nothing (the
// engine never does that; the queues are per thread).
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  dt_sim::FlushCopiesUpTo(event->copies);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  dt_sim::FlushCopiesUpTo(event->copies);
  return cudaSuccess;
}
// Everything already ran when it was issued: any event a stream could wait for has happened.
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return Record(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "CUDA simulator (CPU)");
  prop->multiProcessorCount = 1;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
