#include "layers/join.h"

#include "convnet/ops.h"

namespace convnet {

void join_inputs(const std::vector<Tensor>& in, Tensor& joined) {
  int64_t offset = 0;
  Tensor flat = joined.reshaped({static_cast<int>(joined.numel()), 1, 1, 1});
  for (const Tensor& t : in) {
    Tensor part = flat.channels(static_cast<int>(offset), static_cast<int>(t.numel()));
    part.copy_from(t);
    offset += t.numel();
  }
}

void split_gradient(const Tensor& djoined, const std::vector<Tensor>& in, std::vector<Tensor>& din,
                    const std::vector<bool>& accumulate) {
  int64_t offset = 0;
  Tensor flat = djoined.reshaped({static_cast<int>(djoined.numel()), 1, 1, 1});
  for (size_t i = 0; i < din.size(); ++i) {
    const int64_t n = in[i].numel();
    if (din[i].defined()) {
      Tensor part = flat.channels(static_cast<int>(offset), static_cast<int>(n));
      axpby(1.f, part, din[i], accumulate[i]);
    }
    offset += n;
  }
}

}  // namespace convnet
