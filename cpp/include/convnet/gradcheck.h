// cuda-convnet's check-grads mode: compare every parameter's backpropagated gradient with
// central finite differences of the net's objective, on the batch currently set as input.
#pragma once
#include <string>
#include <vector>

#include "convnet/net.h"

namespace convnet {

struct GradCheckOptions {
  double step = 1e-3;        // finite-difference step h
  int samples = 16;          // elements checked per parameter (all, when it has fewer)
  double tolerance = 2e-2;   // on the relative error below
  uint64_t seed = 7;         // which elements are sampled
};

struct GradCheckResult {
  std::string param;
  int checked = 0;
  // max over checked elements of |analytic - numeric| / max(|analytic|, |numeric|, 1e-3)
  double max_relative_error = 0;
  double max_abs_analytic = 0;  // the scale of the gradient, for context
  bool ok = false;
};

// Runs in training mode with the dropout masks of the net's current step held fixed.
// Parameters are left exactly as they were.
std::vector<GradCheckResult> check_gradients(Net& net, const GradCheckOptions& options = {});

}  // namespace convnet
