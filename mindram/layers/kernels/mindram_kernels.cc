// Exact-fp32 GELU (erf) and LayerNorm for MindSpore ops.Custom(func_type="aot") on CPU.
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

// GELU(x) = x * Phi(x) with q = Phi(-|x|) = erfc(|x|/sqrt2)/2 from the Numerical Recipes erfc
// (relative error < 1.2e-7 for all arguments), so y = x - x*q (x > 0) or x*q (x <= 0) keeps full
// precision in both tails. Limits: +inf -> +inf, -inf -> -0, NaN -> NaN.
inline float gelu_exact(float x) {
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
  const float q = 0.5f * t * exp_nonpos(p - z * z);
  const float xc = x > 3.0e38f ? 3.0e38f : (x < -3.0e38f ? -3.0e38f : x);  // inf*0 -> 0, not NaN
  const float xq = xc * q;
  return x > 0.0f ? x - xq : xq;
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

// Runs fn(begin, end) over [0, n) in contiguous chunks of at least `grain` items.
template <class F>
void parallel_for(int64_t n, int64_t grain, F fn) {
  int64_t t = n / grain < thread_count() ? n / grain : thread_count();
  if (t <= 1) return fn(int64_t{0}, n);
  const int64_t chunk = (n + t - 1) / t;
  std::thread workers[7];
  int started = 0;
  for (int64_t i = 1; i < t; ++i) {
    const int64_t lo = i * chunk, hi = lo + chunk < n ? lo + chunk : n;
    try {
      workers[started] = std::thread(fn, lo, hi);
      ++started;
    } catch (...) {
      fn(lo, hi);  // no thread available: do that chunk here
    }
  }
  fn(int64_t{0}, chunk);
  for (int i = 0; i < started; ++i) workers[i].join();
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
  if (nparam != 5 || ndims[0] < 1) return 1;
  for (int i = 0; i < 5; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return 1;
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
      double sum = 0.0, ss = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < c; ++i) sum += xr[i];
      const double mean = sum / static_cast<double>(c);
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < c; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
      const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(c) + eps);
#pragma omp simd
      for (int64_t i = 0; i < c; ++i)
        yr[i] = static_cast<float>((xr[i] - mean) * rstd * w[i] + static_cast<double>(b[i]));
    }
  });
  return 0;
}
