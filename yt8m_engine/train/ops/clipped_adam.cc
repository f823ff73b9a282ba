// Yt8mClippedAdam: one variable's training update as the starter does it, in two passes over the weights
// instead of TensorFlow's fifteen:
//   g' = grad + l2 * var                       (the L2 penalty's gradient, l2 = --regularization_penalty x
//                                               --l2_penalty; 0 for an unregularized variable)
//   g' = g' * clip / |g'|  where |g'| > clip   (utils.clip_gradient_norms: each gradient by its own norm;
//                                               clip <= 0: no clip; an infinite or NaN norm scales, as TF's)
//   Adam as ResourceApplyAdam (tf.train.AdamOptimizer):
//     alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
//     m += (g' - m) * (1 - beta1);  v += (g'^2 - v) * (1 - beta2);  var -= m * alpha / (sqrt(v) + epsilon)
// Pass 1 (only with a clip) reads grad and var for the norm; pass 2 reads grad, var, m, v and writes
// var, m, v. The norm is summed in fixed blocks (float within a block, double across), so it does not
// depend on the number of threads. Built by yt8m_engine/train/ops/__init__.py on first use.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace yt8m {
using namespace tensorflow;

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define YT8M_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define YT8M_CLONES
#endif

constexpr int64_t kBlock = 1 << 15;

YT8M_CLONES float SumSquares(const float* __restrict__ g, const float* __restrict__ w, float l2, int64_t n) {
  float acc = 0.0f;
  if (l2 == 0.0f) {
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) acc += g[i] * g[i];
  } else {
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) {
      const float x = g[i] + l2 * w[i];
      acc += x * x;
    }
  }
  return acc;
}

YT8M_CLONES void Update(float* __restrict__ w, float* __restrict__ m, float* __restrict__ v,
                        const float* __restrict__ g, float l2, float scale, float alpha, float a1, float a2,
                        float eps, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float x = (g[i] + l2 * w[i]) * scale;
    const float mi = m[i] + (x - m[i]) * a1;
    const float vi = v[i] + (x * x - v[i]) * a2;
    m[i] = mi;
    v[i] = vi;
    w[i] -= (mi * alpha) / (std::sqrt(vi) + eps);
  }
}

class ClippedAdamOp : public OpKernel {
 public:
  explicit ClippedAdamOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("beta1", &beta1_));
    OP_REQUIRES_OK(c, c->GetAttr("beta2", &beta2_));
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<Var> vars[3];  // var, m, v
    for (int i = 0; i < 3; ++i) OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, i), &vars[i]));
    OP_REQUIRES(ctx, vars[0].get() != vars[1].get() && vars[0].get() != vars[2].get() &&
                         vars[1].get() != vars[2].get(),
                errors::InvalidArgument("var, m and v must be three variables"));
    std::vector<Var*> order = {vars[0].get(), vars[1].get(), vars[2].get()};
    std::sort(order.begin(), order.end());  // (the order TensorFlow's training ops lock in)
    mutex_lock lock0(*order[0]->mu()), lock1(*order[1]->mu()), lock2(*order[2]->mu());
    const Tensor& grad = ctx->input(3);
    for (int i = 0; i < 3; ++i) {
      Tensor* t = vars[i]->tensor();
      OP_REQUIRES(ctx, t->IsInitialized(), errors::FailedPrecondition("variable ", i, " is not initialized"));
      OP_REQUIRES(ctx, t->dtype() == DT_FLOAT && t->shape().IsSameSize(grad.shape()),
                  errors::InvalidArgument("variable ", i, " ", t->DebugString(),
                                          " does not match the gradient ", grad.shape().DebugString()));
      if (!t->RefCountIsOne()) {  // a tensor read earlier shares the buffer: update a copy (copy on write)
        Tensor copy;
        OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, t->shape(), &copy));
        if (t->TotalBytes() > 0) std::memcpy(copy.data(), t->data(), t->TotalBytes());
        *t = copy;
      }
    }
    auto scalar = [&](int i) { return ctx->input(i).scalar<float>()(); };
    const float lr = scalar(4), beta1_power = scalar(5), beta2_power = scalar(6), l2 = scalar(7),
                clip = scalar(8);
    float* w = vars[0]->tensor()->flat<float>().data();
    float* m = vars[1]->tensor()->flat<float>().data();
    float* v = vars[2]->tensor()->flat<float>().data();
    const float* g = grad.flat<float>().data();
    const int64_t n = grad.NumElements(), blocks = (n + kBlock - 1) / kBlock;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();

    float scale = 1.0f;
    if (clip > 0.0f) {
      std::vector<double> part(blocks, 0.0);
      Shard(pool->num_threads, pool->workers, blocks, 2 * kBlock, [&](int64_t lo, int64_t hi) {
        for (int64_t b = lo; b < hi; ++b) {
          const int64_t s = b * kBlock;
          part[b] = SumSquares(g + s, w + s, l2, std::min(n, s + kBlock) - s);
        }
      });
      double sum = 0.0;
      for (double p : part) sum += p;
      const float norm = std::sqrt(static_cast<float>(sum));
      if (!(norm <= clip)) scale = clip / norm;
    }
    const float alpha = lr * std::sqrt(1 - beta2_power) / (1 - beta1_power);
    const float a1 = 1 - beta1_, a2 = 1 - beta2_, eps = epsilon_;
    Shard(pool->num_threads, pool->workers, blocks, 8 * kBlock, [&](int64_t lo, int64_t hi) {
      const int64_t s = lo * kBlock, e = std::min(n, hi * kBlock);
      Update(w + s, m + s, v + s, g + s, l2, scale, alpha, a1, a2, eps, e - s);
    });
  }

 private:
  float beta1_, beta2_, epsilon_;
};

REGISTER_OP("Yt8mClippedAdam")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("grad: float")
    .Input("lr: float")
    .Input("beta1_power: float")
    .Input("beta2_power: float")
    .Input("l2: float")
    .Input("clip_norm: float")
    .Attr("beta1: float = 0.9")
    .Attr("beta2: float = 0.999")
    .Attr("epsilon: float = 1e-8")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext*) { return absl::OkStatus(); });

REGISTER_KERNEL_BUILDER(Name("Yt8mClippedAdam").Device(DEVICE_CPU), ClippedAdamOp);

}  // namespace yt8m
