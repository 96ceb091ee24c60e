// Finite-difference check of a whole net's parameter gradients.
#include "convnet/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace convnet {

std::vector<GradCheckResult> check_gradients(Net& net, const GradCheckOptions& options) {
  const uint64_t step = net.step();
  net.forward(true);
  net.backward();
  std::mt19937_64 rng(options.seed);
  std::vector<GradCheckResult> results;
  for (Param* p : net.params()) {
    GradCheckResult r;
    r.param = p->name;
    std::vector<float> value = p->value.to_vector();
    const std::vector<float> analytic = p->grad.to_vector();
    std::vector<size_t> idx(value.size());
    std::iota(idx.begin(), idx.end(), 0);
    if (static_cast<int>(idx.size()) > options.samples) {
      std::shuffle(idx.begin(), idx.end(), rng);
      idx.resize(static_cast<size_t>(options.samples));
    }
    auto objective_at = [&](size_t i, double v) {
      float keep = value[i];
      value[i] = static_cast<float>(v);
      p->value.copy_from_host(value.data());
      net.set_step(step);
      double obj = net.forward(true).objective;
      value[i] = keep;
      return obj;
    };
    double diff2 = 0, a2 = 0, n2 = 0;
    for (size_t i : idx) {
      const double w = value[i];
      // The step actually taken in float32, so that the quotient divides by the true distance.
      const double up = static_cast<float>(w + options.step), down = static_cast<float>(w - options.step);
      const double numeric = (objective_at(i, up) - objective_at(i, down)) / (up - down);
      const double a = analytic[i];
      const double denom = std::max({std::fabs(a), std::fabs(numeric), 1e-3});
      r.max_element_error = std::max(r.max_element_error, std::fabs(a - numeric) / denom);
      diff2 += (a - numeric) * (a - numeric);
      a2 += a * a;
      n2 += numeric * numeric;
      r.max_abs_analytic = std::max(r.max_abs_analytic, std::fabs(a));
      ++r.checked;
    }
    p->value.copy_from_host(value.data());
    r.relative_error = std::sqrt(diff2) / std::max(std::sqrt(std::max(a2, n2)), 1e-12);
    r.ok = r.relative_error <= options.tolerance;
    results.push_back(r);
  }
  net.set_step(step);
  return results;
}

}  // namespace convnet
