// Multi-scale deformable attention on CUDA: forward and backward, float32, float16, bfloat16 (and
// float64 for gradcheck). The per-sample arithmetic is ms_deform_attn.h's, shared with the CPU kernel.
//
// One thread per output element (batch, query, head, channel), channels fastest, so that the threads of
// a warp read neighbouring channels of the same pixels. value: (B, S, H, D); sampling_locations:
// (B, Q, H, L, P, 2), (x, y) in [0, 1]; attention_weights: (B, Q, H, L, P); output: (B, Q, H*D). Locations
// and weights come in the op-math type (float32; float64 for a float64 value).
#include <torch/extension.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "ms_deform_attn.h"

namespace {

// ---- device code begin: tests/test_ops_cuda_emulated.py runs the text from here to "device code end" on
// the CPU (256 threads per block, lockstep warp shuffles), so the indexing and warp sums are checked
// where there is no GPU
constexpr int kThreads = 256;

struct Sizes {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

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

Sizes check(const torch::Tensor& value, const torch::Tensor& spatial_shapes, const torch::Tensor& level_start_index,
            const torch::Tensor& sampling_locations, const torch::Tensor& attention_weights) {
  TORCH_CHECK(value.is_cuda() && sampling_locations.is_cuda() && attention_weights.is_cuda(),
              "the CUDA kernel takes CUDA tensors");
  TORCH_CHECK(value.dim() == 4 && sampling_locations.dim() == 6 && attention_weights.dim() == 5,
              "value (B, S, H, D), sampling_locations (B, Q, H, L, P, 2), attention_weights (B, Q, H, L, P)");
  const auto precise = at::toOpMathType(value.scalar_type());
  TORCH_CHECK(sampling_locations.scalar_type() == precise && attention_weights.scalar_type() == precise,
              "sampling_locations and attention_weights must be ", precise, " for a ", value.scalar_type(), " value");
  const Sizes n{value.size(0), value.size(1), value.size(2), value.size(3), sampling_locations.size(1),
                sampling_locations.size(3), sampling_locations.size(4)};
  TORCH_CHECK(spatial_shapes.size(0) == n.levels && level_start_index.size(0) == n.levels,
              "one (h, w) and one start per level");
  TORCH_CHECK(sampling_locations.size(0) == n.batch && sampling_locations.size(2) == n.heads &&
                  sampling_locations.size(5) == 2,
              "sampling_locations must be (B, Q, H, L, P, 2) for a value of (B, S, H, D)");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must be sampling_locations' shape without the last dimension");
  const auto shapes = spatial_shapes.to(torch::kCPU, torch::kInt64);
  TORCH_CHECK((shapes.select(1, 0) * shapes.select(1, 1)).sum().item<int64_t>() == n.spatial,
              "value's S must be the sum of h * w over the levels");
  TORCH_CHECK(sampling_locations.device() == value.device() && attention_weights.device() == value.device(),
              "value, sampling_locations and attention_weights must be on one device");
  return n;
}

unsigned int blocks_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= INT32_MAX, "too many outputs for one launch: ", total);
  return static_cast<unsigned int>(blocks);
}

}  // namespace

torch::Tensor ms_deform_attn_forward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                     const torch::Tensor& level_start_index, const torch::Tensor& sampling_locations,
                                     const torch::Tensor& attention_weights) {
  const Sizes n = check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const c10::cuda::CUDAGuard guard(value.device());
  auto v = value.contiguous();
  auto shapes = spatial_shapes.to(value.device(), torch::kInt64).contiguous();
  auto starts = level_start_index.to(value.device(), torch::kInt64).contiguous();
  auto loc = sampling_locations.contiguous();
  auto w = attention_weights.contiguous();
  auto out = torch::empty({n.batch, n.queries, n.heads, n.channels}, v.options());
  const int64_t total = out.numel();
  if (total == 0) return out.view({n.batch, n.queries, n.heads * n.channels});
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, v.scalar_type(),
                                  "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr<at::opmath_type<scalar_t>>(),
        w.data_ptr<at::opmath_type<scalar_t>>(), out.data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.view({n.batch, n.queries, n.heads * n.channels});
}

std::vector<torch::Tensor> ms_deform_attn_backward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                                   const torch::Tensor& level_start_index,
                                                   const torch::Tensor& sampling_locations,
                                                   const torch::Tensor& attention_weights,
                                                   const torch::Tensor& grad_output) {
  const Sizes n = check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(grad_output.numel() == n.batch * n.queries * n.heads * n.channels, "grad_output must be (B, Q, H*D)");
  const c10::cuda::CUDAGuard guard(value.device());
  auto v = value.contiguous();
  auto shapes = spatial_shapes.to(value.device(), torch::kInt64).contiguous();
  auto starts = level_start_index.to(value.device(), torch::kInt64).contiguous();
  auto loc = sampling_locations.contiguous();
  auto w = attention_weights.contiguous();
  auto g = grad_output.to(value.scalar_type()).contiguous();
  const auto acc = v.options().dtype(at::toOpMathType(v.scalar_type()));
  auto grad_value = torch::zeros(v.sizes(), acc);
  auto grad_loc = torch::zeros(loc.sizes(), acc);
  auto grad_w = torch::zeros(w.sizes(), acc);
  const int64_t total = g.numel();
  const bool in_warp = n.channels > 0 && n.channels <= 32 && (32 % n.channels) == 0;
  // value's gradient is summed with atomicAdd: the order, and so the last bits, vary from run to run
  at::globalContext().alertNotDeterministic("ms_deform_attn_backward_cuda");
  if (total > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, v.scalar_type(),
                                    "ms_deform_attn_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
          v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr<at::opmath_type<scalar_t>>(),
          w.data_ptr<at::opmath_type<scalar_t>>(), g.data_ptr<scalar_t>(), grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(),
          grad_w.data_ptr<acc_t>(), n, in_warp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const auto dtype = value.scalar_type();
  return {grad_value.to(dtype), grad_loc, grad_w};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention forward (CUDA)");
  m.def("backward", &ms_deform_attn_backward, "multi-scale deformable attention backward (CUDA)");
}
