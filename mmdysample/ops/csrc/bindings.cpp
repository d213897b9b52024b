// The Python module of the mmdysample CPU extension: every kernel declared in ops.h, bound
// once (the only file that includes pybind11, so the kernel files compile faster and in
// parallel).
#include <torch/csrc/utils/pybind.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmdysample CPU kernels: DySample point sampling, reassembly (CARAFE family)";
  m.def("forward", &mmdysample::dysample_forward, "DySample sampling forward", py::arg("x"),
        py::arg("offset"), py::arg("scale_factor"), py::arg("groups"),
        py::arg("fused_unnormalize"));
  m.def("backward", &mmdysample::dysample_backward, "DySample sampling backward",
        py::arg("grad_out"), py::arg("x"), py::arg("offset"), py::arg("scale_factor"),
        py::arg("groups"), py::arg("fused_unnormalize"), py::arg("need_x_grad"),
        py::arg("need_offset_grad"));
  m.def("dyscope_chain", &mmdysample::dyscope_chain,
        "DySample dynamic scope chain rule, in place", py::arg("grad"), py::arg("gate"),
        py::arg("offset"), py::arg("init_pos"), py::arg("scope_factor"));
  m.def("reassemble", &mmdysample::reassemble, "content-aware reassembly (CARAFE) forward",
        py::arg("features"), py::arg("masks"), py::arg("kernel_size"), py::arg("groups"),
        py::arg("scale"));
  m.def("reassemble_feature_grad", &mmdysample::reassemble_feature_grad,
        "reassembly's gradient wrt the features", py::arg("grad_out"), py::arg("masks"),
        py::arg("kernel_size"), py::arg("groups"), py::arg("scale"));
  m.def("reassemble_mask_grad", &mmdysample::reassemble_mask_grad,
        "reassembly's gradient wrt the masks (SAPA's similarity)", py::arg("grad_out"),
        py::arg("features"), py::arg("kernel_size"), py::arg("groups"), py::arg("scale"));
  m.attr("simd") = py::str(
#if defined(__AVX2__)
      "avx2"
#else
      "generic"
#endif
  );
}
