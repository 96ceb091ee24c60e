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
  double tolerance = 2e-2;   // on GradCheckResult::relative_error
  uint64_t seed = 7;         // which elements are sampled
};

struct GradCheckResult {
  std::string param;
  int checked = 0;
  // ||analytic - numeric|| / max(||analytic||, ||numeric||) over the checked elements: the
  // verdict. Per-element errors are reported too, but a float32 difference that straddles a ReLU
  // or max-pool switch spoils single elements without meaning the gradient is wrong.
  double relative_error = 0;
  double max_element_error = 0;  // max |analytic - numeric| / max(|analytic|, |numeric|, 1e-3)
  double max_abs_analytic = 0;  // the scale of the gradient, for context
  bool ok = false;
};

// Runs in training mode with the dropout masks of the net's current step held fixed.
// Parameters are left exactly as they were.
std::vector<GradCheckResult> check_gradients(Net& net, const GradCheckOptions& options = {});

}  // namespace convnet
