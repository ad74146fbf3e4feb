// Multi-scale deformable attention on the CPU: forward (float32, bfloat16, float64) vectorized over
// channels, and backward (the same dtypes). The per-sample arithmetic is ms_deform_attn.h's, shared
// with the CUDA kernel.
//
// value: (B, S, H, D)   sampling_locations: (B, Q, H, L, P, 2), (x, y) in [0, 1]
// attention_weights: (B, Q, H, L, P)   output: (B, Q, H*D), value's dtype
// Locations and weights come in the op-math type (float32, float64 for a float64 value): a bfloat16
// location would be off by up to 1/256 of the map.
#include <ATen/Parallel.h>

#include "ms_deform_attn_inputs.h"

namespace {

using gdino::Sizes;

// One (batch, query, head) per task: its channels accumulate in `acc`, each sample adds four corner rows.
template <typename scalar_t>
void forward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                    const at::opmath_type<scalar_t>* locations, const at::opmath_type<scalar_t>* weights, scalar_t* out,
                    Sizes n) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, n.batch * n.queries * n.heads, 16, [&](int64_t begin, int64_t end) {
    acc_t stack_acc[128];  // Grounding DINO's heads have 32 channels; the heap beyond 128
    std::vector<acc_t> heap_acc(n.channels > 128 ? n.channels : 0);
    acc_t* __restrict__ acc = n.channels > 128 ? heap_acc.data() : stack_acc;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t h = item % n.heads;
      const int64_t b = item / (n.heads * n.queries);
      for (int64_t c = 0; c < n.channels; ++c) acc[c] = 0;
      const int64_t sample0 = item * n.levels * n.points;
      for (int64_t l = 0; l < n.levels; ++l) {
        const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
        const scalar_t* level_value = value + ((b * n.spatial + starts[l]) * n.heads + h) * n.channels;
        const int64_t col_stride = n.heads * n.channels, row_stride = width * col_stride;
        for (int64_t p = 0; p < n.points; ++p) {
          const int64_t s = sample0 + l * n.points + p;
          const gdino::Bilinear<acc_t> where(static_cast<acc_t>(locations[2 * s]), static_cast<acc_t>(locations[2 * s + 1]),
                                          height, width);
          if (!where.hit) continue;
          const acc_t attn = static_cast<acc_t>(weights[s]);
          for (int k = 0; k < 4; ++k) {
            if (!where.inside(k, height, width)) continue;
            const acc_t w = attn * where.weight(k);
            const scalar_t* __restrict__ v = level_value + where.cy(k) * row_stride + where.cx(k) * col_stride;
            for (int64_t c = 0; c < n.channels; ++c) acc[c] += w * static_cast<acc_t>(v[c]);
          }
        }
      }
      scalar_t* o = out + item * n.channels;
      for (int64_t c = 0; c < n.channels; ++c) o[c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

// One (batch, head) per task, so that no two tasks write the same gradient of `value`.
template <typename scalar_t>
void backward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                     const at::opmath_type<scalar_t>* locations, const at::opmath_type<scalar_t>* weights,
                     const scalar_t* grad_out, at::opmath_type<scalar_t>* grad_value,
                     at::opmath_type<scalar_t>* grad_locations, at::opmath_type<scalar_t>* grad_weights, Sizes n) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, n.batch * n.heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / n.heads, h = bh % n.heads;
      for (int64_t q = 0; q < n.queries; ++q) {
        const int64_t item = (b * n.queries + q) * n.heads + h;
        const scalar_t* g = grad_out + item * n.channels;
        for (int64_t l = 0; l < n.levels; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const int64_t level = ((b * n.spatial + starts[l]) * n.heads + h) * n.channels;
          const int64_t col_stride = n.heads * n.channels, row_stride = width * col_stride;
          for (int64_t p = 0; p < n.points; ++p) {
            const int64_t s = (item * n.levels + l) * n.points + p;
            const gdino::Bilinear<acc_t> where(static_cast<acc_t>(locations[2 * s]),
                                            static_cast<acc_t>(locations[2 * s + 1]), height, width);
            if (!where.hit) continue;
            const acc_t attn = static_cast<acc_t>(weights[s]);
            acc_t grad_attn = 0, grad_x = 0, grad_y = 0;
            for (int64_t c = 0; c < n.channels; ++c) {
              acc_t* gv = grad_value + level + c;
              auto add = [gv](int64_t offset, acc_t amount) { gv[offset] += amount; };
              gdino::sample_backward(value + level + c, where, height, width, row_stride, col_stride, attn,
                                     static_cast<acc_t>(g[c]), add, &grad_attn, &grad_x, &grad_y);
            }
            grad_weights[s] = grad_attn;
            grad_locations[2 * s] = grad_x;
            grad_locations[2 * s + 1] = grad_y;
          }
        }
      }
    }
  });
}

}  // namespace

torch::Tensor ms_deform_attn_forward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                     const torch::Tensor& level_start_index, const torch::Tensor& sampling_locations,
                                     const torch::Tensor& attention_weights) {
  TORCH_CHECK(value.device().is_cpu(), "the CPU kernel takes CPU tensors");
  const auto in = gdino::prepare_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes n = in.n;
  auto out = torch::empty({n.batch, n.queries, n.heads, n.channels}, in.value.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, in.value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t>(in.value.data_ptr<scalar_t>(), in.shapes.data_ptr<int64_t>(), in.starts.data_ptr<int64_t>(),
                             in.locations.data_ptr<acc_t>(), in.weights.data_ptr<acc_t>(), out.data_ptr<scalar_t>(), n);
  });
  return out.view({n.batch, n.queries, n.heads * n.channels});
}

std::vector<torch::Tensor> ms_deform_attn_backward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                                   const torch::Tensor& level_start_index,
                                                   const torch::Tensor& sampling_locations,
                                                   const torch::Tensor& attention_weights,
                                                   const torch::Tensor& grad_output) {
  TORCH_CHECK(value.device().is_cpu(), "the CPU kernel takes CPU tensors");
  const auto in = gdino::prepare_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const auto grads = gdino::gradient_buffers(in, grad_output);
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, in.value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t>(in.value.data_ptr<scalar_t>(), in.shapes.data_ptr<int64_t>(), in.starts.data_ptr<int64_t>(),
                              in.locations.data_ptr<acc_t>(), in.weights.data_ptr<acc_t>(),
                              grads.grad_output.data_ptr<scalar_t>(), grads.value.data_ptr<acc_t>(),
                              grads.locations.data_ptr<acc_t>(), grads.weights.data_ptr<acc_t>(), in.n);
  });
  return grads.result(value.scalar_type());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention forward (CPU)");
  m.def("backward", &ms_deform_attn_backward, "multi-scale deformable attention backward (CPU)");
}
