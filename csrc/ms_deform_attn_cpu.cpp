// Multi-scale deformable attention on the CPU: forward (float32, bfloat16, float64) vectorized over
// channels, and backward (the same dtypes). The per-sample arithmetic is ms_deform_attn.h's, shared
// with the CUDA kernel.
//
// value: (B, S, H, D)   sampling_locations: (B, Q, H, L, P, 2), (x, y) in [0, 1]
// attention_weights: (B, Q, H, L, P)   output: (B, Q, H*D), value's dtype
// Locations and weights come in the op-math type (float32, float64 for a float64 value): a bfloat16
// location would be off by up to 1/256 of the map.
#include <torch/extension.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "ms_deform_attn.h"

namespace {

struct Sizes {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

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

Sizes check(const torch::Tensor& value, const torch::Tensor& spatial_shapes, const torch::Tensor& level_start_index,
            const torch::Tensor& sampling_locations, const torch::Tensor& attention_weights) {
  TORCH_CHECK(value.device().is_cpu(), "the CPU kernel takes CPU tensors");
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
  return n;
}

}  // namespace

torch::Tensor ms_deform_attn_forward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                     const torch::Tensor& level_start_index, const torch::Tensor& sampling_locations,
                                     const torch::Tensor& attention_weights) {
  const Sizes n = check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  auto v = value.contiguous();
  auto shapes = spatial_shapes.to(torch::kInt64).contiguous();
  auto starts = level_start_index.to(torch::kInt64).contiguous();
  auto loc = sampling_locations.contiguous();
  auto w = attention_weights.contiguous();
  auto out = torch::empty({n.batch, n.queries, n.heads, n.channels}, v.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, v.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
                             loc.data_ptr<at::opmath_type<scalar_t>>(), w.data_ptr<at::opmath_type<scalar_t>>(), out.data_ptr<scalar_t>(), n);
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
  auto v = value.contiguous();
  auto shapes = spatial_shapes.to(torch::kInt64).contiguous();
  auto starts = level_start_index.to(torch::kInt64).contiguous();
  auto loc = sampling_locations.contiguous();
  auto w = attention_weights.contiguous();
  auto g = grad_output.to(value.scalar_type()).contiguous();
  // gradients accumulate in the op-math type (float for bfloat16), then take the inputs' dtype
  const auto acc = v.options().dtype(at::toOpMathType(v.scalar_type()));
  auto grad_value = torch::zeros(v.sizes(), acc);
  auto grad_loc = torch::zeros(loc.sizes(), acc);
  auto grad_w = torch::zeros(w.sizes(), acc);
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, v.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t>(v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
                              loc.data_ptr<at::opmath_type<scalar_t>>(), w.data_ptr<at::opmath_type<scalar_t>>(), g.data_ptr<scalar_t>(),
                              grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(), grad_w.data_ptr<acc_t>(), n);
  });
  const auto dtype = value.scalar_type();
  return {grad_value.to(dtype), grad_loc, grad_w};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention forward (CPU)");
  m.def("backward", &ms_deform_attn_backward, "multi-scale deformable attention backward (CPU)");
}
