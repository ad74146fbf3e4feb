// Multi-scale deformable attention, forward, on the CPU (float32 and bfloat16).
//
// For every (batch, query, head): sum over levels and points of
//   weight * bilinear(value[level], location),
// with the sampling convention of grid_sample(align_corners=False, padding_mode="zeros"): a location
// (x, y) in [0, 1] maps to pixel coordinates (x * W - 0.5, y * H - 0.5), and corners outside the map
// contribute zero. This is gdino/ops/reference.py's arithmetic, in one pass with no temporaries.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

template <typename scalar_t>
void forward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* locations,
                    const scalar_t* weights, scalar_t* out, int64_t batch, int64_t spatial, int64_t heads,
                    int64_t channels, int64_t queries, int64_t levels, int64_t points) {
  const int64_t items = batch * queries * heads;
  // value:     (B, S, H, D)          locations: (B, Q, H, L, P, 2)
  // weights:   (B, Q, H, L, P)       out:       (B, Q, H, D)
  at::parallel_for(0, items, 16, [&](int64_t begin, int64_t end) {
    // a stack accumulator for the usual head sizes (32 in Grounding DINO), the heap beyond
    float stack_acc[128];
    std::vector<float> heap_acc(channels > 128 ? channels : 0);
    float* __restrict__ acc = channels > 128 ? heap_acc.data() : stack_acc;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t h = item % heads;
      const int64_t q = (item / heads) % queries;
      const int64_t b = item / (heads * queries);
      for (int64_t c = 0; c < channels; ++c) acc[c] = 0.0f;
      const int64_t sample0 = ((b * queries + q) * heads + h) * levels * points;
      for (int64_t l = 0; l < levels; ++l) {
        const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
        const scalar_t* level_value = value + ((b * spatial + starts[l]) * heads + h) * channels;
        const int64_t row_stride = width * heads * channels, col_stride = heads * channels;
        for (int64_t p = 0; p < points; ++p) {
          const int64_t s = sample0 + l * points + p;
          const float w_attn = static_cast<float>(weights[s]);
          const float x = static_cast<float>(locations[2 * s]) * width - 0.5f;
          const float y = static_cast<float>(locations[2 * s + 1]) * height - 0.5f;
          if (!(x > -1.0f && y > -1.0f && x < width && y < height)) continue;  // all four corners outside
          const int64_t x0 = static_cast<int64_t>(std::floor(x)), y0 = static_cast<int64_t>(std::floor(y));
          const float fx = x - x0, fy = y - y0;
          const float corner_w[4] = {(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy};
          const int64_t cx[4] = {x0, x0 + 1, x0, x0 + 1}, cy[4] = {y0, y0, y0 + 1, y0 + 1};
          for (int k = 0; k < 4; ++k) {
            if (cx[k] < 0 || cy[k] < 0 || cx[k] >= width || cy[k] >= height) continue;
            const float w = w_attn * corner_w[k];
            const scalar_t* __restrict__ v = level_value + cy[k] * row_stride + cx[k] * col_stride;
            for (int64_t c = 0; c < channels; ++c) acc[c] += w * static_cast<float>(v[c]);
          }
        }
      }
      scalar_t* o = out + item * channels;
      for (int64_t c = 0; c < channels; ++c) o[c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

}  // namespace

torch::Tensor ms_deform_attn_forward(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                                     const torch::Tensor& level_start_index, const torch::Tensor& sampling_locations,
                                     const torch::Tensor& attention_weights) {
  TORCH_CHECK(value.device().is_cpu(), "the CPU kernel takes CPU tensors");
  TORCH_CHECK(value.dim() == 4 && sampling_locations.dim() == 6 && attention_weights.dim() == 5,
              "value (B, S, H, D), sampling_locations (B, Q, H, L, P, 2), attention_weights (B, Q, H, L, P)");
  TORCH_CHECK(value.scalar_type() == sampling_locations.scalar_type() &&
                  value.scalar_type() == attention_weights.scalar_type(),
              "value, sampling_locations and attention_weights must share one dtype");
  auto v = value.contiguous();
  auto shapes = spatial_shapes.to(torch::kInt64).contiguous();
  auto starts = level_start_index.to(torch::kInt64).contiguous();
  auto loc = sampling_locations.contiguous();
  auto w = attention_weights.contiguous();
  const int64_t batch = v.size(0), spatial = v.size(1), heads = v.size(2), channels = v.size(3);
  const int64_t queries = loc.size(1), levels = loc.size(3), points = loc.size(4);
  TORCH_CHECK(shapes.size(0) == levels && starts.size(0) == levels, "one (h, w) and one start per level");
  auto out = torch::empty({batch, queries, heads, channels}, v.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, v.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(v.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
                             loc.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch,
                             spatial, heads, channels, queries, levels, points);
  });
  return out.view({batch, queries, heads * channels});
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention forward (CPU)");
}
