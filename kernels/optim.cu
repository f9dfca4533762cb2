// Optimizer updates as CUDA C grid-stride kernels for the cupy backend.
//
// These restate backprop_gpu/optim/rules.py, the single statement of each rule;
// tests/test_fused_kernels.py checks every variant against it, and checks that
// each kernel's parameters are (p, g, the rule's all_states, n, its hyper_names).
// Variant flags are template parameters, so each variant compiles branch-free;
// cupy_impl names one instance per variant through name_expressions. Kernels
// take every state buffer of their rule; the launcher passes a dummy pointer
// for states a variant does not use (never read: the flag is false).
// Per-step scalars (bias corrections, decayed lr, ...) come from the host.
//
// Standalone check: nvcc --ptx -arch=sm_90 -DBACKPROP_GPU_COMPILE_CHECK optim.cu

#define GRID_STRIDE(i, n) \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)

template <typename T, bool MOMENTUM, bool NESTEROV, bool DECAY, bool MAXIMIZE>
__global__ void sgd(T* p, const T* g, T* momentum_buffer, long long n,
                    T lr, T wd, T momentum, T one_minus_dampening, T first) {
  GRID_STRIDE(i, n) {
    T pi = p[i];
    T d = MAXIMIZE ? -g[i] : g[i];
    if (DECAY) d = d + wd * pi;
    if (MOMENTUM) {
      T b = (first != T(0)) ? d : momentum_buffer[i] * momentum + one_minus_dampening * d;
      momentum_buffer[i] = b;
      d = NESTEROV ? d + momentum * b : b;
    }
    p[i] = pi - lr * d;
  }
}

template <typename T, bool DECAY, bool MAXIMIZE>
__global__ void adagrad(T* p, const T* g, T* sum, long long n, T clr, T wd, T eps) {
  GRID_STRIDE(i, n) {
    T pi = p[i];
    T d = MAXIMIZE ? -g[i] : g[i];
    if (DECAY) d = d + wd * pi;
    T s = sum[i] + d * d;
    sum[i] = s;
    p[i] = pi - clr * (d / (sqrt(s) + eps));
  }
}

template <typename T, bool DECAY, bool MAXIMIZE>
__global__ void adadelta(T* p, const T* g, T* square_avg, T* acc_delta, long long n,
                         T lr, T rho, T one_minus_rho, T eps, T wd) {
  GRID_STRIDE(i, n) {
    T pi = p[i];
    T d = MAXIMIZE ? -g[i] : g[i];
    if (DECAY) d = d + wd * pi;
    T sq = square_avg[i] * rho + one_minus_rho * d * d;
    T std_ = sqrt(sq + eps);
    T delta = sqrt(acc_delta[i] + eps) / std_ * d;
    square_avg[i] = sq;
    acc_delta[i] = acc_delta[i] * rho + one_minus_rho * delta * delta;
    p[i] = pi - lr * delta;
  }
}

template <typename T, bool MOMENTUM, bool CENTERED, bool DECAY, bool MAXIMIZE>
__global__ void rmsprop(T* p, const T* g, T* square_avg, T* momentum_buffer, T* grad_avg,
                        long long n, T lr, T alpha, T one_minus_alpha, T eps, T wd, T momentum) {
  GRID_STRIDE(i, n) {
    T pi = p[i];
    T d = MAXIMIZE ? -g[i] : g[i];
    if (DECAY) d = d + wd * pi;
    T sq = square_avg[i] * alpha + one_minus_alpha * d * d;
    square_avg[i] = sq;
    T avg;
    if (CENTERED) {
      T ga = grad_avg[i];
      ga = ga + one_minus_alpha * (d - ga);
      grad_avg[i] = ga;
      avg = sqrt(sq - ga * ga) + eps;
    } else {
      avg = sqrt(sq) + eps;
    }
    if (MOMENTUM) {
      T b = momentum_buffer[i] * momentum + d / avg;
      momentum_buffer[i] = b;
      p[i] = pi - lr * b;
    } else {
      p[i] = pi - lr * (d / avg);
    }
  }
}

// Adam (DECOUPLED=false: L2 decay added to the gradient) and AdamW (DECOUPLED=true).
template <typename T, bool DECOUPLED, bool AMSGRAD, bool DECAY, bool MAXIMIZE>
__global__ void adam(T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, long long n,
                     T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T wd,
                     T decay_factor, T step_size, T bc2_sqrt) {
  GRID_STRIDE(i, n) {
    T pi = p[i];
    T d = MAXIMIZE ? -g[i] : g[i];
    if (DECAY) {
      if (DECOUPLED) pi = pi * decay_factor;
      else d = d + wd * pi;
    }
    T m = exp_avg[i];
    m = m + one_minus_beta1 * (d - m);
    T v = exp_avg_sq[i] * beta2 + one_minus_beta2 * d * d;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    if (AMSGRAD) {
      v = max(max_exp_avg_sq[i], v);
      max_exp_avg_sq[i] = v;
    }
    p[i] = pi - step_size * (m / (sqrt(v) / bc2_sqrt + eps));
  }
}

#ifdef BACKPROP_GPU_COMPILE_CHECK
// Taking the kernels' addresses instantiates them, so a plain `nvcc --ptx` checks every path.
#define BOTH(KERNEL, ...) (void*)&KERNEL<float, __VA_ARGS__>, (void*)&KERNEL<double, __VA_ARGS__>,
void* backprop_gpu_instances[] = {
  BOTH(sgd, true, true, true, true) BOTH(sgd, true, false, false, false) BOTH(sgd, false, false, false, false)
  BOTH(adagrad, true, true) BOTH(adagrad, false, false)
  BOTH(adadelta, true, true) BOTH(adadelta, false, false)
  BOTH(rmsprop, true, true, true, true) BOTH(rmsprop, false, false, false, false)
  BOTH(adam, false, true, true, true) BOTH(adam, true, false, true, false) BOTH(adam, false, false, false, false)
};
#endif
