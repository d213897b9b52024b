// Fused DySample point sampling for CPU: forward and backward of
//
//   out[b, c, Y, X] = bilinear sample of x[b, c] at the point given by offset (border padding)
//
// with the exact semantics of mmdysample.functional.dysample's reference path
// (sampling_grid + F.grid_sample(mode='bilinear', padding_mode='border', align_corners=False)).
//
// Layout of the work. Output pixel (Y, X) = (i * s + a, j * s + bb) of group k takes its
// offset from channels (k * s + a) * s + bb (x) and g * s * s + (k * s + a) * s + bb (y) at
// low-res position (i, j). The four corner indices and weights of a point are computed once
// per output row and reused by all channels of a channel block (CB channels of one group).
// Each task owns one (batch, group, channel block): it copies its CB input planes into a
// per-thread channels-last buffer [H * W][CB], so that the four corners of a point are four
// contiguous CB-vectors, computes 16-pixel tiles of CB-channel results and transposes each
// tile into the NCHW output rows. The backward pass accumulates the input gradient into a
// per-thread channels-last buffer of the same block (no two tasks share an input element, so
// no atomics) and reduces the offset gradient over the block's channels per point.
// Only the headers needed (not <torch/extension.h>): halves the one-time compile.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kTilePixels = 16;  // output pixels per transposed tile
// Widest channel block (see `dispatch`: 32 floats; doubles take 16). The channels-last buffer
// is indexed with int32 (RowPoints::base = (y0 * W + x0) * CB), so the kernel takes planes of
// at most INT32_MAX / kMaxBlock points (check_inputs; Python's mmdysample.ops.sampling
// sends larger planes to the reference path by the same rule).
constexpr int kMaxBlock = 32;
constexpr int64_t kMaxPlane = std::numeric_limits<int32_t>::max() / kMaxBlock;

// a * b + c, one rounding where the build targets FMA hardware
template <typename T>
inline T mul_add(T a, T b, T c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// One spatial axis (width or height) of the low-resolution input.
template <typename T>
struct Axis {
  int64_t size;
  T norm_scale;       // T(2.0 / size): sampling_grid's normalisation factor
  T half_size;        // size / 2: grid_sample's unnormalisation factor
  T max_coord;        // size - 1: border clamp
  T max_first;        // max(size - 2, 0): largest first corner (the second is first + 1)
  bool fused_unnormalize;  // grid_sample rounds (g + 1) * half_size - 0.5 once (FMA) or twice

  Axis(int64_t n, bool fused)
      : size(n),
        norm_scale(static_cast<T>(2.0 / static_cast<double>(n))),
        half_size(static_cast<T>(n) / T(2)),
        max_coord(static_cast<T>(n - 1)),
        max_first(static_cast<T>(std::max<int64_t>(n - 2, 0))),
        fused_unnormalize(fused) {}

  // Source coordinate, in input pixels and before the border clamp, of a point `offset`
  // pixels away from the centre of input pixel `index`, rounded step by step as the reference
  // path computes it: normalise to [-1, 1] in sampling_grid, unnormalise in grid_sample.
  inline T source(T offset, T index) const {
    const T normalised = (offset + (index + T(0.5))) * norm_scale - T(1);
    const T shifted = normalised + T(1);
    const T rounded_twice = shifted * half_size - T(0.5);
    const T rounded_once = std::fma(shifted, half_size, T(-0.5));
    return fused_unnormalize ? rounded_once : rounded_twice;
  }

  // grid_sample's border clamp (NaN stays NaN); derivative 0 at and beyond the borders
  inline T clamp(T coord) const {
    const T low = coord < T(0) ? T(0) : coord;
    return low > max_coord ? max_coord : low;
  }
  inline bool inside(T coord) const { return coord > T(0) && coord < max_coord; }
};

// Corner indices and weights of the sampling points of one output row, stored in
// "offset order": entry p = bb * W + j is output column X = j * s + bb.
template <typename T>
struct RowPoints {
  std::vector<int32_t> base;  // (y0 * W + x0) * CB: first corner in the channels-last buffer
  std::vector<T> w00, w01, w10, w11;  // bilinear weights of (y0,x0) (y0,x0+1) (y0+1,x0) (y0+1,x0+1)
  std::vector<T> frac_x, frac_y;      // x - x0, y - y0 (backward only)

  explicit RowPoints(int64_t n)
      : base(n), w00(n), w01(n), w10(n), w11(n), frac_x(n), frac_y(n) {}
};

struct Shape {
  int64_t batch, channels, height, width, scale, groups;
  int64_t group_channels() const { return channels / groups; }
  int64_t plane() const { return height * width; }
  int64_t out_height() const { return height * scale; }
  int64_t out_width() const { return width * scale; }
  int64_t offset_channels() const { return 2 * groups * scale * scale; }
};

// Fill `row` with the sampling points of output row Y = i * s + a of group k of one batch
// element; `offset_b` points at that element's (2 * g * s * s, H, W) offsets.
template <typename T, int CB>
void fill_row_points(const T* __restrict__ offset_b, const Shape& shape, const Axis<T>& axis_x,
                     const Axis<T>& axis_y, int64_t k, int64_t i, int64_t a, bool with_fractions,
                     RowPoints<T>& row) {
  const int64_t s = shape.scale, W = shape.width, HW = shape.plane();
  const T index_y = static_cast<T>(i);
  for (int64_t bb = 0; bb < s; ++bb) {
    const T* __restrict__ off_x = offset_b + ((k * s + a) * s + bb) * HW + i * W;
    const T* __restrict__ off_y = off_x + shape.groups * s * s * HW;
    int32_t* __restrict__ base = row.base.data() + bb * W;
    T* __restrict__ w00 = row.w00.data() + bb * W;
    T* __restrict__ w01 = row.w01.data() + bb * W;
    T* __restrict__ w10 = row.w10.data() + bb * W;
    T* __restrict__ w11 = row.w11.data() + bb * W;
    T* __restrict__ frac_x = row.frac_x.data() + bb * W;
    T* __restrict__ frac_y = row.frac_y.data() + bb * W;
    for (int64_t j = 0; j < W; ++j) {
      const T cx = axis_x.clamp(axis_x.source(off_x[j], static_cast<T>(j)));
      const T cy = axis_y.clamp(axis_y.source(off_y[j], index_y));
      // first corner: floor, moved one pixel left/up at the last column/row so that both
      // corners are inside the map (the moved-to corner then gets weight 1); NaN -> in range
      T x0 = std::floor(cx);
      T y0 = std::floor(cy);
      x0 = x0 < axis_x.max_first ? x0 : axis_x.max_first;
      y0 = y0 < axis_y.max_first ? y0 : axis_y.max_first;
      const T dx = cx - x0, dy = cy - y0;
      const T ex = T(1) - dx, ey = T(1) - dy;
      base[j] = (static_cast<int32_t>(y0) * static_cast<int32_t>(W) + static_cast<int32_t>(x0)) *
                CB;
      w00[j] = ey * ex;
      w01[j] = ey * dx;
      w10[j] = dy * ex;
      w11[j] = dy * dx;
      if (with_fractions) {
        frac_x[j] = dx;
        frac_y[j] = dy;
      }
    }
  }
}

#if defined(__AVX2__)
inline void transpose8x8(__m256& r0, __m256& r1, __m256& r2, __m256& r3, __m256& r4, __m256& r5,
                         __m256& r6, __m256& r7) {
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r0 = _mm256_permute2f128_ps(u0, u4, 0x20);
  r1 = _mm256_permute2f128_ps(u1, u5, 0x20);
  r2 = _mm256_permute2f128_ps(u2, u6, 0x20);
  r3 = _mm256_permute2f128_ps(u3, u7, 0x20);
  r4 = _mm256_permute2f128_ps(u0, u4, 0x31);
  r5 = _mm256_permute2f128_ps(u1, u5, 0x31);
  r6 = _mm256_permute2f128_ps(u2, u6, 0x31);
  r7 = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

#if defined(__AVX2__)
// 16 positions of CB NCHW rows into a [16][CB] channels-last tile (padding channels 0): both
// 32-byte halves of each row's 64 bytes are read back to back (the rows are a power-of-two
// stride apart and share cache sets; read half by half, 32 rows at a time, a line is often
// evicted before its second half is used).
template <typename T, int CB>
inline void load_tile16(const T* __restrict__ src, int64_t channel_stride, int cb,
                        T* __restrict__ dst) {
  const __m256 zero = _mm256_setzero_ps();
  for (int c8 = 0; c8 < CB; c8 += 8) {
    __m256 lo[8], hi[8];
    for (int r_ = 0; r_ < 8; ++r_) {
      const T* row = src + (c8 + r_) * channel_stride;
      const bool valid = c8 + r_ < cb;
      lo[r_] = valid ? _mm256_loadu_ps(row) : zero;
      hi[r_] = valid ? _mm256_loadu_ps(row + 8) : zero;
    }
    transpose8x8(lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7]);
    for (int r_ = 0; r_ < 8; ++r_) _mm256_storeu_ps(dst + r_ * CB + c8, lo[r_]);
    transpose8x8(hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7]);
    for (int r_ = 0; r_ < 8; ++r_) _mm256_storeu_ps(dst + (8 + r_) * CB + c8, hi[r_]);
  }
}
#endif

// dst[p * CB + c] = src[c * channel_stride + p * position_stride] for c < cb, 0 for the
// padding channels cb <= c < CB; p < n.
template <typename T, int CB>
void load_block(const T* __restrict__ src, int64_t channel_stride, int64_t position_stride,
                int64_t n, int cb, T* __restrict__ dst) {
  int64_t p = 0;
  if (position_stride == 1) {
#if defined(__AVX2__)
    if constexpr (std::is_same<T, float>::value && CB % 8 == 0) {
      const __m256 zero = _mm256_setzero_ps();
      for (; p + 16 <= n; p += 16) load_tile16<T, CB>(src + p, channel_stride, cb, dst + p * CB);
      for (; p + 8 <= n; p += 8) {
        for (int c8 = 0; c8 < CB; c8 += 8) {
          __m256 r[8];
          for (int r_ = 0; r_ < 8; ++r_) {
            r[r_] = c8 + r_ < cb ? _mm256_loadu_ps(src + (c8 + r_) * channel_stride + p) : zero;
          }
          transpose8x8(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
          for (int r_ = 0; r_ < 8; ++r_) _mm256_storeu_ps(dst + (p + r_) * CB + c8, r[r_]);
        }
      }
    }
#endif
    for (; p < n; ++p) {
      for (int c = 0; c < CB; ++c) dst[p * CB + c] = c < cb ? src[c * channel_stride + p] : T(0);
    }
    return;
  }
  for (; p < n; ++p) {
    const T* __restrict__ from = src + p * position_stride;
    T* __restrict__ to = dst + p * CB;
    if (channel_stride == 1 && cb == CB) {
      for (int c = 0; c < CB; ++c) to[c] = from[c];
    } else {
      for (int c = 0; c < CB; ++c) to[c] = c < cb ? from[c * channel_stride] : T(0);
    }
  }
}

// dst[c * channel_stride + p * position_stride] = src[p * CB + c] for c < cb, p < n.
template <typename T, int CB>
void store_block(const T* __restrict__ src, int64_t n, int cb, T* __restrict__ dst,
                 int64_t channel_stride, int64_t position_stride) {
  int64_t p = 0;
  if (position_stride == 1) {
#if defined(__AVX2__)
    if constexpr (std::is_same<T, float>::value && CB % 8 == 0) {
      // 16 positions at a time, each destination row's 64 bytes written back to back (see
      // load_block): a line is not left half-written while 31 other rows compete for its set
      for (; p + 16 <= n; p += 16) {
        for (int c8 = 0; c8 < cb; c8 += 8) {
          __m256 lo[8], hi[8];
          for (int r_ = 0; r_ < 8; ++r_) {
            lo[r_] = _mm256_loadu_ps(src + (p + r_) * CB + c8);
            hi[r_] = _mm256_loadu_ps(src + (p + 8 + r_) * CB + c8);
          }
          transpose8x8(lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7]);
          transpose8x8(hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7]);
          const int rows = std::min(8, cb - c8);
          for (int r_ = 0; r_ < rows; ++r_) {
            T* row = dst + (c8 + r_) * channel_stride + p;
            _mm256_storeu_ps(row, lo[r_]);
            _mm256_storeu_ps(row + 8, hi[r_]);
          }
        }
      }
      for (; p + 8 <= n; p += 8) {
        for (int c8 = 0; c8 < cb; c8 += 8) {
          __m256 r[8];
          for (int r_ = 0; r_ < 8; ++r_) r[r_] = _mm256_loadu_ps(src + (p + r_) * CB + c8);
          transpose8x8(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
          const int rows = std::min(8, cb - c8);
          for (int r_ = 0; r_ < rows; ++r_) {
            _mm256_storeu_ps(dst + (c8 + r_) * channel_stride + p, r[r_]);
          }
        }
      }
    }
#endif
    for (int c = 0; c < cb; ++c) {
      for (int64_t q = p; q < n; ++q) dst[c * channel_stride + q] = src[q * CB + c];
    }
    return;
  }
  for (; p < n; ++p) {
    const T* __restrict__ from = src + p * CB;
    T* __restrict__ to = dst + p * position_stride;
    for (int c = 0; c < cb; ++c) to[c * channel_stride] = from[c];
  }
}

// One output pixel of a channel block: result[c] = sum of the four weighted corners.
template <typename T, int CB>
inline void interpolate_point(const T* __restrict__ corner, int64_t step_x, int64_t step_y,
                              T w00, T w01, T w10, T w11, T* __restrict__ result) {
  const T* __restrict__ c01 = corner + step_x;
  const T* __restrict__ c10 = corner + step_y;
  const T* __restrict__ c11 = c10 + step_x;
  for (int c = 0; c < CB; ++c) {
    T value = w00 * corner[c];
    value = mul_add(w01, c01[c], value);
    value = mul_add(w10, c10[c], value);
    value = mul_add(w11, c11[c], value);
    result[c] = value;
  }
}

// Input gradient of one output pixel: scatter the weighted output gradient to the corners.
// (Four separate loops: with step_x == 0, a 1-pixel-wide map, corners coincide.)
template <typename T, int CB>
inline void scatter_point(const T* __restrict__ grad, T* corner, int64_t step_x, int64_t step_y,
                          T w00, T w01, T w10, T w11) {
  T* c01 = corner + step_x;
  T* c10 = corner + step_y;
  T* c11 = c10 + step_x;
  for (int c = 0; c < CB; ++c) corner[c] = mul_add(w00, grad[c], corner[c]);
  for (int c = 0; c < CB; ++c) c01[c] = mul_add(w01, grad[c], c01[c]);
  for (int c = 0; c < CB; ++c) c10[c] = mul_add(w10, grad[c], c10[c]);
  for (int c = 0; c < CB; ++c) c11[c] = mul_add(w11, grad[c], c11[c]);
}

// Derivative of the block's channels' sum of grad * sample wrt the source x / y coordinate
// (grid_sample's formula, before the clamp derivative and the unnormalisation factor).
template <typename T, int CB>
inline void coordinate_grad_point(const T* __restrict__ grad, const T* __restrict__ corner,
                                  int64_t step_x, int64_t step_y, T dx, T dy, T& grad_x,
                                  T& grad_y) {
  const T* __restrict__ c01 = corner + step_x;
  const T* __restrict__ c10 = corner + step_y;
  const T* __restrict__ c11 = c10 + step_x;
  const T ex = T(1) - dx, ey = T(1) - dy;
  T sum_x[CB], sum_y[CB];
  for (int c = 0; c < CB; ++c) {
    const T v00 = corner[c], v01 = c01[c], v10 = c10[c], v11 = c11[c];
    sum_x[c] = grad[c] * ((v01 - v00) * ey + (v11 - v10) * dy);
    sum_y[c] = grad[c] * ((v10 - v00) * ex + (v11 - v01) * dx);
  }
  for (int width = CB / 2; width > 0; width /= 2) {
    for (int c = 0; c < width; ++c) {
      sum_x[c] += sum_x[c + width];
      sum_y[c] += sum_y[c + width];
    }
  }
  grad_x = sum_x[0];
  grad_y = sum_y[0];
}

// Per-thread work buffers, allocated through ATen's allocator before the parallel region
// (so that memory profilers see them): `slots` rows, row t for thread t of at::parallel_for.
// The callers run at most `slots` threads (see scratch_slots), so no thread goes without.
template <typename T>
class ThreadScratch {
 public:
  ThreadScratch(const at::Tensor& like, int64_t per_thread, int64_t slots)
      : per_thread_(per_thread),
        slots_(slots),
        storage_(at::empty({slots * per_thread}, like.options().memory_format(
                                                     at::MemoryFormat::Contiguous))) {}
  // this thread's buffer (a private one if called from an unexpected thread id)
  T* get() {
    const int64_t tid = at::get_thread_num();
    if (tid >= 0 && tid < slots_) return storage_.data_ptr<T>() + tid * per_thread_;
    thread_local std::vector<T> fallback;
    fallback.resize(per_thread_);
    return fallback.data();
  }

 private:
  int64_t per_thread_, slots_;
  at::Tensor storage_;
};

// Scratch memory (per-thread buffers, and the backward's extra offset-gradient partial sums)
// is capped at one sixteenth of the output's elements, or two threads' buffers if that is
// more, whatever the thread count: a forward + backward holds the output and its gradient
// anyway, so the fused path's peak stays within a few percent of bilinear interpolation's.
// Threads beyond what the cap allows sit this call out.
constexpr int64_t kScratchFraction = 16;

int64_t scratch_budget(const Shape& shape, int64_t per_slot) {
  return std::max<int64_t>(
      shape.batch * shape.channels * shape.out_height() * shape.out_width() / kScratchFraction,
      2 * per_slot);
}

int64_t scratch_slots(const Shape& shape, int64_t per_slot, int64_t tasks) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1,
                           std::min({threads, tasks, scratch_budget(shape, per_slot) / per_slot}));
}

// Elements of one thread's scratch: `buffers` channels-last planes of CB channels and a tile.
int64_t slot_size(const Shape& shape, int64_t buffers, int64_t block) {
  return buffers * shape.plane() * block + kTilePixels * block;
}

// at::parallel_for over `tasks` that runs at most `slots` chunks, thread t taking chunk t.
template <typename Fn>
void parallel_over_slots(int64_t tasks, int64_t slots, const Fn& fn) {
  at::parallel_for(0, tasks, (tasks + slots - 1) / slots, fn);
}

struct Strides {  // element strides of a 4-D tensor viewed as (batch, channel, position)
  int64_t batch, channel, position;
};

Strides strides_of(const at::Tensor& t, const char* name) {
  const int64_t C = t.size(1), HW = t.size(2) * t.size(3);
  if (t.is_contiguous()) return {C * HW, HW, 1};
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name,
              " must be contiguous (NCHW) or channels_last");
  return {C * HW, 1, C};
}

Shape check_inputs(const at::Tensor& x, const at::Tensor& offset, int64_t scale, int64_t groups) {
  TORCH_CHECK(x.device().is_cpu() && offset.device().is_cpu(), "x and offset must be CPU tensors");
  TORCH_CHECK(x.dim() == 4 && offset.dim() == 4, "x and offset must be 4-D");
  TORCH_CHECK(x.scalar_type() == offset.scalar_type(), "x and offset must have the same dtype");
  TORCH_CHECK(scale >= 1 && groups >= 1, "scale and groups must be positive");
  const Shape shape{x.size(0), x.size(1), x.size(2), x.size(3), scale, groups};
  TORCH_CHECK(shape.channels % groups == 0, "channels must be divisible by groups");
  TORCH_CHECK(offset.size(0) == shape.batch && offset.size(1) == shape.offset_channels() &&
                  offset.size(2) == shape.height && offset.size(3) == shape.width,
              "offset must have shape (B, 2 * groups * scale * scale, H, W)");
  TORCH_CHECK(offset.is_contiguous(), "offset must be contiguous");
  strides_of(x, "x");  // x: NCHW or channels_last
  TORCH_CHECK(shape.plane() <= kMaxPlane, "fused DySample sampling: the input plane H * W = ",
              shape.plane(), " is too large for the kernel's 32-bit buffer indices (at most ",
              kMaxPlane, " points)");
  return shape;
}

// Number of channel blocks of CB channels in one group (the last one may be partial).
template <int CB>
int64_t blocks_per_group(const Shape& shape) {
  return (shape.group_channels() + CB - 1) / CB;
}

template <typename T, int CB>
void forward_kernel(const at::Tensor& x, const at::Tensor& offset, at::Tensor& out,
                    const Shape& shape, bool fused_unnormalize) {
  const Strides xs = strides_of(x, "x");
  const int64_t s = shape.scale, W = shape.width, HW = shape.plane();
  const int64_t oH = shape.out_height(), oW = shape.out_width(), Cg = shape.group_channels();
  const int64_t nblk = blocks_per_group<CB>(shape);
  const int64_t step_x = W > 1 ? CB : 0, step_y = shape.height > 1 ? W * CB : 0;
  const Axis<T> axis_x(W, fused_unnormalize), axis_y(shape.height, fused_unnormalize);
  const T* x_data = x.data_ptr<T>();
  const T* offset_data = offset.data_ptr<T>();
  T* out_data = out.data_ptr<T>();

  const int64_t tasks = shape.batch * shape.groups * nblk;
  const int64_t slots = scratch_slots(shape, slot_size(shape, 1, CB), tasks);
  ThreadScratch<T> scratch(x, slot_size(shape, 1, CB), slots);
  parallel_over_slots(tasks, slots, [&](int64_t begin, int64_t end) {
    T* block = scratch.get();
    T* tile = block + HW * CB;
    RowPoints<T> row(s * W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task % nblk, k = (task / nblk) % shape.groups;
      const int64_t b = task / (nblk * shape.groups);
      const int64_t c0 = k * Cg + blk * CB;
      const int cb = static_cast<int>(std::min<int64_t>(CB, (k + 1) * Cg - c0));
      load_block<T, CB>(x_data + b * xs.batch + c0 * xs.channel, xs.channel, xs.position, HW, cb,
                        block);
      const T* offset_b = offset_data + b * shape.offset_channels() * HW;
      T* out_b = out_data + (b * shape.channels + c0) * oH * oW;
      for (int64_t Y = 0; Y < oH; ++Y) {
        fill_row_points<T, CB>(offset_b, shape, axis_x, axis_y, k, Y / s, Y % s, false, row);
        for (int64_t X0 = 0; X0 < oW; X0 += kTilePixels) {
          const int64_t n = std::min(kTilePixels, oW - X0);
          for (int64_t t = 0; t < n; ++t) {
            const int64_t X = X0 + t, p = (X % s) * W + X / s;
            interpolate_point<T, CB>(block + row.base[p], step_x, step_y, row.w00[p], row.w01[p],
                                     row.w10[p], row.w11[p], tile + t * CB);
          }
          store_block<T, CB>(tile, n, cb, out_b + Y * oW + X0, oH * oW, 1);
        }
      }
    }
  });
}

template <typename T, int CB>
void backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& offset,
                     at::Tensor* grad_x, T* partial_data, int64_t splits, const Shape& shape,
                     bool fused_unnormalize) {
  const Strides xs = strides_of(x, "x");
  const Strides gs = strides_of(grad_out, "grad_out");
  const bool need_x = grad_x != nullptr, need_offset = partial_data != nullptr;
  const Strides gxs = need_x ? strides_of(*grad_x, "grad_x") : Strides{0, 0, 0};
  const int64_t s = shape.scale, W = shape.width, HW = shape.plane();
  const int64_t oH = shape.out_height(), oW = shape.out_width(), Cg = shape.group_channels();
  const int64_t nblk = blocks_per_group<CB>(shape), G = shape.groups;
  const int64_t step_x = W > 1 ? CB : 0, step_y = shape.height > 1 ? W * CB : 0;
  const Axis<T> axis_x(W, fused_unnormalize), axis_y(shape.height, fused_unnormalize);
  const T* x_data = x.data_ptr<T>();
  const T* offset_data = offset.data_ptr<T>();
  const T* grad_out_data = grad_out.data_ptr<T>();
  T* grad_x_data = need_x ? grad_x->data_ptr<T>() : nullptr;
  const int64_t go_position = gs.position, go_channel = gs.channel, go_batch = gs.batch;

  const int64_t block_size = need_offset ? HW * CB : 0, grad_block_size = need_x ? HW * CB : 0;
  const int64_t per_slot = block_size + grad_block_size + kTilePixels * CB;
  const int64_t tasks = shape.batch * G * splits;
  const int64_t slots = scratch_slots(shape, per_slot, tasks);
  ThreadScratch<T> scratch(x, per_slot, slots);
  parallel_over_slots(tasks, slots, [&](int64_t begin, int64_t end) {
    T* block = scratch.get();
    T* grad_block = block + block_size;
    T* tile = grad_block + grad_block_size;
    RowPoints<T> row(s * W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t split = task % splits, k = (task / splits) % G, b = task / (splits * G);
      const int64_t blk_begin = split * nblk / splits, blk_end = (split + 1) * nblk / splits;
      T* partial_x = need_offset
                         ? partial_data + (split * shape.batch + b) * shape.offset_channels() * HW
                         : nullptr;
      const T* offset_b = offset_data + b * shape.offset_channels() * HW;
      for (int64_t blk = blk_begin; blk < blk_end; ++blk) {
        const int64_t c0 = k * Cg + blk * CB;
        const int cb = static_cast<int>(std::min<int64_t>(CB, (k + 1) * Cg - c0));
        if (need_offset) {
          load_block<T, CB>(x_data + b * xs.batch + c0 * xs.channel, xs.channel, xs.position, HW,
                            cb, block);
        }
        if (need_x) std::fill(grad_block, grad_block + grad_block_size, T(0));
        const T* go_b = grad_out_data + b * go_batch + c0 * go_channel;
        for (int64_t Y = 0; Y < oH; ++Y) {
          const int64_t i = Y / s, a = Y % s;
          fill_row_points<T, CB>(offset_b, shape, axis_x, axis_y, k, i, a, need_offset, row);
          // offset-gradient accumulators of this row: p = bb * W + j -> + bb * HW + j
          T* acc_x = need_offset ? partial_x + (k * s + a) * s * HW + i * W : nullptr;
          T* acc_y = need_offset ? acc_x + G * s * s * HW : nullptr;
          for (int64_t X0 = 0; X0 < oW; X0 += kTilePixels) {
            const int64_t n = std::min(kTilePixels, oW - X0);
            load_block<T, CB>(go_b + (Y * oW + X0) * go_position, go_channel, go_position, n, cb,
                              tile);
            for (int64_t t = 0; t < n; ++t) {
              const int64_t X = X0 + t, bb = X % s, j = X / s, p = bb * W + j;
              const T* grad = tile + t * CB;
              if (need_x) {
                scatter_point<T, CB>(grad, grad_block + row.base[p], step_x, step_y,
                                     row.w00[p], row.w01[p], row.w10[p], row.w11[p]);
              }
              if (need_offset) {
                T gx, gy;
                coordinate_grad_point<T, CB>(grad, block + row.base[p], step_x, step_y,
                                             row.frac_x[p], row.frac_y[p], gx, gy);
                acc_x[bb * HW + j] += gx;
                acc_y[bb * HW + j] += gy;
              }
            }
          }
        }
        if (need_x) {
          store_block<T, CB>(grad_block, HW, cb, grad_x_data + b * gxs.batch + c0 * gxs.channel,
                             gxs.channel, gxs.position);
        }
      }
    }
  });
}

// grad_offset = sum over splits of the coordinate gradients, times grid_sample's
// unnormalisation factor where the border clamp is inactive (0 where it is), times
// sampling_grid's normalisation factor: the chain rule the reference path applies.
template <typename T>
void finish_offset_grad(const T* partial, int64_t splits, const at::Tensor& offset,
                        at::Tensor& grad_offset, const Shape& shape, bool fused_unnormalize) {
  const int64_t HW = shape.plane(), W = shape.width, n = shape.batch * shape.offset_channels();
  const int64_t x_channels = shape.groups * shape.scale * shape.scale;
  const Axis<T> axis_x(W, fused_unnormalize), axis_y(shape.height, fused_unnormalize);
  const T* offset_data = offset.data_ptr<T>();
  T* out = grad_offset.data_ptr<T>();
  const int64_t split_stride = n * HW;
  at::parallel_for(0, n * shape.height, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / shape.height, i = r % shape.height;
      const bool is_x = plane % shape.offset_channels() < x_channels;
      const Axis<T>& axis = is_x ? axis_x : axis_y;
      const int64_t first = plane * HW + i * W;
      for (int64_t j = 0; j < W; ++j) {
        T sum = partial[first + j];
        for (int64_t sp = 1; sp < splits; ++sp) sum += partial[sp * split_stride + first + j];
        const T coord = axis.source(offset_data[first + j], static_cast<T>(is_x ? j : i));
        out[first + j] = axis.inside(coord) ? (sum * axis.half_size) * axis.norm_scale : T(0);
      }
    }
  });
}

template <int CB_FLOAT, int CB_DOUBLE, typename Fn>
void dispatch_block(at::ScalarType dtype, Fn&& fn) {
  if (dtype == at::kFloat) {
    fn(float(), std::integral_constant<int, CB_FLOAT>());
  } else if (dtype == at::kDouble) {
    fn(double(), std::integral_constant<int, CB_DOUBLE>());
  } else {
    TORCH_CHECK(false, "fused DySample sampling supports float32 and float64, got ", dtype);
  }
}

// Calls fn(scalar_t(), block width CB): the narrowest of 1, 2 or 4 AVX2 vectors (8, 16 or 32
// floats; 4, 8 or 16 doubles) that holds a group's channels, so that a wide group shares each
// point's indices, weights and (backward) coordinate-gradient reduction over 32 channels while
// a narrow one pads little. (32-float blocks measured 5-35 % faster than 16 for 64-channel
// groups at 1x256x64x64 and 2x256x128x128, forward and backward; 64 was no better.)
// `max_block` caps CB (a power of two >= the narrowest block).
template <typename Fn>
void dispatch(const at::Tensor& x, const Shape& shape, int64_t max_block, Fn&& fn) {
  const int64_t vector = x.scalar_type() == at::kDouble ? 4 : 8;
  const int64_t group_channels = shape.group_channels();
  if (group_channels <= vector || max_block <= vector) {
    dispatch_block<8, 4>(x.scalar_type(), fn);
  } else if (group_channels <= 2 * vector || max_block <= 2 * vector) {
    dispatch_block<16, 8>(x.scalar_type(), fn);
  } else {
    dispatch_block<kMaxBlock, kMaxBlock / 2>(x.scalar_type(), fn);
  }
}

// Widest channel block (4, 2 or 1 vectors) for which the scratch cap still lets every thread
// work (or that leaves no thread idle anyway); the narrowest one otherwise. `buffers`: the
// channels-last planes each thread holds (forward 1; backward 1 per gradient wanted).
int64_t block_cap(const at::Tensor& x, const Shape& shape, int64_t buffers) {
  const int64_t vector = x.scalar_type() == at::kDouble ? 4 : 8;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  for (int64_t block = 4 * vector; block > vector; block /= 2) {
    const int64_t tasks =
        shape.batch * shape.groups * ((shape.group_channels() + block - 1) / block);
    if (scratch_slots(shape, slot_size(shape, buffers, block), tasks) >=
        std::min(threads, tasks)) {
      return block;
    }
  }
  return vector;
}

}  // namespace

namespace mmdysample {

at::Tensor dysample_forward(const at::Tensor& x, const at::Tensor& offset, int64_t scale,
                            int64_t groups, bool fused_unnormalize) {
  const Shape shape = check_inputs(x, offset, scale, groups);
  at::Tensor out = at::empty({shape.batch, shape.channels, shape.out_height(), shape.out_width()},
                             x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  dispatch(x, shape, block_cap(x, shape, 1), [&](auto scalar, auto block) {
    using T = decltype(scalar);
    forward_kernel<T, decltype(block)::value>(x, offset, out, shape, fused_unnormalize);
  });
  return out;
}

std::vector<at::Tensor> dysample_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                          const at::Tensor& offset, int64_t scale, int64_t groups,
                                          bool fused_unnormalize, bool need_x_grad,
                                          bool need_offset_grad) {
  const Shape shape = check_inputs(x, offset, scale, groups);
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), "grad_out must have x's dtype");
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == shape.batch &&
                  grad_out.size(1) == shape.channels && grad_out.size(2) == shape.out_height() &&
                  grad_out.size(3) == shape.out_width(),
              "grad_out must have shape (B, C, s * H, s * W)");
  at::Tensor grad_x, grad_offset, partial;
  if (need_x_grad) {
    grad_x = at::empty_like(x, x.is_contiguous() ? at::MemoryFormat::Contiguous
                                                 : at::MemoryFormat::ChannelsLast);
  }
  if (x.numel() == 0) {
    if (need_x_grad) grad_x.zero_();
    if (need_offset_grad) grad_offset = at::zeros_like(offset);
    return {grad_x, grad_offset};
  }
  const int64_t buffers = std::max<int64_t>(1, int64_t(need_x_grad) + int64_t(need_offset_grad));
  dispatch(x, shape, block_cap(x, shape, buffers), [&](auto scalar, auto block) {
    using T = decltype(scalar);
    constexpr int CB = decltype(block)::value;
    // Tasks are (batch, group, split of the group's channel blocks); more than one split
    // only when batch * groups cannot keep the threads busy. Each split accumulates its
    // own offset-gradient partial sums, reduced in finish_offset_grad.
    // Each extra split holds one more offset-sized buffer: what the scratch budget leaves.
    const int64_t per_slot = slot_size(shape, buffers, CB);
    const int64_t slots =
        scratch_slots(shape, per_slot, shape.batch * shape.groups * blocks_per_group<CB>(shape));
    const int64_t per_split = shape.batch * shape.groups;
    const int64_t offset_elements = shape.batch * shape.offset_channels() * shape.plane();
    const int64_t spare = scratch_budget(shape, per_slot) - slots * per_slot;
    const int64_t max_splits =
        need_offset_grad ? 1 + std::max<int64_t>(0, spare) / offset_elements : blocks_per_group<CB>(shape);
    const int64_t splits = std::max<int64_t>(
        1, std::min<int64_t>({blocks_per_group<CB>(shape), max_splits,
                              (2 * slots + per_split - 1) / per_split}));
    T* partial_data = nullptr;
    if (need_offset_grad) {
      partial = at::zeros({splits, shape.batch, shape.offset_channels(), shape.height, shape.width},
                          offset.options());
      partial_data = partial.data_ptr<T>();
    }
    backward_kernel<T, CB>(grad_out, x, offset, need_x_grad ? &grad_x : nullptr, partial_data,
                           splits, shape, fused_unnormalize);
    if (need_offset_grad) {
      grad_offset = splits == 1 ? partial.select(0, 0) : at::empty_like(offset);
      finish_offset_grad<T>(partial_data, splits, offset, grad_offset, shape, fused_unnormalize);
    }
  });
  return {grad_x, grad_offset};
}

// The dynamic scope's chain rule, in place, one pass, no temporaries: offsets were
// o * gate * 2f + init with gate = sigmoid(z), so with g the offsets' gradient and
// L = offset - init,
//   grad <- g * gate * 2f         (gradient wrt o)
//   gate <- g * L * (1 - gate)    (gradient wrt z)
// grad, gate, offset: contiguous (B, K, H, W); init_pos: (K) values, one per channel.
namespace {

template <typename T>
void dyscope_chain_kernel(at::Tensor& grad, at::Tensor& gate, const at::Tensor& offset,
                          const at::Tensor& init_pos, double scope_factor) {
  const int64_t K = grad.size(1), HW = grad.size(2) * grad.size(3);
  const int64_t planes = grad.size(0) * K;
  T* g = grad.data_ptr<T>();
  T* scope = gate.data_ptr<T>();
  const T* off = offset.data_ptr<T>();
  const T* init = init_pos.data_ptr<T>();
  const T two_f = static_cast<T>(2 * scope_factor);
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const T start = init[plane % K];
      T* gp = g + plane * HW;
      T* zp = scope + plane * HW;
      const T* op = off + plane * HW;
      for (int64_t i = 0; i < HW; ++i) {
        const T gate_value = zp[i], grad_value = gp[i];
        gp[i] = grad_value * gate_value * two_f;
        zp[i] = grad_value * (op[i] - start) * (T(1) - gate_value);
      }
    }
  });
}

}  // namespace

void dyscope_chain(at::Tensor grad, at::Tensor gate, const at::Tensor& offset,
                   const at::Tensor& init_pos, double scope_factor) {
  TORCH_CHECK(grad.device().is_cpu() && gate.device().is_cpu() && offset.device().is_cpu() &&
                  init_pos.device().is_cpu(),
              "dyscope_chain: CPU tensors only");
  TORCH_CHECK(grad.dim() == 4 && grad.sizes() == gate.sizes() && grad.sizes() == offset.sizes(),
              "dyscope_chain: grad, gate and offset must have one 4-D shape");
  TORCH_CHECK(grad.is_contiguous() && gate.is_contiguous() && offset.is_contiguous() &&
                  init_pos.is_contiguous() && init_pos.numel() == grad.size(1),
              "dyscope_chain: contiguous tensors, one initial position per channel");
  TORCH_CHECK(grad.scalar_type() == gate.scalar_type() && grad.scalar_type() == offset.scalar_type() &&
                  grad.scalar_type() == init_pos.scalar_type(),
              "dyscope_chain: one dtype");
  if (grad.scalar_type() == at::kFloat) {
    dyscope_chain_kernel<float>(grad, gate, offset, init_pos, scope_factor);
  } else {
    TORCH_CHECK(grad.scalar_type() == at::kDouble, "dyscope_chain: float32 or float64");
    dyscope_chain_kernel<double>(grad, gate, offset, init_pos, scope_factor);
  }
}

}  // namespace mmdysample
