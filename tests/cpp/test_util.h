// Shared helpers for the C++ tests: random data, float64 comparisons, finite differences, errors.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace convnet::testing {

// Fresh random values in [lo, hi): tests never run on zeros or constants.
inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Asserts |got - want| <= atol + rtol * |want| element by element, reporting the first failure.
inline void expect_close(const std::vector<float>& got, const std::vector<double>& want,
                         double rtol, double atol, const char* what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    double tol = atol + rtol * std::fabs(want[i]);
    ASSERT_LE(std::fabs(double(got[i]) - want[i]), tol)
        << what << ": element " << i << " got " << got[i] << " want " << want[i];
  }
}

// Central finite differences of a scalar function of x, in float64 arithmetic on a float64
// copy of the input: grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h.
inline std::vector<double> numeric_gradient(const std::function<double(const std::vector<double>&)>& f,
                                            std::vector<double> x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double keep = x[i];
    x[i] = keep + h;
    double up = f(x);
    x[i] = keep - h;
    double down = f(x);
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// sum_i w[i] * y[i]: the scalar whose gradient with respect to y is w, used to turn a backward
// pass with upstream gradient w into a check of a scalar function.
inline double weighted_sum(const std::vector<double>& y, const std::vector<double>& w) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
  return s;
}

// `run()` throws an E whose message contains `part` (the message is shown when it does not).
template <class E>
void expect_throw_containing(const std::function<void()>& run, const std::string& part) {
  try {
    run();
    ADD_FAILURE() << "no exception; expected one saying \"" << part << "\"";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

}  // namespace convnet::testing
