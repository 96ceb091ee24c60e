// Writes a group of augmented examples into a CHWN batch in one pass: crop, reflection, colour
// offset, mean and scale applied on the way. Examples are taken kGroup at a time so that every
// 64-byte line of the batch (16 floats along N) is written whole, from kGroup sequential reads.
// Internal to the data module.
#pragma once
#include <cstdint>

#include "data/augment_plan.h"

namespace convnet {

constexpr int kGroup = 16;

// Where the group goes, and the arithmetic shared by its examples.
struct GroupTarget {
  float* images = nullptr;  // the batch: channels x height x width x n
  int n = 0;                // batch size
  int first = 0;            // the group's first example in the batch
  int channels = 0, height = 0, width = 0;  // of the output (the crop)
  const float* mean_image = nullptr;        // source_height x source_width per channel, or null
  int source_height = 0, source_width = 0;  // of the source images (the mean image's size)
  float mean_value = 0.f, scale = 1.f;
};

// Group of `count` (<= kGroup) whole source images, C x source_height x source_width floats
// each: the plan's window is cut out, reflected, offset, etc.
void write_group(const float* const* images, const AugmentPlan* plans, int count,
                 const GroupTarget& target);

// Group of `count` windows already cut out and reflected (folder source: load_window), one after
// another `window_bytes` apart: height x width pixels of 4 bytes (C <= 4 values, then padding),
// in output order.
void write_group(const uint8_t* windows, size_t window_bytes, const AugmentPlan* plans, int count,
                 const GroupTarget& target);

}  // namespace convnet
