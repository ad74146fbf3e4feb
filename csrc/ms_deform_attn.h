// The per-sample arithmetic of multi-scale deformable attention, shared by the CPU and CUDA kernels,
// so that the CPU tests (gradcheck in float64 included) check the math the GPU runs.
//
// A sample is a location (x, y) in [0, 1] on one level of height x width. It maps to pixel coordinates
// (x * width - 0.5, y * height - 0.5), pixel centres at half-integers, as grid_sample(align_corners=False)
// does, and is read bilinearly from its four neighbouring pixels; corners outside the map count as zero
// (padding_mode="zeros"). gdino/ops/reference.py is the same arithmetic in PyTorch.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define GDINO_HD __host__ __device__ __forceinline__
#else
#define GDINO_HD inline
#endif

namespace gdino {

// value (B, S, H, D), sampling_locations (B, Q, H, L, P, 2): batch B, S = sum of h * w over the L levels,
// H heads of D channels, Q queries, P points per level.
struct Sizes {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

// Where one sample falls and its four bilinear corners: k = 0..3 is (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1).
template <typename acc_t>
struct Bilinear {
  int64_t x0 = 0, y0 = 0;  // the top-left corner, -1 when the sample is left of / above the first pixel centre
  acc_t fx = 0, fy = 0;    // offsets from (x0, y0), in [0, 1)
  bool hit = false;        // false when all four corners are outside (or the location is NaN): contributes nothing

  GDINO_HD Bilinear(acc_t x_unit, acc_t y_unit, int64_t height, int64_t width) {
    const acc_t x = x_unit * static_cast<acc_t>(width) - acc_t(0.5);
    const acc_t y = y_unit * static_cast<acc_t>(height) - acc_t(0.5);
    hit = x > acc_t(-1) && y > acc_t(-1) && x < static_cast<acc_t>(width) && y < static_cast<acc_t>(height);
    if (hit) {
      x0 = static_cast<int64_t>(floor(x));
      y0 = static_cast<int64_t>(floor(y));
      fx = x - static_cast<acc_t>(x0);
      fy = y - static_cast<acc_t>(y0);
    }
  }
  GDINO_HD int64_t cx(int k) const { return x0 + (k & 1); }
  GDINO_HD int64_t cy(int k) const { return y0 + (k >> 1); }
  GDINO_HD acc_t weight(int k) const {
    return ((k & 1) ? fx : acc_t(1) - fx) * ((k >> 1) ? fy : acc_t(1) - fy);
  }
  GDINO_HD bool inside(int k, int64_t height, int64_t width) const {
    return cx(k) >= 0 && cy(k) >= 0 && cx(k) < width && cy(k) < height;
  }
};

// One channel of one sample. `v` points at the level's pixel (0, 0) for this batch, head and channel;
// the next column is `col_stride` elements on, the next row `row_stride`.
template <typename scalar_t, typename acc_t>
GDINO_HD acc_t sample(const scalar_t* v, const Bilinear<acc_t>& s, int64_t height, int64_t width, int64_t row_stride,
                      int64_t col_stride) {
  acc_t out = 0;
  for (int k = 0; k < 4; ++k) {
    if (s.inside(k, height, width)) out += s.weight(k) * static_cast<acc_t>(v[s.cy(k) * row_stride + s.cx(k) * col_stride]);
  }
  return out;
}

// The backward of `attn * sample(...)` for one channel, given `grad` (the output's gradient there):
// calls add_value_grad(offset from v, amount) for each corner inside the map, and adds this channel's share
// of the gradients of the attention weight and of the location (x, y in [0, 1] units) to *grad_attn,
// *grad_x and *grad_y (the caller sums the shares over channels).
template <typename scalar_t, typename acc_t, typename AddValueGrad>
GDINO_HD void sample_backward(const scalar_t* v, const Bilinear<acc_t>& s, int64_t height, int64_t width,
                              int64_t row_stride, int64_t col_stride, acc_t attn, acc_t grad,
                              AddValueGrad& add_value_grad, acc_t* grad_attn, acc_t* grad_x, acc_t* grad_y) {
  acc_t corner[4] = {0, 0, 0, 0};
  const acc_t scaled = attn * grad;
  for (int k = 0; k < 4; ++k) {
    if (!s.inside(k, height, width)) continue;
    const int64_t offset = s.cy(k) * row_stride + s.cx(k) * col_stride;
    corner[k] = static_cast<acc_t>(v[offset]);
    add_value_grad(offset, scaled * s.weight(k));
  }
  const acc_t fx = s.fx, fy = s.fy, one = 1;
  *grad_attn += grad * ((one - fx) * (one - fy) * corner[0] + fx * (one - fy) * corner[1] + (one - fx) * fy * corner[2] +
                        fx * fy * corner[3]);
  // d(bilinear)/d(pixel x) and /d(pixel y); pixel x = x * width - 0.5, so d/dx = width * d/d(pixel x)
  *grad_x += scaled * static_cast<acc_t>(width) * ((one - fy) * (corner[1] - corner[0]) + fy * (corner[3] - corner[2]));
  *grad_y += scaled * static_cast<acc_t>(height) * ((one - fx) * (corner[2] - corner[0]) + fx * (corner[3] - corner[1]));
}

}  // namespace gdino
