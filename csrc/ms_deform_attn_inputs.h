// The host side both kernels share: the inputs' checks (a mismatch would read out of bounds), their
// contiguous forms, and the backward's gradient buffers. Needs torch; the device code is ms_deform_attn.h.
#pragma once

#include <torch/extension.h>
#include <ATen/OpMathType.h>

#include <vector>

#include "ms_deform_attn.h"

namespace gdino {

struct Inputs {
  Sizes n;
  torch::Tensor value, shapes, starts, locations, weights;  // contiguous; shapes and starts int64 on value's device
};

// Locations and weights come in the op-math type of value's dtype (float32; float64 for float64).
inline Inputs prepare_inputs(const torch::Tensor& value, const torch::Tensor& spatial_shapes,
                             const torch::Tensor& level_start_index, const torch::Tensor& sampling_locations,
                             const torch::Tensor& attention_weights) {
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
  const auto shapes = spatial_shapes.to(torch::kCPU, torch::kInt64);  // the caller keeps them on the CPU: no sync
  TORCH_CHECK((shapes.select(1, 0) * shapes.select(1, 1)).sum().item<int64_t>() == n.spatial,
              "value's S must be the sum of h * w over the levels");
  TORCH_CHECK(sampling_locations.device() == value.device() && attention_weights.device() == value.device(),
              "value, sampling_locations and attention_weights must be on one device");
  return {n, value.contiguous(), spatial_shapes.to(value.device(), torch::kInt64).contiguous(),
          level_start_index.to(value.device(), torch::kInt64).contiguous(), sampling_locations.contiguous(),
          attention_weights.contiguous()};
}

// The backward's gradients accumulate in the op-math type (float for the half types), zeroed.
struct Gradients {
  torch::Tensor grad_output;  // (B, Q, H*D) in value's dtype, contiguous
  torch::Tensor value, locations, weights;

  // value's gradient in value's dtype; locations' and weights' in theirs (already the op-math type)
  std::vector<torch::Tensor> result(at::ScalarType value_dtype) const {
    return {value.to(value_dtype), locations, weights};
  }
};

inline Gradients gradient_buffers(const Inputs& in, const torch::Tensor& grad_output) {
  const Sizes& n = in.n;
  TORCH_CHECK(grad_output.numel() == n.batch * n.queries * n.heads * n.channels, "grad_output must be (B, Q, H*D)");
  const auto acc = in.value.options().dtype(at::toOpMathType(in.value.scalar_type()));
  return {grad_output.to(in.value.scalar_type()).contiguous(), torch::zeros(in.value.sizes(), acc),
          torch::zeros(in.locations.sizes(), acc), torch::zeros(in.weights.sizes(), acc)};
}

}  // namespace gdino
