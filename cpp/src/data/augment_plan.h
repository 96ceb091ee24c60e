// The random choices of one example's augmentation (crop window, reflection, PCA colour offset),
// drawn from its key alone, and the arithmetic that applies them to a value. Shared by
// augment_example and the pipeline's batch writer, so the two give bitwise the same floats.
// Internal to the data module.
#pragma once
#include <cstdint>

#include <stdexcept>  // before data.h, which uses std::runtime_error without it

#include "convnet/data.h"

namespace convnet {

struct AugmentPlan {
  // The window: of the source image, or, when resized_height > 0 (scale jittering, test scale),
  // of the source rescaled to resized_height x resized_width (bilinear).
  int top = 0, left = 0, height = 0, width = 0;
  int resized_height = 0, resized_width = 0;
  bool mirror = false;                           // reflected left-right
  float offset[3] = {0.f, 0.f, 0.f};             // added to each channel (PCA colour noise)
};

// Whether the PCA colour noise is added: training, pca_std > 0, RGB.
bool colour_noise_applies(const AugmentOptions& o, int channels, bool train);

// Refuses (ValueError, `who` first) colour noise that would silently be zero or NaN: pca_std > 0
// on a source that is not RGB, or with stats that lack eigenvectors or have an eigenvalue that
// is negative or not finite. Defined in stats.cpp, beside the other checks of
// what colour statistics must hold.
void check_colour_noise(const AugmentOptions& o, int channels, const DataStats& stats,
                        const char* who);

// The factor applied after the mean: o.scale, divided by 1 + pca_std where the colour noise
// applies and o.pca_rescale asks for cuda-convnet2's rescale. The same for every example.
float output_scale(const AugmentOptions& o, int channels, bool train);

// The plan for an example of channels x height x width under `o`. Checks the options as
// augment_example documents (ValueError).
AugmentPlan plan_augmentation(int channels, int height, int width, const AugmentOptions& o,
                              const DataStats& stats, bool train, uint64_t rng_key);

// Whether the options rescale images before cropping (scale jittering in training, a test scale
// in test): such plans have resized_height > 0 and take write_rescaled_window.
bool rescales(const AugmentOptions& o, bool train);

// The plan's window of a C x H x W image rescaled as the plan says (bilinear, pixel centres
// aligned, edges clamped), reflected when the plan says, as augmented_value(pixel, offset, mean_value,
// scale): C x plan.height x plan.width floats into out.
void write_rescaled_window(const float* chw, int channels, int height, int width,
                           const AugmentPlan& plan, float mean_value, float scale, float* out);

// One output value: the pixel plus its channel's offset, minus the mean (image or scalar), scaled.
// In exactly this order everywhere, so every path gives the same bits.
// A template so that it serves vectors of floats (GCC/Clang vector extensions) as well.
template <class F, class S>
inline F augmented_value(F pixel, F offset, S mean, S scale) {
  return ((pixel + offset) - mean) * scale;
}

}  // namespace convnet
