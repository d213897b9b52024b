// Content-aware reassembly for CPU (CARAFE, FADE, A2U, SAPA-B): three kernels, each the
// gradient of the other two, without unfolded tensors.
//
// Shapes: x (B, C, H, W), masks (B, G * K * K, sH, sW), out (B, C, sH, sW), K odd, r = K / 2,
// channel c in group g = c / (C / G), tap m = dy * K + dx (dy, dx in [0, K)):
//
//   reassemble      out[b, c, P, Q]  = sum_m x[b, c, P / s + dy - r, Q / s + dx - r]
//                                            * masks[b, g * K * K + m, P, Q]
//   feature_grad    gx[b, c, i, j]   = sum over (P, Q, m) whose neighbour is (i, j) of
//                                      go[b, c, P, Q] * masks[b, g * K * K + m, P, Q]
//   mask_grad       gm[b, g*K*K+m, P, Q] = sum_{c in g} go[b, c, P, Q]
//                                            * x[b, c, P / s + dy - r, Q / s + dx - r]
//
// (neighbours outside the map are zero). reassemble's gradients are feature_grad(go, masks)
// and mask_grad(go, x); mask_grad(q, k) is SAPA's similarity <q(P, Q), k(neighbour m)>,
// whose gradients are reassemble(k, g) and feature_grad(q, g); feature_grad's are
// reassemble(g, masks) and mask_grad(go, g).
//
// Layout of the work. Everything is NCHW and vectorised along an output row. A low-res row
// of x is widened once into an "upsampled" row U[t] = x[i, t / s - r] (zero outside), so that
// the neighbour (dy, dx) of output column Q is U_{i + dy - r}[Q + s * dx]: one contiguous
// vector load per tap. The masks (and, for feature_grad, the output gradient) of the s output
// rows of a low-res row are copied into zero-padded rows of the same width, so that no loop
// has a tail or a bounds test. Tasks are (batch, group, band of low-res rows); a task walks
// its rows and, for each, blocks of kChannels channels:
//   reassemble   per 2-vector chunk of an output row: kChannels x 2 accumulators, K*K taps;
//   mask_grad    per chunk: the kChannels output gradients in registers, the K*K mask-grad
//                rows of the s output rows accumulated in a per-task buffer over the group's
//                channels, written once per low-res row;
//   feature_grad gathers, for each target row of its band, the products of the s output rows
//                of each parent row that reach it, in registers, and sums each s-wide
//                group of lanes into the target row (a task owns its band's target rows: no
//                two tasks write one element, no atomics).
// Scratch: a few padded rows per thread (kChannels * K + 2 s K^2 rows of sW + 2 s r).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ops.h"

#if defined(__AVX2__) && (defined(__FMA__) || defined(_MSC_VER))  // MSVC: /arch:AVX2 has FMA
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kChannels = 4;  // channels of a block (register blocking)

// One SIMD register of T and the operations the kernels need; a one-lane fallback where the
// build has no AVX2 + FMA (the compiler may still vectorise the loops around it).
template <typename T>
struct Simd {
  using V = T;
  static constexpr int64_t N = 1;
  static V zero() { return T(0); }
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V add(V a, V b) { return a + b; }
};

#if defined(__AVX2__) && (defined(__FMA__) || defined(_MSC_VER))  // MSVC: /arch:AVX2 has FMA
template <>
struct Simd<float> {
  using V = __m256;
  static constexpr int64_t N = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  // lanes (0+1, 2+3, ...) of a then of b: sums of adjacent pairs, in order
  static V pair_sums(V a, V b) {
    const __m256 h = _mm256_hadd_ps(a, b);  // a01 a23 b01 b23 | a45 a67 b45 b67
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0xD8));
  }
};

template <>
struct Simd<double> {
  using V = __m256d;
  static constexpr int64_t N = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V pair_sums(V a, V b) {
    const __m256d h = _mm256_hadd_pd(a, b);  // a01 b01 | a23 b23
    return _mm256_permute4x64_pd(h, 0xD8);
  }
};
#endif

// Sizes of one call, and of the padded rows.
struct Geometry {
  int64_t batch, channels, height, width, groups, kernel, scale;
  int64_t group_channels, taps, radius, out_height, out_width;
  int64_t chunk;   // lanes per step along a row: two SIMD registers
  int64_t span;    // out_width rounded up to whole chunks
  int64_t padded;  // span + 2 * s * r: length of every padded row

  Geometry(int64_t B, int64_t C, int64_t H, int64_t W, int64_t G, int64_t K, int64_t s,
           int64_t lanes)
      : batch(B), channels(C), height(H), width(W), groups(G), kernel(K), scale(s),
        group_channels(C / G), taps(K * K), radius(K / 2), out_height(s * H), out_width(s * W),
        chunk(2 * lanes), span((s * W + chunk - 1) / chunk * chunk),
        padded(span + 2 * s * (K / 2)) {}

  int64_t plane() const { return height * width; }
  int64_t out_plane() const { return out_height * out_width; }
};

// dst[t] = x[row, t / s - r] for t < padded (zero outside the map): the upsampled row.
template <typename T>
void upsample_row(const T* plane, int64_t row, const Geometry& g, T* dst) {
  if (row < 0 || row >= g.height) {
    std::fill(dst, dst + g.padded, T(0));
    return;
  }
  const int64_t s = g.scale, lead = s * g.radius;
  const T* src = plane + row * g.width;
  std::fill(dst, dst + lead, T(0));
  T* out = dst + lead;
  if (s == 2) {
    for (int64_t j = 0; j < g.width; ++j) out[2 * j] = out[2 * j + 1] = src[j];
  } else {
    for (int64_t j = 0; j < g.width; ++j) {
      for (int64_t b = 0; b < s; ++b) out[j * s + b] = src[j];
    }
  }
  std::fill(out + s * g.width, dst + g.padded, T(0));
}

// dst[s * r + Q] = src[Q] for Q < out_width, zero elsewhere in [0, padded).
template <typename T>
void pad_row(const T* src, const Geometry& g, T* dst) {
  const int64_t lead = g.scale * g.radius;
  std::fill(dst, dst + lead, T(0));
  std::memcpy(dst + lead, src, sizeof(T) * g.out_width);
  std::fill(dst + lead + g.out_width, dst + g.padded, T(0));
}

// The padded mask rows of the s output rows of low-res row i: rows[(a * K^2 + m) * padded]
// for taps m with dy in [dy_begin, dy_end) (the others are left as they are).
template <typename T>
void pad_masks(const T* masks_bg, int64_t i, int64_t dy_begin, int64_t dy_end,
               const Geometry& g, T* rows) {
  for (int64_t a = 0; a < g.scale; ++a) {
    const int64_t P = g.scale * i + a;
    for (int64_t m = dy_begin * g.kernel; m < dy_end * g.kernel; ++m) {
      pad_row(masks_bg + m * g.out_plane() + P * g.out_width, g,
              rows + (a * g.taps + m) * g.padded);
    }
  }
}

// Tasks: (batch, group, band of rows); `bands` chosen to give each thread a few tasks.
int64_t bands_for(const Geometry& g) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t wanted = (4 * threads + g.batch * g.groups - 1) / (g.batch * g.groups);
  return std::max<int64_t>(1, std::min(g.height, wanted));
}

template <typename Fn>
void for_each_band(const Geometry& g, const Fn& fn) {
  const int64_t bands = bands_for(g), tasks = g.batch * g.groups * bands;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t band = task % bands, bg = task / bands;
      const int64_t row_begin = band * g.height / bands, row_end = (band + 1) * g.height / bands;
      fn(bg / g.groups, bg % g.groups, row_begin, row_end);
    }
  });
}

// Store `n` <= chunk lanes of two registers at dst.
template <typename T>
inline void store_chunk(T* dst, typename Simd<T>::V lo, typename Simd<T>::V hi, int64_t n,
                        T* spill) {
  using S = Simd<T>;
  if (n == 2 * S::N) {
    S::store(dst, lo);
    S::store(dst + S::N, hi);
    return;
  }
  S::store(spill, lo);
  S::store(spill + S::N, hi);
  std::memcpy(dst, spill, sizeof(T) * n);
}

// One chunk (two registers) of each of the kChannels channels of a block, held in named
// registers (GCC keeps an array of vectors in memory across loop iterations).
template <typename T>
struct Block {
  static_assert(kChannels == 4, "Block holds four channels");
  using S = Simd<T>;
  using V = typename S::V;
  static constexpr int64_t N = S::N;
  V a0, a1, b0, b1, c0, c1, d0, d1;

  static Block zero() {
    const V z = S::zero();
    return Block{z, z, z, z, z, z, z, z};
  }
  // the chunks at p, p + stride, p + 2 stride, p + 3 stride
  static Block load(const T* p, int64_t stride) {
    return Block{S::load(p),              S::load(p + N),
                 S::load(p + stride),     S::load(p + stride + N),
                 S::load(p + 2 * stride), S::load(p + 2 * stride + N),
                 S::load(p + 3 * stride), S::load(p + 3 * stride + N)};
  }
  // this += (chunks at p, p + stride, ...) * (w0, w1)
  void fma(const T* p, int64_t stride, V w0, V w1) {
    a0 = S::fma(S::load(p), w0, a0);
    a1 = S::fma(S::load(p + N), w1, a1);
    b0 = S::fma(S::load(p + stride), w0, b0);
    b1 = S::fma(S::load(p + stride + N), w1, b1);
    c0 = S::fma(S::load(p + 2 * stride), w0, c0);
    c1 = S::fma(S::load(p + 2 * stride + N), w1, c1);
    d0 = S::fma(S::load(p + 3 * stride), w0, d0);
    d1 = S::fma(S::load(p + 3 * stride + N), w1, d1);
  }
  // (s0, s1) += sum over the channels of this * (chunks at p, p + stride, ...)
  void dot(const T* p, int64_t stride, V& s0, V& s1) const {
    s0 = S::fma(a0, S::load(p), s0);
    s1 = S::fma(a1, S::load(p + N), s1);
    s0 = S::fma(b0, S::load(p + stride), s0);
    s1 = S::fma(b1, S::load(p + stride + N), s1);
    s0 = S::fma(c0, S::load(p + 2 * stride), s0);
    s1 = S::fma(c1, S::load(p + 2 * stride + N), s1);
    s0 = S::fma(d0, S::load(p + 3 * stride), s0);
    s1 = S::fma(d1, S::load(p + 3 * stride + N), s1);
  }
  V lo(int64_t c) const { return c == 0 ? a0 : c == 1 ? b0 : c == 2 ? c0 : d0; }
  V hi(int64_t c) const { return c == 0 ? a1 : c == 1 ? b1 : c == 2 ? c1 : d1; }
};

// The upsampled rows i + dy - r (dy < K) of the block's cs channels: rows[(c * K + dy) * L].
template <typename T>
void upsample_block(const T* x_first, int64_t cs, int64_t i, const Geometry& g, T* rows) {
  for (int64_t c = 0; c < cs; ++c) {
    for (int64_t dy = 0; dy < g.kernel; ++dy) {
      upsample_row(x_first + c * g.plane(), i + dy - g.radius, g,
                   rows + (c * g.kernel + dy) * g.padded);
    }
  }
}

// ------------------------------------------------------------------------------ reassemble

template <typename T>
void reassemble_kernel(const T* x, const T* masks, T* out, const Geometry& g) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int64_t N = S::N;
  for_each_band(g, [&, g](int64_t b, int64_t k, int64_t i_begin, int64_t i_end) {
    const int64_t s = g.scale, K2 = g.taps, L = g.padded, span = g.span, oW = g.out_width;
    const int64_t Cg = g.group_channels, lead = s * g.radius, channel_rows = g.kernel * L;
    std::vector<T> mask_rows(s * K2 * L), up_rows(kChannels * channel_rows, T(0)), spill(2 * N);
    std::vector<int64_t> tap(K2);  // tap m's offset in a channel's upsampled rows
    for (int64_t m = 0; m < K2; ++m) tap[m] = (m / g.kernel) * L + s * (m % g.kernel);
    const T* masks_bg = masks + (b * g.groups + k) * K2 * g.out_plane();
    for (int64_t i = i_begin; i < i_end; ++i) {
      pad_masks(masks_bg, i, 0, g.kernel, g, mask_rows.data());
      for (int64_t c0 = 0; c0 < Cg; c0 += kChannels) {
        const int64_t cs = std::min(kChannels, Cg - c0);
        const int64_t c_first = b * g.channels + k * Cg + c0;
        upsample_block(x + c_first * g.plane(), cs, i, g, up_rows.data());
        for (int64_t a = 0; a < s; ++a) {
          const T* mask_a = mask_rows.data() + a * K2 * L + lead;
          T* out_a = out + (c_first * g.out_height + s * i + a) * oW;
          for (int64_t q = 0; q < span; q += 2 * N) {
            Block<T> acc = Block<T>::zero();
            const T* up = up_rows.data() + q;
            const T* mk = mask_a + q;
            for (int64_t m = 0; m < K2; ++m, mk += L) {
              acc.fma(up + tap[m], channel_rows, S::load(mk), S::load(mk + N));
            }
            const int64_t n = std::min(2 * N, oW - q);
            for (int64_t c = 0; c < cs; ++c) {
              store_chunk<T>(out_a + c * g.out_plane() + q, acc.lo(c), acc.hi(c), n,
                             spill.data());
            }
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------- mask_grad

template <typename T>
void mask_grad_kernel(const T* grad_out, const T* x, T* grad_masks, const Geometry& g) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int64_t N = S::N;
  for_each_band(g, [&, g](int64_t b, int64_t k, int64_t i_begin, int64_t i_end) {
    const int64_t s = g.scale, K2 = g.taps, L = g.padded, span = g.span, oW = g.out_width;
    const int64_t Cg = g.group_channels, channel_rows = g.kernel * L;
    std::vector<T> sums(s * K2 * span), up_rows(kChannels * channel_rows, T(0));
    std::vector<T> grad_rows(kChannels * span, T(0));
    std::vector<int64_t> tap(K2);
    for (int64_t m = 0; m < K2; ++m) tap[m] = (m / g.kernel) * L + s * (m % g.kernel);
    T* gm_bg = grad_masks + (b * g.groups + k) * K2 * g.out_plane();
    for (int64_t i = i_begin; i < i_end; ++i) {
      std::fill(sums.begin(), sums.end(), T(0));
      for (int64_t c0 = 0; c0 < Cg; c0 += kChannels) {
        const int64_t cs = std::min(kChannels, Cg - c0);
        const int64_t c_first = b * g.channels + k * Cg + c0;
        upsample_block(x + c_first * g.plane(), cs, i, g, up_rows.data());
        if (cs < kChannels) {  // the last block: absent channels add nothing
          std::fill(grad_rows.begin() + cs * span, grad_rows.end(), T(0));
        }
        for (int64_t a = 0; a < s; ++a) {
          // this output row's gradient of the block's channels (zero lanes past the row)
          const T* go_a = grad_out + (c_first * g.out_height + s * i + a) * oW;
          for (int64_t c = 0; c < cs; ++c) {
            std::memcpy(grad_rows.data() + c * span, go_a + c * g.out_plane(), sizeof(T) * oW);
          }
          T* sums_a = sums.data() + a * K2 * span;
          for (int64_t q = 0; q < span; q += 2 * N) {
            const Block<T> go = Block<T>::load(grad_rows.data() + q, span);
            const T* up = up_rows.data() + q;
            T* sum = sums_a + q;
            for (int64_t m = 0; m < K2; ++m, sum += span) {
              V s0 = S::load(sum), s1 = S::load(sum + N);
              go.dot(up + tap[m], channel_rows, s0, s1);
              S::store(sum, s0);
              S::store(sum + N, s1);
            }
          }
        }
      }
      for (int64_t a = 0; a < s; ++a) {
        for (int64_t m = 0; m < K2; ++m) {
          std::memcpy(gm_bg + m * g.out_plane() + (s * i + a) * oW,
                      sums.data() + (a * K2 + m) * span, sizeof(T) * oW);
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------- feature_grad

// target[j] += sum of the lanes t of one chunk with t / s == j (lane l is t0 + l): each lane
// belongs to one column, so the chunks of a row add each column's s lanes exactly once.
template <typename T>
inline void add_lane_sums(typename Simd<T>::V lo, typename Simd<T>::V hi, int64_t t0,
                          const Geometry& g, T* target_row, T* spill) {
  using S = Simd<T>;
  constexpr int64_t N = S::N;
  const int64_t s = g.scale, j_first = t0 / s;
  if constexpr (N > 1) {
    if (s == 2 && j_first + N <= g.width) {  // a chunk of 2N lanes is N whole columns
      T* dst = target_row + j_first;
      S::store(dst, S::add(S::pair_sums(lo, hi), S::load(dst)));
      return;
    }
  }
  S::store(spill, lo);
  S::store(spill + N, hi);
  const int64_t j_last = std::min(g.width - 1, (t0 + 2 * N - 1) / s);
  for (int64_t j = j_first; j <= j_last; ++j) {
    const int64_t lane_end = std::min(s * j + s, t0 + 2 * N) - t0;
    T sum = T(0);
    for (int64_t lane = std::max(s * j, t0) - t0; lane < lane_end; ++lane) sum += spill[lane];
    target_row[j] += sum;
  }
}

template <typename T>
void feature_grad_kernel(const T* grad_out, const T* masks, T* grad_x, const Geometry& g) {
  using S = Simd<T>;
  constexpr int64_t N = S::N;
  for_each_band(g, [&, g](int64_t b, int64_t k, int64_t t_begin, int64_t t_end) {
    const int64_t s = g.scale, K = g.kernel, K2 = g.taps, L = g.padded, span = g.span;
    const int64_t Cg = g.group_channels, r = g.radius, W = g.width, channel_rows = s * L;
    std::vector<T> mask_rows(s * K2 * L), grad_rows(kChannels * channel_rows, T(0));
    std::vector<T> spill(2 * N);
    // for target tap row dy, term j = a * K + dx: where its mask row and output-gradient row
    // are read for lane t = 0 (output column Q = t + s * (r - dx), padded index Q + s * r)
    std::vector<int64_t> mask_at(s * K), grad_at(s * K);
    const T* masks_bg = masks + (b * g.groups + k) * K2 * g.out_plane();
    const int64_t c_group = b * g.channels + k * Cg;
    for (int64_t c = 0; c < Cg; ++c) {
      T* plane = grad_x + (c_group + c) * g.plane();
      std::fill(plane + t_begin * W, plane + t_end * W, T(0));
    }
    // parent rows i whose neighbourhoods reach a target row of the band
    const int64_t i_begin = std::max<int64_t>(0, t_begin - r);
    const int64_t i_end = std::min<int64_t>(g.height, t_end + r);
    for (int64_t i = i_begin; i < i_end; ++i) {
      // taps dy with target row i + dy - r in [t_begin, t_end)
      const int64_t dy_begin = std::max<int64_t>(0, t_begin - i + r);
      const int64_t dy_end = std::min<int64_t>(K, t_end - i + r);
      pad_masks(masks_bg, i, dy_begin, dy_end, g, mask_rows.data());
      for (int64_t c0 = 0; c0 < Cg; c0 += kChannels) {
        const int64_t cs = std::min(kChannels, Cg - c0);
        for (int64_t c = 0; c < cs; ++c) {
          for (int64_t a = 0; a < s; ++a) {
            pad_row(grad_out + ((c_group + c0 + c) * g.out_height + s * i + a) * g.out_width,
                    g, grad_rows.data() + c * channel_rows + a * L);
          }
        }
        for (int64_t dy = dy_begin; dy < dy_end; ++dy) {
          for (int64_t a = 0; a < s; ++a) {
            for (int64_t dx = 0; dx < K; ++dx) {
              mask_at[a * K + dx] = (a * K2 + dy * K + dx) * L + s * (K - 1 - dx);
              grad_at[a * K + dx] = a * L + s * (K - 1 - dx);
            }
          }
          T* target = grad_x + ((c_group + c0) * g.height + i + dy - r) * W;
          for (int64_t t = 0; t < span; t += 2 * N) {
            Block<T> acc = Block<T>::zero();
            const T* mk = mask_rows.data() + t;
            const T* go = grad_rows.data() + t;
            for (int64_t term = 0; term < s * K; ++term) {
              const T* m = mk + mask_at[term];
              acc.fma(go + grad_at[term], channel_rows, S::load(m), S::load(m + N));
            }
            for (int64_t c = 0; c < cs; ++c) {
              add_lane_sums<T>(acc.lo(c), acc.hi(c), t, g, target + c * g.plane(),
                               spill.data());
            }
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------- checks

Geometry check(const at::Tensor& features_like, const at::Tensor& masks_like, int64_t B,
               int64_t C, int64_t H, int64_t W, int64_t kernel_size, int64_t groups,
               int64_t scale, const char* op) {
  TORCH_CHECK(features_like.device().is_cpu() && masks_like.device().is_cpu(), op,
              ": CPU tensors only");
  TORCH_CHECK(features_like.scalar_type() == masks_like.scalar_type(), op,
              ": both tensors must have one dtype, got ", features_like.scalar_type(), " and ",
              masks_like.scalar_type());
  TORCH_CHECK(features_like.scalar_type() == at::kFloat ||
                  features_like.scalar_type() == at::kDouble,
              op, ": float32 or float64 only, got ", features_like.scalar_type());
  TORCH_CHECK(features_like.is_contiguous() && masks_like.is_contiguous(), op,
              ": NCHW-contiguous tensors only");
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, op,
              ": kernel_size must be a positive odd integer, got ", kernel_size);
  TORCH_CHECK(scale >= 1, op, ": scale must be positive, got ", scale);
  TORCH_CHECK(groups >= 1 && C % groups == 0, op, ": channels (", C,
              ") must be divisible by groups (", groups, ")");
  const int64_t lanes = features_like.scalar_type() == at::kFloat ? Simd<float>::N
                                                                   : Simd<double>::N;
  return Geometry(B, C, H, W, groups, kernel_size, scale, lanes);
}

void check_masks(const at::Tensor& masks, const Geometry& g, const char* op) {
  TORCH_CHECK(masks.dim() == 4 && masks.size(0) == g.batch &&
                  masks.size(1) == g.groups * g.taps && masks.size(2) == g.out_height &&
                  masks.size(3) == g.out_width,
              op, ": masks must have shape (B, groups * k * k, s * H, s * W) = (", g.batch, ", ",
              g.groups * g.taps, ", ", g.out_height, ", ", g.out_width, "), got ",
              masks.sizes());
}

void check_grad_out(const at::Tensor& grad_out, const Geometry& g, const char* op) {
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == g.batch &&
                  grad_out.size(1) == g.channels && grad_out.size(2) == g.out_height &&
                  grad_out.size(3) == g.out_width,
              op, ": grad_out must have shape (B, C, s * H, s * W) = (", g.batch, ", ",
              g.channels, ", ", g.out_height, ", ", g.out_width, "), got ", grad_out.sizes());
}

template <typename Fn>
void dispatch(const at::Tensor& t, Fn&& fn) {
  if (t.scalar_type() == at::kFloat) {
    fn(float());
  } else {
    fn(double());
  }
}

}  // namespace

namespace mmdysample {

at::Tensor reassemble(const at::Tensor& features, const at::Tensor& masks, int64_t kernel_size,
                      int64_t groups, int64_t scale) {
  TORCH_CHECK(features.dim() == 4, "reassemble: features must be 4-D (B, C, H, W)");
  const Geometry g = check(features, masks, features.size(0), features.size(1),
                           features.size(2), features.size(3), kernel_size, groups, scale,
                           "reassemble");
  check_masks(masks, g, "reassemble");
  at::Tensor out = at::empty({g.batch, g.channels, g.out_height, g.out_width}, features.options());
  if (out.numel() == 0) return out;
  dispatch(features, [&](auto scalar) {
    using T = decltype(scalar);
    reassemble_kernel<T>(features.data_ptr<T>(), masks.data_ptr<T>(), out.data_ptr<T>(), g);
  });
  return out;
}

at::Tensor reassemble_mask_grad(const at::Tensor& grad_out, const at::Tensor& features,
                                int64_t kernel_size, int64_t groups, int64_t scale) {
  TORCH_CHECK(features.dim() == 4, "reassemble_mask_grad: features must be 4-D (B, C, H, W)");
  const Geometry g = check(features, grad_out, features.size(0), features.size(1),
                           features.size(2), features.size(3), kernel_size, groups, scale,
                           "reassemble_mask_grad");
  check_grad_out(grad_out, g, "reassemble_mask_grad");
  const std::vector<int64_t> size{g.batch, g.groups * g.taps, g.out_height, g.out_width};
  if (g.channels == 0) return at::zeros(size, features.options());  // an empty sum
  at::Tensor grad_masks = at::empty(size, features.options());
  if (grad_masks.numel() == 0) return grad_masks;
  dispatch(features, [&](auto scalar) {
    using T = decltype(scalar);
    mask_grad_kernel<T>(grad_out.data_ptr<T>(), features.data_ptr<T>(), grad_masks.data_ptr<T>(),
                        g);
  });
  return grad_masks;
}

at::Tensor reassemble_feature_grad(const at::Tensor& grad_out, const at::Tensor& masks,
                                   int64_t kernel_size, int64_t groups, int64_t scale) {
  TORCH_CHECK(grad_out.dim() == 4, "reassemble_feature_grad: grad_out must be 4-D");
  TORCH_CHECK(scale >= 1 && grad_out.size(2) % scale == 0 && grad_out.size(3) % scale == 0,
              "reassemble_feature_grad: grad_out's height and width must be multiples of scale");
  const Geometry g = check(grad_out, masks, grad_out.size(0), grad_out.size(1),
                           grad_out.size(2) / scale, grad_out.size(3) / scale, kernel_size,
                           groups, scale, "reassemble_feature_grad");
  check_masks(masks, g, "reassemble_feature_grad");
  at::Tensor grad_x = at::empty({g.batch, g.channels, g.height, g.width}, grad_out.options());
  if (grad_x.numel() == 0) return grad_x;
  dispatch(grad_out, [&](auto scalar) {
    using T = decltype(scalar);
    feature_grad_kernel<T>(grad_out.data_ptr<T>(), masks.data_ptr<T>(), grad_x.data_ptr<T>(), g);
  });
  return grad_x;
}

}  // namespace mmdysample
