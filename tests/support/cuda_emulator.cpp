// Runs the CUDA kernels' source text (csrc/ms_deform_attn_cuda.cu, between its "device code" markers) on
// the CPU, in float64: each block is 256 std::threads, warp shuffles exchange values in lockstep through
// a block barrier, atomicAdd takes a lock. Checks the indexing, the tail threads and the warp sums where
// there is no GPU. Built and driven by tests/test_ops_cuda_emulated.py; I/O is raw float64 / int64 files.
//
// usage: cuda_emulator B S H D Q L P   (in a folder holding value, loc, w, grad, shapes, starts .bin)
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

struct Dim3 {
  unsigned x;
};
thread_local Dim3 threadIdx, blockIdx;
const Dim3 blockDim{256};
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
namespace at {
template <class T>
using opmath_type = T;
}
#include "ms_deform_attn.h"

static std::barrier<>* block_barrier;
static double lane_values[256];
static long shuffle_calls[256];

template <class T>
T __shfl_xor_sync(unsigned mask, T x, int offset, int width) {
  const int t = threadIdx.x;
  shuffle_calls[t]++;
  if (mask != 0xffffffffu) std::abort();  // the kernels always use the full mask
  lane_values[t] = x;
  block_barrier->arrive_and_wait();
  const int lane = t % 32, segment = lane - lane % width, source = lane ^ offset;
  const T result = (source >= segment && source < segment + width) ? static_cast<T>(lane_values[t - lane + source]) : x;
  block_barrier->arrive_and_wait();
  return result;
}

static std::mutex atomic_lock;
template <class T>
T atomicAdd(T* address, T value) {
  std::lock_guard<std::mutex> guard(atomic_lock);
  const T old = *address;
  *address += value;
  return old;
}

namespace {
#include "kernels_body.inc"
}

template <class F>
void launch(int64_t blocks, F body) {
  for (int64_t b = 0; b < blocks; ++b) {
    std::barrier<> barrier(256);
    block_barrier = &barrier;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 256; ++t) threads.emplace_back([&, t] { blockIdx.x = b; threadIdx.x = t; body(); });
    for (auto& thread : threads) thread.join();
  }
}

template <class T>
std::vector<T> load(const char* name, size_t n) {
  std::vector<T> v(n);
  std::ifstream(name, std::ios::binary).read(reinterpret_cast<char*>(v.data()), n * sizeof(T));
  return v;
}

template <class T>
void save(const char* name, const std::vector<T>& v) {
  std::ofstream(name, std::ios::binary).write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

int main(int argc, char** argv) {
  if (argc != 8) return 2;
  gdino::Sizes n{atoll(argv[1]), atoll(argv[2]), atoll(argv[3]), atoll(argv[4]), atoll(argv[5]), atoll(argv[6]), atoll(argv[7])};
  const size_t values = n.batch * n.spatial * n.heads * n.channels;
  const size_t samples = n.batch * n.queries * n.heads * n.levels * n.points;
  const size_t outputs = n.batch * n.queries * n.heads * n.channels;
  auto value = load<double>("value.bin", values);
  auto loc = load<double>("loc.bin", 2 * samples);
  auto w = load<double>("w.bin", samples);
  auto grad = load<double>("grad.bin", outputs);
  auto shapes = load<int64_t>("shapes.bin", 2 * n.levels);
  auto starts = load<int64_t>("starts.bin", n.levels);
  std::vector<double> out(outputs), grad_value(values), grad_loc(2 * samples), grad_w(samples);
  const int64_t blocks = (outputs + 255) / 256;
  launch(blocks, [&] {
    forward_kernel<double>(value.data(), shapes.data(), starts.data(), loc.data(), w.data(), out.data(), n);
  });
  const bool in_warp = n.channels > 0 && n.channels <= 32 && 32 % n.channels == 0;
  launch(blocks, [&] {
    backward_kernel<double>(value.data(), shapes.data(), starts.data(), loc.data(), w.data(), grad.data(),
                            grad_value.data(), grad_loc.data(), grad_w.data(), n, in_warp);
  });
  for (int t = 1; t < 256; ++t) {
    if (shuffle_calls[t] != shuffle_calls[0]) {
      std::printf("uneven warp shuffles: thread %d made %ld, thread 0 %ld\n", t, shuffle_calls[t], shuffle_calls[0]);
      return 1;
    }
  }
  std::printf("in_warp=%d shuffles_per_thread=%ld\n", in_warp ? 1 : 0, shuffle_calls[0]);
  save("out.bin", out);
  save("grad_value.bin", grad_value);
  save("grad_loc.bin", grad_loc);
  save("grad_w.bin", grad_w);
  return 0;
}
