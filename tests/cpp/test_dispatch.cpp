// The checked dispatcher refuses what a backend would trust blindly: a GEMM operand that runs past
// its tensor, shapes that do not fit, operands on two devices, an output that shares memory with
// an input; a column buffer that is too small or is the activation itself. Each error names the
// op and what is wrong.
#include <gtest/gtest.h>

#include <string>

#include "convnet/error.h"
#include "convnet/ops.h"
#include "test_util.h"

namespace convnet::testing {
namespace {

// Runs `f`, expecting a ValueError whose message contains `what`.
template <class F>
void expect_error(F&& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one saying '" << what << "'";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

Tensor filled(Shape shape, Device device = Device::cpu()) {
  Tensor t(shape, device);
  t.copy_from_host(random_vector(size_t(shape_numel(shape)), 3).data());
  return t;
}

TEST(Dispatch, GemmComputesOnBlocksOfBiggerMatrices) {
  // C's second and third columns = A's last two rows times B: blocks given by offset and ld.
  Tensor a = filled({4, 3}), b = filled({3, 2}), c = filled({2, 4});
  const std::vector<float> c_before = c.to_vector();
  gemm(false, false, 1.f, matrix(a, 2 * 3, 2, 3, 3), matrix(b, 3, 2), 0.f, matrix(c, 1, 2, 2, 4));
  const std::vector<float> av = a.to_vector(), bv = b.to_vector(), cv = c.to_vector();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      if (j < 1 || j > 2) {
        EXPECT_EQ(cv[size_t(i * 4 + j)], c_before[size_t(i * 4 + j)]) << "outside the block";
        continue;
      }
      double want = 0;
      for (int k = 0; k < 3; ++k) want += double(av[size_t((2 + i) * 3 + k)]) * bv[size_t(k * 2 + j - 1)];
      EXPECT_NEAR(cv[size_t(i * 4 + j)], want, 1e-5);
    }
}

TEST(Dispatch, GemmRefusesWhatDoesNotFit) {
  Tensor a = filled({4, 3}), b = filled({3, 2}), c = filled({4, 2});
  expect_error([&] { gemm(false, false, 1.f, matrix(a, 0, 4, 3, 2), matrix(b, 3, 2), 0.f, matrix(c, 4, 2)); },
               "gemm: A is 4 x 3 at offset 0 with ld 2");  // rows would overlap
  expect_error([&] { gemm(false, false, 1.f, matrix(a, 4, 3, 3, 3), matrix(b, 3, 2), 0.f, matrix(c, 0, 3, 2, 2)); },
               "gemm: A (3 x 3, ld 3, offset 4) runs past its tensor of 12 elements");
  expect_error([&] { gemm(true, false, 1.f, matrix(a, 4, 3), matrix(b, 3, 2), 0.f, matrix(c, 4, 2)); },
               "gemm: op(A) is 3 x 4, op(B) 3 x 2, C 4 x 2");
  expect_error([] { matrix(Tensor({5}, Device::cpu()), 2, 3); }, "matrix: 2 x 3 of a tensor of");
}

TEST(Dispatch, GemmRefusesAnOutputThatSharesMemoryWithAnInput) {
  Tensor a = filled({4, 4}), b = filled({4, 4});
  expect_error([&] { gemm(false, false, 1.f, matrix(a, 4, 4), matrix(b, 4, 4), 0.f, matrix(a, 4, 4)); },
               "gemm: C and A share memory");
  // Two blocks of one tensor that overlap.
  expect_error([&] { gemm(false, false, 1.f, matrix(a, 0, 2, 2, 4), matrix(b, 0, 2, 2, 4), 0.f, matrix(b, 4, 2, 2, 4)); },
               "gemm: C and B share memory");
  // Disjoint blocks of one tensor are fine.
  Tensor big = filled({6, 4}), b8 = filled({2, 4});
  gemm(false, false, 1.f, matrix(big, 0, 2, 2, 4), matrix(b8, 2, 4), 0.f, matrix(big, 8, 2, 4, 4));
}

TEST(Dispatch, GemmRefusesOperandsOnTwoDevices) {
  Tensor a = filled({2, 2}), b = filled({2, 2}), c = filled({2, 2}, Device::cpu(1));
  expect_error([&] { gemm(false, false, 1.f, matrix(a, 2, 2), matrix(b, 2, 2), 0.f, matrix(c, 2, 2)); },
               "gemm: tensors on different devices");
}

TEST(Dispatch, Im2colRefusesASmallOrSharedColumnBuffer) {
  ConvGeometry g;
  g.channels = 2, g.height = 5, g.width = 5, g.batch = 3, g.filters = 4, g.size = 3;
  g.finish("test");
  Tensor x = filled({2, 5, 5, 3});
  Tensor small({int(im2col_floats(g, 0, g.out_h)) - 1}, Device::cpu());
  expect_error([&] { im2col(x, g, 0, 0, g.out_h, small); }, "im2col: the column buffer holds");
  Tensor as_cols = x.reshaped({int(x.numel())});
  ConvGeometry one = g;  // a 1x1 geometry needs no more columns than x holds
  one.size = 1, one.filters = 1;
  one.finish("test");
  expect_error([&] { im2col(x, one, 0, 0, one.out_h, as_cols); },
               "im2col: the columns and the activation share memory");
  expect_error([&] { col2im(as_cols, one, 0, 0, one.out_h, x); },
               "col2im: the columns and the activation share memory");
}

}  // namespace
}  // namespace convnet::testing
