// The kernels of the mmdysample CPU extension, one source file per family, bound to Python in
// one place (bindings.cpp). Every file includes this header and defines its entry points in
// namespace mmdysample; its helpers stay in an anonymous namespace.
//
//   dysample_sampling.cpp  DySample's point sampling (forward, backward) and the dynamic
//                          scope's chain rule
//   reassembly.cpp         content-aware reassembly (CARAFE, FADE, A2U, SAPA-B): the
//                          reassembly, its feature and mask gradients (SAPA's similarity)
//
// A new family adds its .cpp beside these (mmdysample/ops/extension.py compiles every
// csrc/*.cpp into the one extension), declares its entry points here and binds them in
// bindings.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace mmdysample {

// ---- dysample_sampling.cpp
at::Tensor dysample_forward(const at::Tensor& x, const at::Tensor& offset, int64_t scale,
                            int64_t groups, bool fused_unnormalize);
std::vector<at::Tensor> dysample_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                          const at::Tensor& offset, int64_t scale, int64_t groups,
                                          bool fused_unnormalize, bool need_x_grad,
                                          bool need_offset_grad);
void dyscope_chain(at::Tensor grad, at::Tensor gate, const at::Tensor& offset,
                   const at::Tensor& init_pos, double scope_factor);

// ---- reassembly.cpp
at::Tensor reassemble(const at::Tensor& features, const at::Tensor& masks, int64_t kernel_size,
                      int64_t groups, int64_t scale);
at::Tensor reassemble_feature_grad(const at::Tensor& grad_out, const at::Tensor& masks,
                                   int64_t kernel_size, int64_t groups, int64_t scale);
at::Tensor reassemble_mask_grad(const at::Tensor& grad_out, const at::Tensor& features,
                                int64_t kernel_size, int64_t groups, int64_t scale);

}  // namespace mmdysample
