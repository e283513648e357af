// Exact-fp32 GELU (erf), LayerNorm, bias add, transpose and their gradients, and a fused self-attention core for
// inference, for MindSpore ops.Custom(func_type="aot") on CPU.
//
// Entry points follow MindSpore's aot CPU signature:
//   int f(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
//         void *stream, void *extra)
// params holds the inputs followed by the output; a non-zero return makes MindSpore raise.
// The loops are branch-free so GCC vectorises them (#pragma omp simd, -fopenmp-simd). Large
// tensors are split over std::threads started for the call and joined before returning (no
// OpenMP pool whose idle threads would spin and steal cores from oneDNN's matmuls); the count is
// the CPUs in this thread's affinity mask, at most 8, or $MINDRAM_KERNEL_THREADS.
#include <sched.h>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace {

// exp(a) for a <= 0: Cody-Waite reduction + Cephes expf polynomial (~1 ulp); 0 below -87.
inline float exp_nonpos(float a) {
  a = a < -87.0f ? -87.0f : a;  // keeps 2^n a normal float; NaN passes through unchanged
  const float n = std::nearbyint(a * 1.44269504088896341f);
  float r = a - n * 0.693359375f;  // ln2 split in a hi part exact in fp32 and a lo part
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return a <= -87.0f ? 0.0f : p * scale;
}

// q = Phi(-|x|) = erfc(|x|/sqrt2)/2 from the Numerical Recipes erfc (relative error < 1.2e-7 for all
// arguments). GELU(x) = x * Phi(x) = x - x*q (x > 0) or x*q (x <= 0) keeps full precision in both tails.
// Limits: +inf -> +inf, -inf -> -0, NaN -> NaN.
inline float phi_lower_tail(float x) {
  const float z = std::fabs(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return 0.5f * t * exp_nonpos(p - z * z);
}

inline float clamp_finite(float x) {  // inf*0 -> 0, not NaN
  return x > 3.0e38f ? 3.0e38f : (x < -3.0e38f ? -3.0e38f : x);
}

inline float gelu_exact(float x) {
  const float xq = clamp_finite(x) * phi_lower_tail(x);
  return x > 0.0f ? x - xq : xq;
}

// dGELU/dx = Phi(x) + x * phi(x), phi the standard normal density. Limits: +inf -> 1, -inf -> 0.
inline float gelu_derivative(float x) {
  const float q = phi_lower_tail(x);
  const float cdf = x > 0.0f ? 1.0f - q : q;
  const float pdf = 0.398942280401432678f * exp_nonpos(-0.5f * x * x);
  return cdf + clamp_finite(x) * pdf;
}

inline int64_t numel(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < nd; ++i) n *= shape[i];
  return n;
}

int thread_count() {
  static const int count = [] {
    if (const char *env = std::getenv("MINDRAM_KERNEL_THREADS")) {
      const int n = std::atoi(env);
      return n < 1 ? 1 : (n > 8 ? 8 : n);
    }
    cpu_set_t set;
    const int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    return n < 1 ? 1 : (n > 8 ? 8 : n);
  }();
  return count;
}

// How many chunks parallel_for splits n items into (1 .. thread_count()).
int64_t chunk_count(int64_t n, int64_t grain) {
  const int64_t t = n / grain < thread_count() ? n / grain : thread_count();
  return t < 1 ? 1 : t;
}

// Runs fn(chunk, begin, end) over [0, n) in chunk_count(n, grain) contiguous chunks, one thread each.
template <class F>
void parallel_chunks(int64_t n, int64_t grain, F fn) {
  const int64_t t = chunk_count(n, grain);
  if (t <= 1) return fn(int64_t{0}, int64_t{0}, n);
  const int64_t chunk = (n + t - 1) / t;
  std::thread workers[7];
  int started = 0;
  for (int64_t i = 1; i < t; ++i) {
    const int64_t lo = i * chunk < n ? i * chunk : n, hi = lo + chunk < n ? lo + chunk : n;
    try {
      workers[started] = std::thread(fn, i, lo, hi);
      ++started;
    } catch (...) {
      fn(i, lo, hi);  // no thread available: do that chunk here
    }
  }
  fn(int64_t{0}, int64_t{0}, chunk);
  for (int i = 0; i < started; ++i) workers[i].join();
}

// Runs fn(begin, end) over [0, n) in contiguous chunks of at least `grain` items.
template <class F>
void parallel_for(int64_t n, int64_t grain, F fn) {
  parallel_chunks(n, grain, [&fn](int64_t, int64_t lo, int64_t hi) { fn(lo, hi); });
}

bool all_float32(int n, const char **dtypes) {
  for (int i = 0; i < n; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  return true;
}

// Mean and 1/sqrt(variance + eps) of one row of c floats: two passes in double.
inline void row_statistics(const float *xr, int64_t c, double eps, double *mean_out, double *rstd_out) {
  double sum = 0.0, ss = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < c; ++i) sum += xr[i];
  const double mean = sum / static_cast<double>(c);
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < c; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
  *mean_out = mean;
  *rstd_out = 1.0 / std::sqrt(ss / static_cast<double>(c) + eps);
}

// out[i] = sum over chunks k = 0 .. t-1 of sums[k * stride + i], i < c: the per-thread partial sums of a
// parallel_chunks loop added in a fixed order (the result does not depend on timing), rounded once to float.
void add_chunk_sums(const double *sums, int64_t t, int64_t stride, int64_t c, float *out) {
  for (int64_t i = 0; i < c; ++i) {
    double a = 0.0;
    for (int64_t k = 0; k < t; ++k) a += sums[k * stride + i];
    out[i] = static_cast<float>(a);
  }
}

constexpr int64_t kGrain = 1 << 17;  // min elements per thread (starting one costs tens of us)

}  // namespace

extern "C" int MindramGelu(int nparam, void **params, int *ndims, int64_t **shapes,
                           const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 2 || std::strcmp(dtypes[0], "float32") != 0) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  parallel_for(numel(ndims[0], shapes[0]), kGrain, [=](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) y[i] = gelu_exact(x[i]);
  });
  return 0;
}

// LayerNorm over the last axis: inputs x (..., C), weight (C), bias (C), eps (1); output like x.
// Two-pass mean / variance and the affine map in double, one rounding to float at the end.
extern "C" int MindramLayerNorm(int nparam, void **params, int *ndims, int64_t **shapes,
                                const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 5 || ndims[0] < 1 || !all_float32(5, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *b = static_cast<const float *>(params[2]);
  const double eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  const int64_t c = shapes[0][ndims[0] - 1];
  if (c <= 0 || numel(ndims[1], shapes[1]) != c || numel(ndims[2], shapes[2]) != c) return 1;
  parallel_for(numel(ndims[0], shapes[0]) / c, (kGrain + c - 1) / c, [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float *xr = x + r * c;
      float *yr = y + r * c;
      double mean, rstd;
      row_statistics(xr, c, eps, &mean, &rstd);
#pragma omp simd
      for (int64_t i = 0; i < c; ++i)
        yr[i] = static_cast<float>((xr[i] - mean) * rstd * w[i] + static_cast<double>(b[i]));
    }
  });
  return 0;
}

// Gradient of MindramGelu: inputs x, dout (same shape); output dx = dout * (Phi(x) + x * phi(x)).
extern "C" int MindramGeluGrad(int nparam, void **params, int *ndims, int64_t **shapes,
                               const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 3 || !all_float32(3, dtypes)) return 1;
  const int64_t n = numel(ndims[0], shapes[0]);
  if (numel(ndims[1], shapes[1]) != n) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dout = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  parallel_for(n, kGrain, [=](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) dx[i] = dout[i] * gelu_derivative(x[i]);
  });
  return 0;
}

// Gradient of MindramLayerNorm: inputs x (..., C), weight (C), dout (like x), eps (1); outputs dx (like x),
// dweight (C), dbias (C). Per row, with xhat = (x - mean) * rstd and g = dout * weight:
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight = sum over rows of dout * xhat, dbias = sum of
// dout. Row statistics and the sums are in double; each thread sums its rows, the threads' sums are added
// in a fixed order (the result does not depend on timing).
extern "C" int MindramLayerNormGrad(int nparam, void **params, int *ndims, int64_t **shapes,
                                    const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 7 || ndims[0] < 1 || !all_float32(7, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *dout = static_cast<const float *>(params[2]);
  const double eps = *static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dw = static_cast<float *>(params[5]);
  float *db = static_cast<float *>(params[6]);
  const int64_t c = shapes[0][ndims[0] - 1];
  if (c <= 0 || numel(ndims[1], shapes[1]) != c || numel(ndims[2], shapes[2]) != numel(ndims[0], shapes[0]))
    return 1;
  const int64_t rows = numel(ndims[0], shapes[0]) / c, grain = (kGrain + c - 1) / c;
  const int64_t t = chunk_count(rows, grain);
  double *sums = static_cast<double *>(std::calloc(static_cast<size_t>(t * 2 * c), sizeof(double)));
  if (sums == nullptr) return 1;
  parallel_chunks(rows, grain, [=](int64_t chunk, int64_t lo, int64_t hi) {
    double *sw = sums + chunk * 2 * c, *sb = sw + c;
    for (int64_t r = lo; r < hi; ++r) {
      const float *xr = x + r * c, *gr = dout + r * c;
      float *dxr = dx + r * c;
      double mean, rstd;
      row_statistics(xr, c, eps, &mean, &rstd);
      double g_sum = 0.0, gx_sum = 0.0;
#pragma omp simd reduction(+ : g_sum, gx_sum)
      for (int64_t i = 0; i < c; ++i) {
        const double xhat = (xr[i] - mean) * rstd, g = static_cast<double>(gr[i]) * w[i];
        g_sum += g;
        gx_sum += g * xhat;
        sw[i] += gr[i] * xhat;
        sb[i] += gr[i];
      }
      const double g_mean = g_sum / static_cast<double>(c), gx_mean = gx_sum / static_cast<double>(c);
#pragma omp simd
      for (int64_t i = 0; i < c; ++i) {
        const double xhat = (xr[i] - mean) * rstd;
        dxr[i] = static_cast<float>(rstd * (static_cast<double>(gr[i]) * w[i] - g_mean - xhat * gx_mean));
      }
    }
  });
  add_chunk_sums(sums, t, 2 * c, c, dw);
  add_chunk_sums(sums + c, t, 2 * c, c, db);
  std::free(sums);
  return 0;
}

// Bias add over the last axis: inputs x (..., C), bias (C); output y = x + bias (one pass, as BiasAdd).
extern "C" int MindramBiasAdd(int nparam, void **params, int *ndims, int64_t **shapes,
                              const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 3 || ndims[0] < 1 || !all_float32(3, dtypes)) return 1;
  const int64_t c = shapes[0][ndims[0] - 1];
  if (c <= 0 || numel(ndims[1], shapes[1]) != c) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  parallel_for(numel(ndims[0], shapes[0]) / c, (kGrain + c - 1) / c, [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float *xr = x + r * c;
      float *yr = y + r * c;
#pragma omp simd
      for (int64_t i = 0; i < c; ++i) yr[i] = xr[i] + b[i];
    }
  });
  return 0;
}

// Gradient of a bias added over the last axis: input dout (..., C); output (C) = the sum of dout's rows.
// Each thread sums its rows in double, the threads' sums are added in a fixed order.
extern "C" int MindramBiasGrad(int nparam, void **params, int *ndims, int64_t **shapes,
                               const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 2 || ndims[0] < 1 || !all_float32(2, dtypes)) return 1;
  const int64_t c = shapes[0][ndims[0] - 1];
  if (c <= 0 || numel(ndims[1], shapes[1]) != c) return 1;
  const float *dout = static_cast<const float *>(params[0]);
  float *db = static_cast<float *>(params[1]);
  const int64_t rows = numel(ndims[0], shapes[0]) / c, grain = (kGrain + c - 1) / c;
  const int64_t t = chunk_count(rows, grain);
  double *sums = static_cast<double *>(std::calloc(static_cast<size_t>(t * c), sizeof(double)));
  if (sums == nullptr) return 1;
  parallel_chunks(rows, grain, [=](int64_t chunk, int64_t lo, int64_t hi) {
    double *s = sums + chunk * c;
    for (int64_t r = lo; r < hi; ++r) {
      const float *gr = dout + r * c;
#pragma omp simd
      for (int64_t i = 0; i < c; ++i) s[i] += gr[i];
    }
  });
  add_chunk_sums(sums, t, c, c, db);
  std::free(sums);
  return 0;
}

// Sum of squares: input x (any shape); output (1) = sum of x*x, accumulated in double (each thread its chunk,
// the chunks' sums added in a fixed order). The global gradient norm of clipping is built from these.
extern "C" int MindramSquareSum(int nparam, void **params, int *ndims, int64_t **shapes,
                                const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 2 || !all_float32(2, dtypes) || numel(ndims[1], shapes[1]) != 1) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const int64_t n = numel(ndims[0], shapes[0]);
  const int64_t t = chunk_count(n, kGrain);
  double partial[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  parallel_chunks(n, kGrain, [=, &partial](int64_t chunk, int64_t lo, int64_t hi) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = lo; i < hi; ++i) s += static_cast<double>(x[i]) * x[i];
    partial[chunk] = s;
  });
  add_chunk_sums(partial, t, 1, 1, static_cast<float *>(params[1]));
  return 0;
}

// Transpose: inputs x (float32, rank 1..8) and perm (int64, rank values); output y = x permuted
// (y.shape[i] = x.shape[perm[i]]), contiguous. Trailing axes that stay in place are copied as one block.
// MindSpore 2.10's CPU Transpose keeps the memory of its tensors for the life of a compiled graph (a ViT or
// Swin graph holds every attention map); this kernel's tensors are freed and reused like any other op's.
extern "C" int MindramTranspose(int nparam, void **params, int *ndims, int64_t **shapes,
                                const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  if (nparam != 3 || std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[2], "float32") != 0 ||
      std::strcmp(dtypes[1], "int64") != 0)
    return 1;
  const int r = ndims[0];
  if (r < 1 || r > 8 || ndims[2] != r || numel(ndims[1], shapes[1]) != r) return 1;
  const int64_t *perm = static_cast<const int64_t *>(params[1]);
  int64_t in_stride[8], out_dim[8], src_stride[8];
  bool seen[8] = {false, false, false, false, false, false, false, false};
  in_stride[r - 1] = 1;
  for (int i = r - 2; i >= 0; --i) in_stride[i] = in_stride[i + 1] * shapes[0][i + 1];
  for (int i = 0; i < r; ++i) {
    if (perm[i] < 0 || perm[i] >= r || seen[perm[i]]) return 1;
    seen[perm[i]] = true;
    out_dim[i] = shapes[0][perm[i]];
    src_stride[i] = in_stride[perm[i]];
    if (shapes[2][i] != out_dim[i]) return 1;
  }
  int outer = r;  // axes [outer, r) keep their place: one contiguous block per index of the others
  while (outer > 0 && perm[outer - 1] == outer - 1) --outer;
  int64_t block = 1;
  for (int i = outer; i < r; ++i) block *= out_dim[i];
  int64_t count = 1;
  for (int i = 0; i < outer; ++i) count *= out_dim[i];
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[2]);
  if (count == 0 || block == 0) return 0;
  parallel_for(count, (kGrain + block - 1) / block, [=](int64_t lo, int64_t hi) {
    int64_t index[8], offset = 0, rest = lo;
    for (int i = outer - 1; i >= 0; --i) {  // multi-index of item lo over the outer output axes
      index[i] = rest % out_dim[i];
      rest /= out_dim[i];
      offset += index[i] * src_stride[i];
    }
    for (int64_t item = lo; item < hi; ++item) {
      if (block == 1) {
        y[item] = x[offset];
      } else {
        std::memcpy(y + item * block, x + offset, static_cast<size_t>(block) * sizeof(float));
      }
      for (int i = outer - 1; i >= 0; --i) {  // next multi-index
        offset += src_stride[i];
        if (++index[i] < out_dim[i]) break;
        offset -= index[i] * src_stride[i];
        index[i] = 0;
      }
    }
  });
  return 0;
}

// Self-attention core for inference: inputs qkv (B, N, 3C) (q, k and v side by side, each C = H * D wide, heads
// contiguous inside each), scale (H,) (its shape gives H, its first value the scale of q), then for
// MindramBiasedAttention a bias (H, N, N), and for MindramMaskedAttention that bias and a mask (G, N, N) with
// B % G == 0; output (B, N, C), the heads side by side:
// out[b, i, h*D:(h+1)*D] = softmax(scale q_i . k_j [+ bias[h, i, j]] [+ mask[b % G, i, j]] over j) @ v, with
// j <= i when causal (Swin: relative-position bias and shift mask; CLIP's text tower: causal).
// One task per (b, h): its keys are copied transposed (D x Np, Np = N rounded up to a tile, zero-padded) and its values
// contiguous, then blocks of kRows queries take their scores (kRows x kTile register tiles over D), softmax (row sum
// in double) and weighted sum of values. No (B, H, N, N) score tensor exists, and none of the split / head-transpose /
// scale / merge tensors of the op-by-op graph.
namespace {

// queries per block x keys (or value columns) per tile: the accumulators fill the vector registers
#if defined(__AVX512F__)
constexpr int64_t kRows = 8, kTile = 32;
#else
constexpr int64_t kRows = 6, kTile = 16;
#endif

template <bool causal>
void attention_head(const float *qkv, float *out, int64_t n, int64_t c, int64_t d, int64_t h, float scale,
                    const float *bias, const float *mask, float *kt, float *v, float *s) {
  const int64_t np = (n + kTile - 1) / kTile * kTile, dp = (d + kTile - 1) / kTile * kTile, stride = 3 * c;
  for (int64_t j = 0; j < np; ++j) {
    const float *kj = qkv + (j < n ? j : 0) * stride + c + h * d;
    for (int64_t e = 0; e < d; ++e) kt[e * np + j] = j < n ? kj[e] : 0.0f;
  }
  for (int64_t j = 0; j < n; ++j) std::memcpy(v + j * dp, qkv + j * stride + 2 * c + h * d, d * sizeof(float));
  for (int64_t i0 = 0; i0 < n; i0 += kRows) {
    const int64_t rows = n - i0 < kRows ? n - i0 : kRows;
    float q[kRows][512];
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t e = 0; e < d; ++e) q[r][e] = r < rows ? qkv[(i0 + r) * stride + h * d + e] * scale : 0.0f;
    const int64_t keys = causal ? (i0 + rows + kTile - 1) / kTile * kTile : np;
    for (int64_t j0 = 0; j0 < keys; j0 += kTile) {
      float acc[kRows][kTile] = {};
      for (int64_t e = 0; e < d; ++e) {
        const float *kr = kt + e * np + j0;
        for (int64_t r = 0; r < kRows; ++r) {
          const float qe = q[r][e];
#pragma omp simd
          for (int64_t t = 0; t < kTile; ++t) acc[r][t] += qe * kr[t];
        }
      }
      for (int64_t r = 0; r < kRows; ++r) std::memcpy(s + r * np + j0, acc[r], sizeof(acc[r]));
    }
    for (int64_t r = 0; r < rows; ++r) {
      float *sr = s + r * np;
      const int64_t keep = causal ? i0 + r + 1 : n;
      if (bias != nullptr) {
        const float *br = bias + (i0 + r) * n;
#pragma omp simd
        for (int64_t j = 0; j < keep; ++j) sr[j] += br[j];
      }
      if (mask != nullptr) {
        const float *mr = mask + (i0 + r) * n;
#pragma omp simd
        for (int64_t j = 0; j < keep; ++j) sr[j] += mr[j];
      }
      float top = sr[0];
      for (int64_t j = 1; j < keep; ++j) top = sr[j] > top ? sr[j] : top;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < keep; ++j) {
        sr[j] = exp_nonpos(sr[j] - top);
        sum += sr[j];
      }
      const float inverse = static_cast<float>(1.0 / sum);
#pragma omp simd
      for (int64_t j = 0; j < keep; ++j) sr[j] *= inverse;
      for (int64_t j = keep; j < n; ++j) sr[j] = 0.0f;
    }
    const int64_t keys_used = causal ? (i0 + rows < n ? i0 + rows : n) : n;
    for (int64_t e0 = 0; e0 < d; e0 += kTile) {
      const int64_t width = d - e0 < kTile ? d - e0 : kTile;
      float acc[kRows][kTile] = {};
      for (int64_t j = 0; j < keys_used; ++j) {
        const float *vj = v + j * dp + e0;
        for (int64_t r = 0; r < kRows; ++r) {
          const float p = s[r * np + j];
#pragma omp simd
          for (int64_t t = 0; t < kTile; ++t) acc[r][t] += p * vj[t];
        }
      }
      for (int64_t r = 0; r < rows; ++r) std::memcpy(out + (i0 + r) * c + h * d + e0, acc[r], width * sizeof(float));
    }
  }
}

// Inputs (qkv, scale[, bias[, mask]]) then the output; `extra` = how many of bias and mask. Non-zero on a shape,
// dtype or memory problem.
template <bool causal>
int attention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, int extra) {
  if (nparam != 3 + extra || ndims[0] != 3 || ndims[1] != 1 || !all_float32(nparam, dtypes)) return 1;
  const int o = nparam - 1;
  const int64_t b = shapes[0][0], n = shapes[0][1], heads = shapes[1][0];
  if (b <= 0 || n <= 0 || heads <= 0 || shapes[0][2] % (3 * heads) != 0 || ndims[o] != 3) return 1;
  const int64_t c = shapes[0][2] / 3, d = c / heads, groups = extra == 2 ? shapes[3][0] : 1;
  if (d > 512 || shapes[o][0] != b || shapes[o][1] != n || shapes[o][2] != c) return 1;
  if (extra >= 1 && (ndims[2] != 3 || shapes[2][0] != heads || shapes[2][1] != n || shapes[2][2] != n)) return 1;
  if (extra == 2 && (ndims[3] != 3 || groups <= 0 || b % groups != 0 || shapes[3][1] != n || shapes[3][2] != n))
    return 1;
  const float *qkv = static_cast<const float *>(params[0]);
  const float scale = static_cast<const float *>(params[1])[0];
  const float *bias = extra >= 1 ? static_cast<const float *>(params[2]) : nullptr;
  const float *mask = extra == 2 ? static_cast<const float *>(params[3]) : nullptr;
  float *out = static_cast<float *>(params[o]);
  const int64_t np = (n + kTile - 1) / kTile * kTile, dp = (d + kTile - 1) / kTile * kTile;
  std::atomic<bool> failed{false};
  parallel_for(b * heads, 1, [=, &failed](int64_t lo, int64_t hi) {
    float *buffer = static_cast<float *>(std::calloc(d * np + np * dp + kRows * np, sizeof(float)));
    if (buffer == nullptr) {
      failed = true;
      return;
    }
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t batch = task / heads, h = task % heads;
      attention_head<causal>(qkv + batch * n * 3 * c, out + batch * n * c, n, c, d, h, scale,
                             bias == nullptr ? nullptr : bias + h * n * n,
                             mask == nullptr ? nullptr : mask + (batch % groups) * n * n, buffer, buffer + d * np,
                             buffer + d * np + np * dp);
    }
    std::free(buffer);
  });
  return failed ? 1 : 0;
}

// Gradient of MindramAttention / MindramCausalAttention: inputs qkv, scale, out (the forward's output) and dout,
// all as in the forward; output dqkv (B, N, 3C). Per (b, h), by blocks of kRows queries, the probabilities P are
// recomputed from q and k (nothing of the forward is kept but its output), then with dP = dout v^T and
// delta_i = dout_i . out_i: dS = P * (dP - delta), dq = scale dS k, dk += scale dS^T q, dv += P^T dout.
template <bool causal>
void attention_head_grad(const float *qkv, const float *out, const float *dout, float *dqkv, int64_t n, int64_t c,
                         int64_t d, int64_t h, float scale, float *work) {
  const int64_t np = (n + kTile - 1) / kTile * kTile, dp = (d + kTile - 1) / kTile * kTile, stride = 3 * c;
  float *kt = work, *vt = kt + d * np, *k = vt + d * np, *dk = k + n * dp, *dv = dk + n * dp, *p = dv + n * dp;
  float *ds = p + kRows * np;
  for (int64_t j = 0; j < np; ++j) {
    const float *kj = qkv + (j < n ? j : 0) * stride + c + h * d, *vj = kj + c;
    for (int64_t e = 0; e < d; ++e) {
      kt[e * np + j] = j < n ? kj[e] : 0.0f;
      vt[e * np + j] = j < n ? vj[e] : 0.0f;
    }
  }
  for (int64_t j = 0; j < n; ++j) std::memcpy(k + j * dp, qkv + j * stride + c + h * d, d * sizeof(float));
  std::memset(dk, 0, sizeof(float) * n * dp);
  std::memset(dv, 0, sizeof(float) * n * dp);
  for (int64_t i0 = 0; i0 < n; i0 += kRows) {
    const int64_t rows = n - i0 < kRows ? n - i0 : kRows;
    float q[kRows][512], g[kRows][512], delta[kRows];
    for (int64_t r = 0; r < kRows; ++r) {
      double dot = 0.0;
      for (int64_t e = 0; e < d; ++e) {
        const bool live = r < rows;
        q[r][e] = live ? qkv[(i0 + r) * stride + h * d + e] * scale : 0.0f;
        g[r][e] = live ? dout[(i0 + r) * c + h * d + e] : 0.0f;
        dot += live ? static_cast<double>(g[r][e]) * out[(i0 + r) * c + h * d + e] : 0.0;
      }
      delta[r] = static_cast<float>(dot);
    }
    const int64_t keys = causal ? (i0 + rows + kTile - 1) / kTile * kTile : np;
    for (int64_t j0 = 0; j0 < keys; j0 += kTile) {  // scores into p, dP into ds
      float acc[kRows][kTile] = {}, dacc[kRows][kTile] = {};
      for (int64_t e = 0; e < d; ++e) {
        const float *kr = kt + e * np + j0, *vr = vt + e * np + j0;
        for (int64_t r = 0; r < kRows; ++r) {
          const float qe = q[r][e], ge = g[r][e];
#pragma omp simd
          for (int64_t t = 0; t < kTile; ++t) {
            acc[r][t] += qe * kr[t];
            dacc[r][t] += ge * vr[t];
          }
        }
      }
      for (int64_t r = 0; r < kRows; ++r) {
        std::memcpy(p + r * np + j0, acc[r], sizeof(acc[r]));
        std::memcpy(ds + r * np + j0, dacc[r], sizeof(dacc[r]));
      }
    }
    for (int64_t r = 0; r < kRows; ++r) {
      float *pr = p + r * np, *dr = ds + r * np;
      const int64_t keep = r >= rows ? 0 : (causal ? i0 + r + 1 : n);
      if (keep > 0) {
        float top = pr[0];
        for (int64_t j = 1; j < keep; ++j) top = pr[j] > top ? pr[j] : top;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < keep; ++j) {
          pr[j] = exp_nonpos(pr[j] - top);
          sum += pr[j];
        }
        const float inverse = static_cast<float>(1.0 / sum), dl = delta[r];
#pragma omp simd
        for (int64_t j = 0; j < keep; ++j) {
          pr[j] *= inverse;
          dr[j] = pr[j] * (dr[j] - dl);
        }
      }
      for (int64_t j = keep; j < np; ++j) pr[j] = dr[j] = 0.0f;
    }
    const int64_t keys_used = causal ? (i0 + rows < n ? i0 + rows : n) : n;
    for (int64_t e0 = 0; e0 < d; e0 += kTile) {  // dq = scale dS k
      const int64_t width = d - e0 < kTile ? d - e0 : kTile;
      float acc[kRows][kTile] = {};
      for (int64_t j = 0; j < keys_used; ++j) {
        const float *kj = k + j * dp + e0;
        for (int64_t r = 0; r < kRows; ++r) {
          const float w = ds[r * np + j];
#pragma omp simd
          for (int64_t t = 0; t < kTile; ++t) acc[r][t] += w * kj[t];
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        float *dq = dqkv + (i0 + r) * stride + h * d + e0;
        for (int64_t t = 0; t < width; ++t) dq[t] = acc[r][t] * scale;
      }
    }
    for (int64_t j = 0; j < keys_used; ++j) {  // dk += dS^T (scale q), dv += P^T dout
      float *dkj = dk + j * dp, *dvj = dv + j * dp;
      for (int64_t r = 0; r < rows; ++r) {
        const float w = ds[r * np + j], pj = p[r * np + j];
#pragma omp simd
        for (int64_t e = 0; e < d; ++e) {
          dkj[e] += w * q[r][e];
          dvj[e] += pj * g[r][e];
        }
      }
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    std::memcpy(dqkv + j * stride + c + h * d, dk + j * dp, d * sizeof(float));
    std::memcpy(dqkv + j * stride + 2 * c + h * d, dv + j * dp, d * sizeof(float));
  }
}

// Inputs (qkv, scale, out, dout) then dqkv. Non-zero on a shape, dtype or memory problem.
template <bool causal>
int attention_grad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 5 || ndims[0] != 3 || ndims[1] != 1 || !all_float32(nparam, dtypes)) return 1;
  const int64_t b = shapes[0][0], n = shapes[0][1], heads = shapes[1][0];
  if (b <= 0 || n <= 0 || heads <= 0 || shapes[0][2] % (3 * heads) != 0) return 1;
  const int64_t c = shapes[0][2] / 3, d = c / heads;
  for (int i = 2; i < 5; ++i)
    if (ndims[i] != 3 || shapes[i][0] != b || shapes[i][1] != n || shapes[i][2] != (i == 4 ? 3 * c : c)) return 1;
  if (d > 512) return 1;
  const float *qkv = static_cast<const float *>(params[0]);
  const float scale = static_cast<const float *>(params[1])[0];
  const float *out = static_cast<const float *>(params[2]), *dout = static_cast<const float *>(params[3]);
  float *dqkv = static_cast<float *>(params[4]);
  const int64_t np = (n + kTile - 1) / kTile * kTile, dp = (d + kTile - 1) / kTile * kTile;
  std::atomic<bool> failed{false};
  parallel_for(b * heads, 1, [=, &failed](int64_t lo, int64_t hi) {
    float *work = static_cast<float *>(std::calloc(2 * d * np + 3 * n * dp + 2 * kRows * np, sizeof(float)));
    if (work == nullptr) {
      failed = true;
      return;
    }
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t batch = task / heads, h = task % heads;
      attention_head_grad<causal>(qkv + batch * n * 3 * c, out + batch * n * c, dout + batch * n * c,
                                  dqkv + batch * n * 3 * c, n, c, d, h, scale, work);
    }
    std::free(work);
  });
  return failed ? 1 : 0;
}

}  // namespace

extern "C" int MindramAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  (void)stream, (void)extra;
  return attention<false>(nparam, params, ndims, shapes, dtypes, 0);
}

extern "C" int MindramCausalAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                      void *stream, void *extra) {
  (void)stream, (void)extra;
  return attention<true>(nparam, params, ndims, shapes, dtypes, 0);
}

extern "C" int MindramBiasedAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                      void *stream, void *extra) {
  (void)stream, (void)extra;
  return attention<false>(nparam, params, ndims, shapes, dtypes, 1);
}

extern "C" int MindramMaskedAttention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                      void *stream, void *extra) {
  (void)stream, (void)extra;
  return attention<false>(nparam, params, ndims, shapes, dtypes, 2);
}

extern "C" int MindramAttentionGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                    void *stream, void *extra) {
  (void)stream, (void)extra;
  return attention_grad<false>(nparam, params, ndims, shapes, dtypes);
}

extern "C" int MindramCausalAttentionGrad(int nparam, void **params, int *ndims, int64_t **shapes,
                                          const char **dtypes, void *stream, void *extra) {
  (void)stream, (void)extra;
  return attention_grad<true>(nparam, params, ndims, shapes, dtypes);
}
