// Tests of the prefetching pipeline (data/pipeline.cpp), the generated and array sources, and
// the data statistics (data/stats.cpp): every example once per epoch in the CHWN layout,
// shuffles that repeat per seed and change per epoch, batches bitwise identical for any number
// of workers, partial and dropped last batches, unreadable examples replaced and counted, a
// prompt destructor, start_epoch (also mid-epoch), reused batch memory; the mean image and RGB
// principal components, and the JSON round trip.
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <unistd.h>

#include "convnet/data.h"
#include "convnet/error.h"
#include "test_util.h"

namespace convnet {
namespace {

// N examples of C x H x W whose pixel (c, y, x) of example i is i * 1000 + c * 100 + y * 10 + x,
// label i % classes: any pixel of a batch says which example and which position it came from.
std::shared_ptr<DataSource> coded_source(int n, int c = 2, int h = 3, int w = 4, int classes = 7) {
  std::vector<float> data;
  std::vector<int> labels;
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < c; ++k)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) data.push_back(float(i * 1000 + k * 100 + y * 10 + x));
    labels.push_back(i % classes);
  }
  return array_source(data.data(), labels.data(), n, c, h, w, classes);
}

PipelineOptions plain_options(int batch, int workers = 2) {
  PipelineOptions o;
  o.batch = batch;
  o.workers = workers;
  o.train = false;  // no augmentation: the batch holds the examples as loaded
  return o;
}

// Checks the CHWN layout of a batch of coded examples and returns the example indices in it.
std::vector<int> decode_batch(const Batch& b, int c, int h, int w, int classes = 7) {
  const int n = b.images.dim(3);
  EXPECT_EQ(b.images.shape(), (Shape{c, h, w, n}));
  EXPECT_EQ(b.labels.shape(), (Shape{n}));
  const auto img = b.images.to_vector();
  const auto lab = b.labels.to_vector();
  std::vector<int> out;
  for (int j = 0; j < n; ++j) {
    const int i = int(img[size_t(j)]) / 1000;
    for (int k = 0; k < c; ++k)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          EXPECT_EQ(img[size_t(((k * h + y) * w + x) * n + j)], float(i * 1000 + k * 100 + y * 10 + x));
    EXPECT_EQ(lab[size_t(j)], float(i % classes));
    out.push_back(i);
  }
  return out;
}

// The example order of one epoch (the pipeline must be at the start of it).
std::vector<int> epoch_order(Pipeline& p, int c = 2, int h = 3, int w = 4) {
  std::vector<int> order;
  Batch b;
  while (p.next(b)) {
    const auto ids = decode_batch(b, c, h, w);
    order.insert(order.end(), ids.begin(), ids.end());
  }
  return order;
}

TEST(Pipeline, EveryExampleOncePerEpochInChwn) {
  Pipeline p(coded_source(103), plain_options(10));
  EXPECT_EQ(p.batches_per_epoch(), 11);
  for (int epoch = 0; epoch < 3; ++epoch) {
    EXPECT_EQ(p.epoch(), epoch);
    auto order = epoch_order(p);
    ASSERT_EQ(order.size(), 103u);
    std::sort(order.begin(), order.end());
    for (int i = 0; i < 103; ++i) ASSERT_EQ(order[size_t(i)], i);
  }
  EXPECT_EQ(p.skipped_total(), 0);
}

TEST(Pipeline, ShuffleChangesPerEpochAndRepeatsPerSeed) {
  std::vector<std::vector<int>> a, b, c;
  {
    Pipeline p(coded_source(50), plain_options(8));
    for (int e = 0; e < 3; ++e) a.push_back(epoch_order(p));
  }
  {
    Pipeline p(coded_source(50), plain_options(8, 3));
    for (int e = 0; e < 3; ++e) b.push_back(epoch_order(p));
  }
  {
    auto o = plain_options(8);
    o.seed = 2;
    Pipeline p(coded_source(50), o);
    for (int e = 0; e < 3; ++e) c.push_back(epoch_order(p));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a[0], a[1]);
  EXPECT_NE(a[1], a[2]);
  EXPECT_NE(a[0], c[0]);
  std::vector<int> identity(50);
  for (int i = 0; i < 50; ++i) identity[size_t(i)] = i;
  EXPECT_NE(a[0], identity);
  auto o = plain_options(8);
  o.shuffle = false;
  Pipeline p(coded_source(50), o);
  EXPECT_EQ(epoch_order(p), identity);
  EXPECT_EQ(epoch_order(p), identity);
}

// All batches of `epochs` epochs, kept (the consumer may hold on to them).
std::vector<Batch> run(std::shared_ptr<DataSource> src, PipelineOptions o, const DataStats& stats,
                       int epochs) {
  Pipeline p(std::move(src), o, stats);
  std::vector<Batch> out;
  for (int e = 0; e < epochs; ++e) {
    Batch b;
    while (p.next(b)) out.push_back(b);
  }
  return out;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].images.shape(), b[i].images.shape()) << what << " batch " << i;
    EXPECT_EQ(a[i].epoch, b[i].epoch);
    EXPECT_EQ(a[i].index, b[i].index);
    ASSERT_EQ(std::memcmp(a[i].images.data(), b[i].images.data(), sizeof(float) * size_t(a[i].images.numel())), 0)
        << what << ": batch " << i << " differs";
    ASSERT_EQ(std::memcmp(a[i].labels.data(), b[i].labels.data(), sizeof(float) * size_t(a[i].labels.numel())), 0)
        << what << ": labels of batch " << i << " differ";
  }
}

TEST(Pipeline, IdenticalBatchesForAnyWorkerCountAndPrefetch) {
  auto src = generated_source(300, 5, 3, 20, 7);
  const DataStats stats = compute_stats(*src);
  PipelineOptions o;
  o.batch = 32;
  o.augment.crop = 16;
  o.augment.pca_std = 0.1f;
  o.augment.subtract_mean_image = true;
  o.augment.scale = 1.f / 255;
  o.workers = 1;
  o.prefetch = 4;
  const auto reference = run(src, o, stats, 2);
  ASSERT_EQ(reference.size(), 20u);
  EXPECT_EQ(reference.back().images.shape(), (Shape{3, 16, 16, 300 - 9 * 32}));
  for (int workers : {2, 4}) {
    o.workers = workers;
    expect_same_batches(reference, run(src, o, stats, 2), "workers");
  }
  o.workers = 3;
  o.prefetch = 1;
  expect_same_batches(reference, run(src, o, stats, 2), "prefetch 1");
  // A different seed gives different batches.
  o.seed = 99;
  const auto other = run(src, o, stats, 1);
  EXPECT_NE(std::memcmp(other[0].images.data(), reference[0].images.data(), sizeof(float) * 32 * 3 * 16 * 16), 0);
}

// Data parallelism's shards: the parts of every global batch, side by side, are the whole batch
// bit for bit (the same order, the same augmentation of each example), for 2 and 4 shards, with
// a last partial batch split as evenly as it goes.
TEST(Pipeline, ShardsSideBySideAreTheWholeBatch) {
  auto src = generated_source(300, 5, 3, 20, 7);
  const DataStats stats = compute_stats(*src);
  PipelineOptions o;
  o.batch = 32;
  o.augment.crop = 16;
  o.augment.mirror = true;
  o.augment.pca_std = 0.1f;
  o.augment.scale = 1.f / 255;
  const auto whole = run(src, o, stats, 2);
  for (int shards : {2, 4}) {
    std::vector<std::vector<Batch>> parts;
    for (int s = 0; s < shards; ++s) {
      PipelineOptions so = o;
      so.shard = s;
      so.shards = shards;
      so.workers = 1 + s % 3;  // any worker count
      parts.push_back(run(src, so, stats, 2));
      ASSERT_EQ(parts.back().size(), whole.size());
    }
    for (size_t i = 0; i < whole.size(); ++i) {
      const Batch& w = whole[i];
      const int64_t n = w.images.dim(3), rows = w.images.numel() / n;
      int64_t next = 0;
      for (int s = 0; s < shards; ++s) {
        const Batch& b = parts[size_t(s)][i];
        const int64_t m = b.images.dim(3);
        SCOPED_TRACE("shards " + std::to_string(shards) + ", batch " + std::to_string(i) + ", shard " +
                     std::to_string(s));
        EXPECT_EQ(b.first_example, next);
        EXPECT_EQ(b.global_size, n);
        EXPECT_EQ(m, (s + 1) * n / shards - s * n / shards);
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_EQ(std::memcmp(b.images.data() + r * m, w.images.data() + r * n + next, sizeof(float) * size_t(m)), 0)
              << "row " << r;
        ASSERT_EQ(std::memcmp(b.labels.data(), w.labels.data() + next, sizeof(float) * size_t(m)), 0);
        next += m;
      }
      EXPECT_EQ(next, n);
    }
  }
  // A batch that does not split evenly, a shard that does not exist, a last batch too small.
  PipelineOptions bad = o;
  bad.shards = 3;
  convnet::testing::expect_throw_containing<ValueError>([&] { Pipeline p(src, bad, stats); },
                                                        "a batch of 32 does not split into 3 equal shards");
  bad.shards = 2;
  bad.shard = 2;
  convnet::testing::expect_throw_containing<ValueError>([&] { Pipeline p(src, bad, stats); }, "shard 2 of 2");
  bad.shard = 0;
  bad.batch = 8;
  bad.shards = 8;
  convnet::testing::expect_throw_containing<ValueError>([&] { Pipeline p(generated_source(20, 2, 3, 20), bad, stats); },
                                                        "the last batch, of 4 examples, leaves some of the 8 shards none");
}

TEST(Pipeline, PartialLastBatchOrDropLast) {
  auto o = plain_options(10);
  {
    Pipeline p(coded_source(103), o);
    Batch b;
    int batches = 0;
    while (p.next(b)) {
      EXPECT_EQ(b.index, batches);
      EXPECT_EQ(b.epoch, 0);
      EXPECT_EQ(b.images.dim(3), batches < 10 ? 10 : 3);
      ++batches;
    }
    EXPECT_EQ(batches, 11);
  }
  o.drop_last = true;
  Pipeline p(coded_source(103), o);
  EXPECT_EQ(p.batches_per_epoch(), 10);
  for (int e = 0; e < 2; ++e) {
    const auto order = epoch_order(p);
    EXPECT_EQ(order.size(), 100u);
    EXPECT_EQ(std::set<int>(order.begin(), order.end()).size(), 100u);
  }
  o.batch = 200;
  EXPECT_THROW({ Pipeline p(coded_source(103), o); }, ValueError);
}

TEST(Pipeline, TrainingCropsAndReflections) {
  // Train-mode batches: every example is some 3x3 window of its 4x5 image (crop, maybe reflected).
  auto o = plain_options(16);
  o.train = true;
  o.augment.crop = 3;
  Pipeline p(coded_source(40, 1, 4, 5), o);
  Batch b;
  std::set<std::pair<int, int>> corners;
  while (p.next(b)) {
    const int n = b.images.dim(3);
    ASSERT_EQ(b.images.shape(), (Shape{1, 3, 3, n}));
    const auto img = b.images.to_vector();
    for (int j = 0; j < n; ++j) {
      const int code = int(img[size_t(j)]) % 1000;  // pixel (0,0) of the window: y0 * 10 + x0 (or reflected)
      const int left = int(img[size_t(j)]) % 10, right = int(img[size_t(2 * n + j)]) % 10;
      const bool mirrored = left > right;
      const int y0 = code / 10, x0 = mirrored ? right : left;
      corners.insert({y0, x0});
      for (int y = 0; y < 3; ++y)
        for (int x = 0; x < 3; ++x) {
          const int sx = mirrored ? x0 + 2 - x : x0 + x;
          ASSERT_EQ(int(img[size_t((y * 3 + x) * n + j)]) % 1000, (y0 + y) * 10 + sx);
        }
    }
  }
  EXPECT_EQ(corners.size(), 6u);
}

// VGG's scale jittering goes through the writer's per-example path: jittering to the images' own
// size is the plain crop, bit for bit; real jittering gives the same batches for any worker count.
TEST(Pipeline, ScaleJitteringBatches) {
  auto plain = plain_options(16);
  plain.train = true;
  plain.augment.crop = 3;
  auto same_size = plain;
  same_size.augment.jitter_min = same_size.augment.jitter_max = 4;
  auto source = coded_source(40, 2, 4, 4);
  Pipeline a(source, plain), b(source, same_size);
  Batch ba, bb;
  while (a.next(ba)) {
    ASSERT_TRUE(b.next(bb));
    EXPECT_EQ(ba.images.to_vector(), bb.images.to_vector());
  }
  auto jitter = plain;
  jitter.augment.jitter_min = 4;
  jitter.augment.jitter_max = 9;
  auto many = jitter;
  many.workers = 3;
  Pipeline c(source, jitter), d(source, many);
  Batch bc, bd;
  while (c.next(bc)) {
    ASSERT_TRUE(d.next(bd));
    ASSERT_EQ(bc.images.shape(), (Shape{2, 3, 3, bc.images.dim(3)}));
    EXPECT_EQ(bc.images.to_vector(), bd.images.to_vector());
  }
  auto bad = jitter;
  bad.augment.crop = 5;  // more than the smallest scale
  EXPECT_THROW(Pipeline(source, bad), ValueError);
}

// Wraps a source; the examples in `bad` throw DataError naming a file.
class FlakySource : public DataSource {
 public:
  FlakySource(std::shared_ptr<DataSource> inner, std::set<int64_t> bad, int sleep_ms = 0)
      : inner_(std::move(inner)), bad_(std::move(bad)), sleep_ms_(sleep_ms) {}
  int64_t size() const override { return inner_->size(); }
  int channels() const override { return inner_->channels(); }
  int height() const override { return inner_->height(); }
  int width() const override { return inner_->width(); }
  int classes() const override { return inner_->classes(); }
  int load(int64_t i, float* chw) const override {
    if (sleep_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    if (bad_.count(i) || bad_.count(-1)) throw DataError(describe(i) + ": corrupt JPEG data");
    return inner_->load(i, chw);
  }
  std::string describe(int64_t i) const override { return "images/bad-" + std::to_string(i) + ".jpg"; }

 private:
  std::shared_ptr<DataSource> inner_;
  std::set<int64_t> bad_;
  int sleep_ms_;
};

TEST(Pipeline, UnreadableExampleIsReplacedAndCounted) {
  auto src = std::make_shared<FlakySource>(coded_source(60), std::set<int64_t>{7});
  Pipeline p(src, plain_options(8, 3));
  for (int e = 0; e < 3; ++e) {
    std::map<int, int> seen;
    int64_t skipped = 0;
    Batch b;
    while (p.next(b)) {
      for (int i : decode_batch(b, 2, 3, 4)) ++seen[i];
      skipped += b.skipped;
    }
    EXPECT_EQ(skipped, 1);
    EXPECT_EQ(seen.count(7), 0u);
    // 60 slots filled: one example appears twice (the one after 7 in the order, standing in).
    EXPECT_EQ(seen.size(), 59u);
    int twice = 0;
    for (const auto& [i, n] : seen) twice += n == 2;
    EXPECT_EQ(twice, 1);
    EXPECT_EQ(p.skipped_total(), e + 1);
  }
}

// Each batch says which of its examples was skipped first and why; the first skip of a pipeline
// is also named once on stderr, the later ones only counted.
TEST(Pipeline, SkipsNameTheFirstCulpritAndWarnOnce) {
  auto src = std::make_shared<FlakySource>(coded_source(60), std::set<int64_t>{7, 23, 41});
  ::testing::internal::CaptureStderr();
  std::vector<std::string> firsts;
  {
    Pipeline p(src, plain_options(8, 3));
    for (int e = 0; e < 2; ++e) {
      int64_t skipped = 0;
      Batch b;
      while (p.next(b)) {
        skipped += b.skipped;
        EXPECT_EQ(b.first_skipped.empty(), b.skipped == 0) << b.first_skipped;
        if (b.skipped) firsts.push_back(b.first_skipped);
      }
      EXPECT_EQ(skipped, 3);
    }
    EXPECT_EQ(p.skipped_total(), 6);
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(firsts.empty());
  for (const std::string& f : firsts)  // the path once, then the reason without it
    EXPECT_TRUE(f == "'images/bad-7.jpg': corrupt JPEG data" || f == "'images/bad-23.jpg': corrupt JPEG data" ||
                f == "'images/bad-41.jpg': corrupt JPEG data")
        << f;
  EXPECT_NE(err.find(firsts[0]), std::string::npos) << err;
  size_t warnings = 0;
  for (size_t at = err.find("warning"); at != std::string::npos; at = err.find("warning", at + 1)) ++warnings;
  EXPECT_EQ(warnings, 1u) << err;
}

TEST(Pipeline, SkippedExampleTextSaysThePathOnce) {
  EXPECT_EQ(skipped_example_text("val/cat/x.png", "val/cat/x.png: bad PNG: IHDR: CRC error"),
            "'val/cat/x.png': bad PNG: IHDR: CRC error");
  EXPECT_EQ(skipped_example_text("idx file a, image 3", "no pixels"), "'idx file a, image 3': no pixels");
}

TEST(Pipeline, GivesUpWhenNothingLoadsNamingTheFiles) {
  auto src = std::make_shared<FlakySource>(coded_source(300), std::set<int64_t>{-1});
  Pipeline p(src, plain_options(8));
  Batch b;
  try {
    p.next(b);
    FAIL() << "no error";
  } catch (const RuntimeError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("images/bad-"), std::string::npos) << msg;
    EXPECT_NE(msg.find("100 consecutive"), std::string::npos) << msg;
  }
  EXPECT_THROW(p.next(b), RuntimeError);  // the same error again, not a hang
}

TEST(Pipeline, DestructorMidEpochIsPrompt) {
  using clock = std::chrono::steady_clock;
  {
    // Large batches being built when the consumer leaves.
    PipelineOptions o;
    o.batch = 128;
    o.augment.crop = 224;
    auto p = std::make_unique<Pipeline>(generated_source(2000, 10, 3, 256), o);
    Batch b;
    ASSERT_TRUE(p->next(b));
    const auto t0 = clock::now();
    p.reset();
    EXPECT_LT(std::chrono::duration<double>(clock::now() - t0).count(), 1.0);
  }
  {
    // A slow source (10 ms per image, 1.3 s per batch): the workers must stop mid-batch.
    auto src = std::make_shared<FlakySource>(coded_source(1000), std::set<int64_t>{}, 10);
    auto o = plain_options(128, 4);
    auto p = std::make_unique<Pipeline>(src, o);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto t0 = clock::now();
    p.reset();
    EXPECT_LT(std::chrono::duration<double>(clock::now() - t0).count(), 1.0);
  }
  {
    // Never consumed at all, and the ring full.
    auto p = std::make_unique<Pipeline>(coded_source(100), plain_options(4));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto t0 = clock::now();
    p.reset();
    EXPECT_LT(std::chrono::duration<double>(clock::now() - t0).count(), 1.0);
  }
}

TEST(Pipeline, StartEpochDrainsAndRestarts) {
  auto src = generated_source(100, 4, 3, 12, 3);
  PipelineOptions o;
  o.batch = 16;
  o.augment.crop = 10;
  const auto three = run(src, o, {}, 4);  // epochs 0-3, 7 batches each
  ASSERT_EQ(three.size(), 28u);
  Pipeline p(src, o);
  Batch b;
  ASSERT_TRUE(p.next(b));
  ASSERT_TRUE(p.next(b));
  p.start_epoch(3);
  EXPECT_EQ(p.epoch(), 3);
  std::vector<Batch> got;
  while (p.next(b)) got.push_back(b);
  EXPECT_EQ(p.epoch(), 4);
  expect_same_batches(std::vector<Batch>(three.begin() + 21, three.end()), got, "epoch 3");
  // Back to epoch 0 mid-epoch.
  ASSERT_TRUE(p.next(b));
  p.start_epoch(0);
  got.clear();
  while (p.next(b)) got.push_back(b);
  expect_same_batches(std::vector<Batch>(three.begin(), three.begin() + 7), got, "epoch 0");
}

TEST(Pipeline, StartEpochMidEpochResumesBitExactly) {
  // A run interrupted after batch k of epoch e and resumed with start_epoch(e, k + 1) gets the
  // batches an uninterrupted run gets, with augmentation and shuffling on.
  auto src = generated_source(100, 4, 3, 12, 3);
  const DataStats stats = compute_stats(*src);
  PipelineOptions o;
  o.batch = 16;
  o.augment.crop = 10;
  o.augment.pca_std = 0.1f;
  o.workers = 3;
  const auto reference = run(src, o, stats, 3);  // epochs 0-2, 7 batches each
  ASSERT_EQ(reference.size(), 21u);
  for (int64_t epoch : {0, 2})
    for (int64_t first : {0, 1, 3, 6}) {
      Pipeline p(src, o, stats);
      p.start_epoch(epoch, first);
      EXPECT_EQ(p.epoch(), epoch);
      std::vector<Batch> got;
      Batch b;
      while (p.next(b)) got.push_back(b);
      const auto begin = reference.begin() + epoch * 7 + first;
      expect_same_batches(std::vector<Batch>(begin, reference.begin() + epoch * 7 + 7), got,
                          "resumed mid-epoch");
      EXPECT_EQ(got.front().index, first);
      // Then the next epoch as usual.
      if (epoch == 0) {
        got.clear();
        while (p.next(b)) got.push_back(b);
        expect_same_batches(std::vector<Batch>(reference.begin() + 7, reference.begin() + 14), got,
                            "the epoch after");
      }
    }
  // A jump while batches are in flight, and to the very end of an epoch (nothing left in it).
  Pipeline p(src, o, stats);
  Batch b;
  ASSERT_TRUE(p.next(b));
  p.start_epoch(1, 5);
  ASSERT_TRUE(p.next(b));
  expect_same_batches({reference[12]}, {b}, "jump in flight");
  p.start_epoch(1, 7);
  EXPECT_FALSE(p.next(b));
  ASSERT_TRUE(p.next(b));
  expect_same_batches({reference[14]}, {b}, "after an empty rest of epoch");
  EXPECT_THROW(p.start_epoch(1, 8), ValueError);
  EXPECT_THROW(p.start_epoch(1, -1), ValueError);
}

TEST(Pipeline, ReusedBatchMemoryKeepsHeldBatchesAndIsReused) {
  auto src = generated_source(200, 5, 3, 20, 7);
  PipelineOptions o;
  o.batch = 32;
  o.augment.crop = 16;
  o.prefetch = 2;
  const auto fresh = run(src, o, {}, 3);
  o.reuse_batch_memory = true;
  // Every batch held (copies of the Batch alive): nothing may be overwritten.
  expect_same_batches(fresh, run(src, o, {}, 3), "held batches");
  // Batches let go of come back. A copy of the tensor alone does not hold the memory (the
  // documented contract): it sees a later batch written over the first one.
  Pipeline p(src, o);
  Batch b;
  ASSERT_TRUE(p.next(b));
  const Tensor first_images = b.images;
  int batches = 1;
  for (int e = 0; e < 3; ++e)
    while (p.next(b)) {
      // The contents are right although the memory is recycled.
      ASSERT_EQ(std::memcmp(b.images.data(), fresh[size_t(batches)].images.data(),
                            sizeof(float) * size_t(b.images.numel())), 0) << "batch " << batches;
      ++batches;
    }
  EXPECT_EQ(batches, 21);  // 3 epochs of 7
  EXPECT_NE(std::memcmp(first_images.data(), fresh[0].images.data(),
                        sizeof(float) * size_t(first_images.numel())), 0);
  // A batch that outlives its pipeline is still valid, and returns its memory safely.
  Batch kept;
  {
    Pipeline q(src, o);
    ASSERT_TRUE(q.next(kept));
  }
  EXPECT_EQ(std::memcmp(kept.images.data(), fresh[0].images.data(), sizeof(float) * size_t(kept.images.numel())), 0);
}

TEST(Pipeline, RejectsBadOptions) {
  auto src = generated_source(20, 2, 3, 8);
  PipelineOptions o;
  o.augment.crop = 9;
  EXPECT_THROW({ Pipeline p(src, o); }, ValueError);
  o.augment.crop = 6;
  o.augment.pca_std = 0.1f;  // no stats
  EXPECT_THROW({ Pipeline p(src, o); }, ValueError);
  o.augment.pca_std = 0.f;
  o.augment.pca_rescale = true;  // a rescale for noise that is not there
  convnet::testing::expect_throw_containing<ValueError>([&] { Pipeline p(src, o); }, "needs pca_std > 0");
  o.augment.pca_rescale = false;
  o.augment.subtract_mean_image = true;  // no mean image
  EXPECT_THROW({ Pipeline p(src, o); }, ValueError);
  o.augment.subtract_mean_image = false;
  o.workers = 0;
  EXPECT_THROW({ Pipeline p(src, o); }, ValueError);
  o.workers = 1;
  o.batch = 0;
  EXPECT_THROW({ Pipeline p(src, o); }, ValueError);
}

// Sizes that would exhaust memory or threads are refused in the constructor, naming the option,
// before any batch or thread exists (else: thousands of threads, or std::bad_alloc).
TEST(Pipeline, RefusesSizesBeyondItsLimits) {
  using convnet::testing::expect_throw_containing;
  auto src = generated_source(2000, 2, 3, 2048);
  PipelineOptions o;
  o.workers = kMaxPipelineWorkers + 1;
  expect_throw_containing<ValueError>([&] { Pipeline p(src, o); }, "workers 1025 must be at least 1 and at most 1024");
  o.workers = 2;
  o.prefetch = kMaxPipelinePrefetch + 1;
  expect_throw_containing<ValueError>([&] { Pipeline p(src, o); }, "prefetch 1025 must be");
  o.prefetch = 4;
  o.batch = 1000;  // 1000 x 3 x 2048 x 2048 floats = 47 GiB a batch, 6 batches held
  expect_throw_containing<ValueError>([&] { Pipeline p(src, o); }, "batch 1000 of 3 x 2048 x 2048 images");
  expect_throw_containing<ValueError>([&] { Pipeline p(src, o); }, "the limit is 64 GiB");
  // What is held counts min(batch, examples): a batch larger than a small set is one batch.
  o.batch = 1 << 30;
  Pipeline p(generated_source(20, 2, 3, 8), o);
  EXPECT_EQ(p.batches_per_epoch(), 1);
}

// Page-locked batches are for uploads to a GPU and are locked once each: they need batch reuse,
// and a GPU (where none is visible, as in CI, the pipeline says so rather than failing later).
TEST(Pipeline, PinnedMemoryNeedsBatchReuseAndAGpu) {
  using convnet::testing::expect_throw_containing;
  auto src = generated_source(20, 2, 3, 8);
  PipelineOptions o;
  o.batch = 4;  // full batches: a partial one is plain memory
  o.pinned_memory = true;
  expect_throw_containing<ValueError>([&] { Pipeline p(src, o); }, "needs reuse_batch_memory");
  o.reuse_batch_memory = true;
  if (cuda_device_count() > 0) {
    Pipeline p(src, o);  // with a GPU: CudaPipeline.PinnedBatchesArePageLockedAndTrainTheSameBits
    Batch b;
    ASSERT_TRUE(p.next(b));
    EXPECT_TRUE(b.images.is_pinned());
  } else {
    expect_throw_containing<ValueError>([&] { Pipeline p(src, o); },
                                        cuda_compiled() ? "no GPU is visible" : "no CUDA backend");
    EXPECT_THROW(Tensor::pinned({4}), RuntimeError);
  }
}

// ---- sources ----

TEST(PipelineSources, GeneratedIsDeterministicIntegralAndLearnable) {
  auto a = generated_source(400, 4, 3, 16, 5);
  auto b = generated_source(400, 4, 3, 16, 5);
  auto c = generated_source(400, 4, 3, 16, 6);
  EXPECT_EQ(a->channels(), 3);
  EXPECT_EQ(a->height(), 16);
  EXPECT_EQ(a->classes(), 4);
  const size_t n = 3 * 16 * 16;
  std::vector<float> x(n), y(n);
  int differ = 0;
  std::vector<std::vector<double>> class_mean(4, std::vector<double>(n, 0.0));
  std::vector<int> class_count(4, 0), labels;
  std::vector<std::vector<float>> images;
  for (int i = 0; i < 400; ++i) {
    const int l = a->load(i, x.data());
    EXPECT_EQ(b->load(i, y.data()), l);
    ASSERT_EQ(x, y) << "example " << i;
    ASSERT_TRUE(l >= 0 && l < 4);
    for (float v : x) ASSERT_TRUE(v >= 0.f && v <= 255.f && v == std::nearbyint(v));
    c->load(i, y.data());
    differ += x != y;
    if (i < 200) {
      for (size_t k = 0; k < n; ++k) class_mean[size_t(l)][k] += x[k];
      ++class_count[size_t(l)];
    } else {
      images.push_back(x);
      labels.push_back(l);
    }
  }
  EXPECT_GT(differ, 390);
  for (int k = 0; k < 4; ++k) ASSERT_GT(class_count[size_t(k)], 20) << "class " << k;
  // Learnable: the nearest class mean of the first 200 labels most of the other 200.
  int right = 0;
  for (size_t t = 0; t < images.size(); ++t) {
    int best = -1;
    double best_d = 1e300;
    for (int k = 0; k < 4; ++k) {
      double d = 0;
      for (size_t p = 0; p < n; ++p) {
        const double e = images[t][p] - class_mean[size_t(k)][p] / class_count[size_t(k)];
        d += e * e;
      }
      if (d < best_d) best_d = d, best = k;
    }
    right += best == labels[t];
  }
  EXPECT_GT(right, 180);
  EXPECT_THROW(a->load(400, x.data()), ValueError);
}

TEST(PipelineSources, GeneratedSizesAreRangeChecked) {
  using convnet::testing::expect_throw_containing;
  expect_throw_containing<ValueError>([] { generated_source(kMaxGeneratedCount + 1, 2, 1, 8); },
                                      "count 134217729 must be in [0, 134217728]");
  expect_throw_containing<ValueError>([] { generated_source(10, kMaxGeneratedClasses + 1, 1, 8); },
                                      "classes 16385 must be in [1, 16384]");
  expect_throw_containing<ValueError>([] { generated_source(10, 2, 17, 8); }, "channels 17 must be in [1, 16]");
  expect_throw_containing<ValueError>([] { generated_source(10, 2, 1, kMaxSourceSide + 1); },
                                      "size 4097 must be in [1, 4096]");
}

TEST(PipelineSources, ArraySourceCopiesAndChecksLabels) {
  std::vector<float> data = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int> labels = {1, 0};
  auto s = array_source(data.data(), labels.data(), 2, 1, 2, 2, 2);
  data.assign(8, -1.f);  // copied in: the caller's buffer may change
  std::vector<float> x(4);
  EXPECT_EQ(s->load(1, x.data()), 0);
  EXPECT_EQ(x, (std::vector<float>{5, 6, 7, 8}));
  labels = {1, 2};
  EXPECT_THROW(array_source(data.data(), labels.data(), 2, 1, 2, 2, 2), ValueError);
}

// ---- statistics ----

// N RGB images of size x size whose pixel colours are given by `colour(example, pixel)`.
template <class F>
std::shared_ptr<DataSource> colour_source(int n, int size, F colour) {
  std::vector<float> data;
  std::vector<int> labels(size_t(n), 0);
  const int plane = size * size;
  for (int i = 0; i < n; ++i) {
    std::vector<float> img(size_t(3 * plane));
    for (int p = 0; p < plane; ++p) {
      const std::array<float, 3> rgb = colour(i, p);
      for (int c = 0; c < 3; ++c) img[size_t(c * plane + p)] = rgb[size_t(c)];
    }
    data.insert(data.end(), img.begin(), img.end());
  }
  return array_source(data.data(), labels.data(), n, 3, size, size, 1);
}

TEST(Stats, ConstantColourHasExactMeanAndNoVariance) {
  auto src = colour_source(40, 6, [](int, int) { return std::array<float, 3>{200.f, 100.f, 50.f}; });
  const DataStats s = compute_stats(*src);
  EXPECT_EQ(s.examples, 40);
  ASSERT_EQ(s.mean.size(), 3u * 36);
  const float want[3] = {200.f, 100.f, 50.f};
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 36; ++p) ASSERT_EQ(s.mean[size_t(c * 36 + p)], want[c]);
  for (float l : s.eigenvalues) EXPECT_NEAR(l, 0.f, 1e-6);
  for (int i = 0; i < 3; ++i) {
    double norm = 0;
    for (int c = 0; c < 3; ++c) norm += double(s.eigenvectors[size_t(i)][size_t(c)]) * s.eigenvectors[size_t(i)][size_t(c)];
    EXPECT_NEAR(norm, 1.0, 1e-6);
  }
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
float unit(uint64_t h) { return float(double(h >> 11) * 0x1.0p-53 * 2 - 1); }  // in [-1, 1)

TEST(Stats, ColoursAlongOneDirectionGiveThatEigenvector) {
  const double u[3] = {1.0, 2.0, -0.5};
  const double norm = std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
  auto src = colour_source(30, 8, [&](int i, int p) {
    const double t = 60.0 * unit(mix(uint64_t(i) * 64 + uint64_t(p)));
    return std::array<float, 3>{float(128 + t * u[0] / norm), float(128 + t * u[1] / norm),
                                float(128 + t * u[2] / norm)};
  });
  const DataStats s = compute_stats(*src);
  double dot = 0;
  for (int c = 0; c < 3; ++c) dot += s.eigenvectors[0][size_t(c)] * u[c] / norm;
  EXPECT_NEAR(dot, 1.0, 1e-5);  // the sign convention: largest component (green) positive
  EXPECT_NEAR(s.eigenvalues[0], 1200.0, 60.0);  // var of uniform(-60, 60) = 3600 / 3
  EXPECT_LT(s.eigenvalues[1], 1e-3);
  EXPECT_LT(s.eigenvalues[2], 1e-3);
}

TEST(Stats, EigenDecompositionOfAGeneralCovariance) {
  auto src = colour_source(25, 10, [](int i, int p) {
    const uint64_t h = uint64_t(i) * 1000 + uint64_t(p);
    const float a = 50 * unit(mix(3 * h)), b = 20 * unit(mix(3 * h + 1)), c = 8 * unit(mix(3 * h + 2));
    return std::array<float, 3>{128 + a + b, 128 + 0.5f * a - b + c, 128 - 0.3f * a + c};
  });
  const DataStats s = compute_stats(*src);
  // The covariance, computed here directly in double.
  double mean[3] = {0, 0, 0}, cov[3][3] = {};
  std::vector<float> img(300);
  for (int i = 0; i < 25; ++i) {
    src->load(i, img.data());
    for (int p = 0; p < 100; ++p)
      for (int c = 0; c < 3; ++c) mean[c] += img[size_t(c * 100 + p)] / 2500.0;
  }
  for (int i = 0; i < 25; ++i) {
    src->load(i, img.data());
    for (int p = 0; p < 100; ++p)
      for (int c = 0; c < 3; ++c)
        for (int d = 0; d < 3; ++d)
          cov[c][d] += (img[size_t(c * 100 + p)] - mean[c]) * (img[size_t(d * 100 + p)] - mean[d]) / 2500.0;
  }
  EXPECT_GT(s.eigenvalues[0], s.eigenvalues[1]);
  EXPECT_GT(s.eigenvalues[1], s.eigenvalues[2]);
  EXPECT_GT(s.eigenvalues[2], 0.f);
  for (int i = 0; i < 3; ++i) {
    const auto& p = s.eigenvectors[size_t(i)];
    for (int c = 0; c < 3; ++c) {
      double cp = 0;
      for (int d = 0; d < 3; ++d) cp += cov[c][d] * p[size_t(d)];
      EXPECT_NEAR(cp, s.eigenvalues[size_t(i)] * p[size_t(c)], 1e-3 * s.eigenvalues[0]) << i << " " << c;
    }
    for (int j = 0; j < 3; ++j) {
      double dot = 0;
      for (int c = 0; c < 3; ++c) dot += double(p[size_t(c)]) * s.eigenvectors[size_t(j)][size_t(c)];
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-5);
    }
  }
}

TEST(Stats, SampleProgressAndSkippedExamples) {
  auto src = coded_source(100, 1, 2, 2);
  std::vector<std::pair<int64_t, int64_t>> calls;
  const DataStats s = compute_stats(*src, 10, [&](int64_t done, int64_t total) { calls.push_back({done, total}); });
  EXPECT_EQ(s.examples, 10);
  // Evenly spaced: examples 0, 10, ..., 90, whose pixel 0 is i * 1000; mean 45000.
  EXPECT_EQ(s.mean[0], 45000.f);
  EXPECT_EQ(s.mean[3], 45011.f);
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), (std::pair<int64_t, int64_t>{10, 10}));
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GT(calls[i].first, calls[i - 1].first);

  auto flaky = std::make_shared<FlakySource>(coded_source(20, 1, 2, 2), std::set<int64_t>{3, 4});
  const DataStats f = compute_stats(*flaky);
  EXPECT_EQ(f.examples, 18);
  EXPECT_EQ(f.skipped, 2);  // counted, not silent
  EXPECT_EQ(s.skipped, 0);
  EXPECT_NEAR(f.mean[0], (190.0 - 7.0) * 1000 / 18, 1e-2);
  auto dead = std::make_shared<FlakySource>(coded_source(5, 1, 2, 2), std::set<int64_t>{-1});
  EXPECT_THROW(compute_stats(*dead), RuntimeError);
}

TEST(Stats, ProgressRoughlyEveryPercent) {
  auto src = generated_source(5000, 3, 1, 4);
  std::vector<int64_t> done;
  compute_stats(*src, 0, [&](int64_t d, int64_t) { done.push_back(d); });
  EXPECT_GE(done.size(), 50u);
  EXPECT_LE(done.size(), 130u);
  EXPECT_EQ(done.back(), 5000);
}

TEST(Stats, SameResultForAnyThreadCount) {
  auto src = generated_source(700, 5, 3, 48, 4);  // big enough for compute_stats to use threads
  const int keep = omp_get_max_threads();
  omp_set_num_threads(1);
  const DataStats one = compute_stats(*src);
  omp_set_num_threads(4);
  const DataStats four = compute_stats(*src);
  omp_set_num_threads(keep);
  EXPECT_EQ(one.mean, four.mean);
  EXPECT_EQ(one.eigenvalues, four.eigenvalues);
  EXPECT_EQ(one.eigenvectors, four.eigenvectors);
  EXPECT_EQ(one.pixel_std, four.pixel_std);
}

// pixel_std is the standard deviation of every value about their mean, in the pixels' own units:
// the same images in [0, 1] give 1/255 of it (to float rounding), and 1 / pixel_std scales both
// to the same unit-variance input.
TEST(Stats, PixelStdInAnyUnits) {
  auto src = generated_source(60, 3, 3, 12, 2);
  std::vector<float> all(60 * 3 * 144), unit_range(all.size());
  std::vector<int> labels(60);
  for (int i = 0; i < 60; ++i) labels[size_t(i)] = src->load(i, all.data() + size_t(i) * 432);
  double mean = 0, sq = 0;
  for (float v : all) mean += v / double(all.size());
  for (float v : all) sq += (v - mean) * (v - mean) / double(all.size());
  for (size_t i = 0; i < all.size(); ++i) unit_range[i] = all[i] / 255.f;
  const DataStats s = compute_stats(*src);
  EXPECT_NEAR(s.pixel_std, std::sqrt(sq), 1e-4 * std::sqrt(sq));
  EXPECT_GT(s.pixel_std, 10.f);  // generated images span 0-255
  auto small = array_source(unit_range.data(), labels.data(), 60, 3, 12, 12, 3);
  const DataStats u = compute_stats(*small);
  EXPECT_NEAR(u.pixel_std * 255.0, s.pixel_std, 1e-5 * s.pixel_std);
  for (int i = 0; i < 3; ++i)  // and the colour variances 1/255^2 of theirs
    EXPECT_NEAR(u.eigenvalues[size_t(i)] * 65025.0, s.eigenvalues[size_t(i)], 1e-4 * s.eigenvalues[0]);
  EXPECT_NEAR(parse_scale("std", s) / parse_scale("std", u), 1.0 / 255, 1e-8);
  EXPECT_EQ(parse_scale("0.5", s), 0.5f);
  EXPECT_THROW(parse_scale("1/255", s), ValueError);
  EXPECT_THROW(parse_scale("-1", s), ValueError);
  EXPECT_THROW(parse_scale("std", DataStats{}), ValueError);
}

TEST(Stats, SaveLoadRoundTripAndErrorsNameTheFile) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("convnet_stats_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto src = generated_source(50, 3, 3, 8, 11);
  const DataStats s = compute_stats(*src);
  const std::string path = (dir / "stats.json").string();
  save_stats(s, path);
  const DataStats t = load_stats(path);
  EXPECT_EQ(t.examples, s.examples);
  EXPECT_EQ(t.mean, s.mean);  // bitwise: floats survive the JSON text
  EXPECT_EQ(t.eigenvalues, s.eigenvalues);
  EXPECT_EQ(t.eigenvectors, s.eigenvectors);
  EXPECT_EQ(t.pixel_std, s.pixel_std);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "no error";
  };
  const std::string missing = (dir / "missing.json").string();
  EXPECT_THROW(load_stats(missing), RuntimeError);
  EXPECT_NE(message([&] { load_stats(missing); }).find(missing), std::string::npos);
  const std::string bad = (dir / "bad.json").string();
  std::ofstream(bad) << "{ not json";
  EXPECT_THROW(load_stats(bad), ValueError);
  EXPECT_NE(message([&] { load_stats(bad); }).find(bad), std::string::npos);
  std::ofstream(bad) << R"({"format": "convnet-stats", "examples": 1, "mean": [1], "eigenvalues": [1, 2]})";
  EXPECT_THROW(load_stats(bad), ValueError);
  std::ofstream(bad) << R"({"something": "else"})";
  EXPECT_NE(message([&] { load_stats(bad); }).find(bad), std::string::npos);

  // A file of version 1, as convnet wrote before pixel_std and before the colour noise took the
  // square roots of its eigenvalues (which were variances then as now): read as it is.
  const std::string v1 = (dir / "v1.json").string();
  std::ofstream(v1) << R"({"format": "convnet-stats", "version": 1, "examples": 7, "mean": [1, 2, 3],
      "eigenvalues": [400, 100, 25], "eigenvectors": [[0, 1, 0], [1, 0, 0], [0, 0, 1]]})";
  const DataStats old = load_stats(v1);
  EXPECT_EQ(old.eigenvalues, (std::array<float, 3>{400.f, 100.f, 25.f}));
  EXPECT_EQ(old.pixel_std, 0.f);  // unknown: scale "std" asks for new statistics
  EXPECT_NE(message([&] { parse_scale("std", old); }).find("version 1"), std::string::npos);
  // What cannot be colour statistics is refused, naming the file and the fault.
  auto refused = [&](const std::string& json, const std::string& why) {
    std::ofstream(bad) << json;
    const std::string m = message([&] { load_stats(bad); });
    EXPECT_NE(m.find(bad), std::string::npos) << m;
    EXPECT_NE(m.find(why), std::string::npos) << m;
  };
  const std::string head = R"({"format": "convnet-stats", "examples": 1, "mean": [1], )";
  refused(head + R"("version": 3, "eigenvalues": [1, 1, 1], "eigenvectors": [[1,0,0],[0,1,0],[0,0,1]]})",
          "version 3");
  refused(head + R"("version": 1, "eigenvalues": [1, -1, 1], "eigenvectors": [[1,0,0],[0,1,0],[0,0,1]]})",
          "finite and >= 0");
  // Vectors scaled by their standard deviations (another way to store colour PCA).
  refused(head + R"("version": 1, "eigenvalues": [400, 100, 25], "eigenvectors": [[20,0,0],[0,10,0],[0,0,5]]})",
          "not orthonormal");
  refused(head + R"("version": 2, "pixel_std": -3, "eigenvalues": [1, 1, 1], "eigenvectors": [[1,0,0],[0,1,0],[0,0,1]]})",
          "not a standard deviation");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace convnet
