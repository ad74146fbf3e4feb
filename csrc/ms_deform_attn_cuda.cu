// Multi-scale deformable attention on CUDA: forward and backward, float32, float16, bfloat16 (and
// float64 for gradcheck). The per-sample arithmetic is ms_deform_attn.h's, shared with the CPU kernel.
//
// One thread per output element (batch, query, head, channel), channels fastest, so that the threads of
// a warp read neighbouring channels of the same pixels. value: (B, S, H, D); sampling_locations:
// (B, Q, H, L, P, 2), (x, y) in [0, 1]; attention_weights: (B, Q, H, L, P); output: (B, Q, H*D). Locations
// and weights come in the op-math type (float32; float64 for a float64 value).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ms_deform_attn_inputs.h"

namespace {

// ---- device code begin: tests/test_ops_cuda_emulated.py runs the text from here to "device code end" on
// the CPU (256 threads per block, lockstep warp shuffles), so the indexing and warp sums are checked
// where there is no GPU
constexpr int kThreads = 256;
using gdino::Sizes;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const at::opmath_type<scalar_t>* __restrict__ locations,
                               const at::opmath_type<scalar_t>* __restrict__ weights, scalar_t* __restrict__ out, Sizes n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= n.batch * n.queries * n.heads * n.channels) return;
  const int64_t c = index % n.channels;
  const int64_t item = index / n.channels;  // (b, q, h)
  const int64_t h = item % n.heads;
  const int64_t b = item / (n.heads * n.queries);
  acc_t acc = 0;
  for (int64_t l = 0; l < n.levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const scalar_t* level_value = value + ((b * n.spatial + starts[l]) * n.heads + h) * n.channels + c;
    const int64_t col_stride = n.heads * n.channels, row_stride = width * col_stride;
    for (int64_t p = 0; p < n.points; ++p) {
      const int64_t s = (item * n.levels + l) * n.points + p;
      const gdino::Bilinear<acc_t> where(static_cast<acc_t>(locations[2 * s]), static_cast<acc_t>(locations[2 * s + 1]),
                                      height, width);
      if (where.hit) acc += static_cast<acc_t>(weights[s]) * gdino::sample(level_value, where, height, width, row_stride, col_stride);
    }
  }
  out[index] = static_cast<scalar_t>(acc);
}

// The sum of `x` over a group of `width` neighbouring lanes (width a power of two up to 32); every lane of
// the warp must call it.
template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t x, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset, width);
  return x;
}

// Gradients accumulate in acc_t buffers (float for the half types): value's with atomicAdd, the weights'
// and locations' summed over a query's channels first (in the warp when D divides 32, else atomically).
template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const at::opmath_type<scalar_t>* __restrict__ locations,
                                const at::opmath_type<scalar_t>* __restrict__ weights, const scalar_t* __restrict__ grad_out,
                                at::opmath_type<scalar_t>* grad_value, at::opmath_type<scalar_t>* grad_locations,
                                at::opmath_type<scalar_t>* grad_weights, Sizes n, bool in_warp) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // threads past the end stay to take part in the warp sums (with zeros), but read and write nothing
  const bool active = index < n.batch * n.queries * n.heads * n.channels;
  const int64_t c = index % n.channels;
  const int64_t item = index / n.channels;
  const int64_t h = item % n.heads;
  const int64_t b = item / (n.heads * n.queries);
  const acc_t grad = active ? static_cast<acc_t>(grad_out[index]) : acc_t(0);
  for (int64_t l = 0; l < n.levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const int64_t level = ((b * n.spatial + starts[l]) * n.heads + h) * n.channels + c;
    const int64_t col_stride = n.heads * n.channels, row_stride = width * col_stride;
    for (int64_t p = 0; p < n.points; ++p) {
      const int64_t s = (item * n.levels + l) * n.points + p;
      acc_t grad_attn = 0, grad_x = 0, grad_y = 0;
      if (active) {
        const gdino::Bilinear<acc_t> where(static_cast<acc_t>(locations[2 * s]),
                                        static_cast<acc_t>(locations[2 * s + 1]), height, width);
        if (where.hit) {
          acc_t* gv = grad_value + level;
          auto add = [gv](int64_t offset, acc_t amount) { atomicAdd(gv + offset, amount); };
          gdino::sample_backward(value + level, where, height, width, row_stride, col_stride,
                                 static_cast<acc_t>(weights[s]), grad, add, &grad_attn, &grad_x, &grad_y);
        }
      }
      if (in_warp) {
        grad_attn = group_sum(grad_attn, static_cast<int>(n.channels));
        grad_x = group_sum(grad_x, static_cast<int>(n.channels));
        grad_y = group_sum(grad_y, static_cast<int>(n.channels));
      }
      if (active && (!in_warp || c == 0)) {
        atomicAdd(grad_weights + s, grad_attn);
        atomicAdd(grad_locations + 2 * s, grad_x);
        atomicAdd(grad_locations + 2 * s + 1, grad_y);
      }
    }
  }
}

// ---- device code end

unsigned int blocks_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= INT32_MAX, "too many outputs for one launch: ", total);
  return static_cast<unsigned int>(blocks);
}

}  // namespace

torch::Tensor ms_deform_attn_forward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                     const torch::Tensor& level_start_index, const torch::Tensor& sampling_locations,
                                     const torch::Tensor& attention_weights) {
  TORCH_CHECK(value.is_cuda(), "the CUDA kernel takes CUDA tensors");
  const c10::cuda::CUDAGuard guard(value.device());
  const auto in = gdino::prepare_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes n = in.n;
  auto out = torch::empty({n.batch, n.queries, n.heads, n.channels}, in.value.options());
  const int64_t total = out.numel();
  if (total == 0) return out.view({n.batch, n.queries, n.heads * n.channels});
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, in.value.scalar_type(),
                                  "ms_deform_attn_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        in.value.data_ptr<scalar_t>(), in.shapes.data_ptr<int64_t>(), in.starts.data_ptr<int64_t>(),
        in.locations.data_ptr<acc_t>(), in.weights.data_ptr<acc_t>(), out.data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.view({n.batch, n.queries, n.heads * n.channels});
}

std::vector<torch::Tensor> ms_deform_attn_backward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                                   const torch::Tensor& level_start_index,
                                                   const torch::Tensor& sampling_locations,
                                                   const torch::Tensor& attention_weights,
                                                   const torch::Tensor& grad_output) {
  TORCH_CHECK(value.is_cuda(), "the CUDA kernel takes CUDA tensors");
  const c10::cuda::CUDAGuard guard(value.device());
  const auto in = gdino::prepare_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const auto grads = gdino::gradient_buffers(in, grad_output);
  const Sizes n = in.n;
  const int64_t total = grads.grad_output.numel();
  const bool in_warp = n.channels > 0 && n.channels <= 32 && (32 % n.channels) == 0;
  // value's gradient is summed with atomicAdd: the order, and so the last bits, vary from run to run
  at::globalContext().alertNotDeterministic("ms_deform_attn_backward_cuda");
  if (total > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, in.value.scalar_type(),
                                    "ms_deform_attn_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
          in.value.data_ptr<scalar_t>(), in.shapes.data_ptr<int64_t>(), in.starts.data_ptr<int64_t>(),
          in.locations.data_ptr<acc_t>(), in.weights.data_ptr<acc_t>(), grads.grad_output.data_ptr<scalar_t>(),
          grads.value.data_ptr<acc_t>(), grads.locations.data_ptr<acc_t>(), grads.weights.data_ptr<acc_t>(), n,
          in_warp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return grads.result(value.scalar_type());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention forward (CUDA)");
  m.def("backward", &ms_deform_attn_backward, "multi-scale deformable attention backward (CUDA)");
}
