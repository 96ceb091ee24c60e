// Data: sources of labelled images, the AlexNet augmentation, and a prefetching pipeline that
// writes CHWN batches. Sources decode; the pipeline shuffles, augments and batches on worker
// threads. Everything a worker does to example i in epoch e depends only on (seed, e, i), so the
// batches are the same whatever the number of workers.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "convnet/tensor.h"

namespace convnet {

// A bad file: the message names it. Sources raise it for one example; the pipeline counts and
// skips such examples (corrupt images in a long run) instead of stopping.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How a skipped example is named in skip counts and warnings: "'<where>': <why>", `where` from
// DataSource::describe and `why` the DataError's message less a leading "<where>: " (the
// decoders' messages start with the path, which would otherwise be said twice).
std::string skipped_example_text(const std::string& where, const std::string& error);

// Random access to decoded examples, before augmentation. Thread-safe: load() is called from
// several workers at once.
class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual int64_t size() const = 0;
  // Every example has this shape once loaded (C, H, W).
  virtual int channels() const = 0;
  virtual int height() const = 0;
  virtual int width() const = 0;
  virtual int classes() const = 0;
  // Writes example i as C*H*W floats in CHW order, pixel values in [0, 255], and returns its
  // label. Throws DataError naming the file (or the index) when the example cannot be decoded.
  virtual int load(int64_t index, float* chw) const = 0;
  // Where example i comes from (a file path, "idx file X, image 17", ...), for messages.
  virtual std::string describe(int64_t index) const = 0;
  virtual std::vector<std::string> class_names() const { return {}; }
};

// An IDX file (gzip-compressed or raw) of any IDX type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C
// int32, 0x0D float32, 0x0E float64; elements in host byte order. ValueError naming the file for
// a bad magic number, a truncated header, or a body of another size than the header says. The
// header is checked before the body is allocated: a size that overflows, exceeds kMaxIdxBytes,
// or exceeds what the file can hold (its size; for gzip, kMaxGzipRatio times its size) is a
// ValueError, and a gzip stream is inflated only up to the size the header promises.
struct IdxArray {
  int type = 0x08;
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};
IdxArray read_idx(const std::string& path);
// Limits of read_idx. Deflate cannot compress more than 1032:1 (zlib's documentation), so a gzip
// file promising more than 2048 times its size is lying (twice the bound: a generous margin).
inline constexpr uint64_t kMaxIdxBytes = uint64_t(16) << 30;  // 16 GiB of data
inline constexpr uint64_t kMaxGzipRatio = 2048;

// IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw. A wrong magic number, dimension
// count or file size is a ValueError naming the file. Images are 1 x H x W.
std::shared_ptr<DataSource> idx_source(const std::string& images_path, const std::string& labels_path);

// An ImageNet-style folder: root/<class>/<file>.jpg|.jpeg|.JPEG|.png, class index by sorted
// folder name (as torchvision's ImageFolder). Files of other extensions are ignored; a class
// folder without images is a ValueError naming it. Images wider or taller than kMaxImageSide, or
// of more than kMaxImagePixels pixels (by their headers), are DataErrors naming the file. Each image is decoded (libjpeg-turbo, libpng;
// grey and CMYK converted to RGB), resized so the shorter side is `size` (area averaging when
// shrinking, bilinear when enlarging) and centre-cropped to size x size (AlexNet: 256). Output is
// always 3 x size x size. A JPEG at least twice `size` on its shorter side is decoded at 1/2,
// 1/4 or 1/8 scale (libjpeg's DCT scaling), keeping the file's geometry. In a Pipeline only the
// rows and columns of each example's crop are decoded and resized (same values).
std::shared_ptr<DataSource> folder_source(const std::string& root, int size = 256);

// folder_source for the test part of a data set: its class folders are matched BY NAME to
// `classes`, the training set's class names in label order, so each example gets the training
// label of its folder's name whatever folders are missing. A folder named as no training class
// is a ValueError naming it and `root`. classes() and class_names() are the training set's.
std::shared_ptr<DataSource> folder_source_matching(const std::string& root,
                                                   const std::vector<std::string>& classes,
                                                   int size = 256);

// The largest image a decoder accepts, checked on the file's header before any pixel memory is
// reserved (larger is a DataError naming the file): 2^15 pixels a side (JPEG's own format limit
// is 65535) and 2^28 pixels in all (1 GiB as RGBX; PIL's decompression-bomb limit is of the same
// order). ImageNet's largest photographs are under 2^13 a side.
inline constexpr int kMaxImageSide = 1 << 15;
inline constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

// Image files decoded exactly as folder_source decodes its images (3 x size x size), all of
// class 0: what `convnet predict` classifies. A file that cannot be read is a DataError naming it
// when loaded.
std::shared_ptr<DataSource> image_files_source(std::vector<std::string> paths, int size = 256);

// The largest side of the images a source makes (folder_source's and image_files_source's
// `size`, a generated set's `size`): one 3 x 4096 x 4096 example is already 192 MiB of floats,
// 16 times AlexNet's 256. Larger is a ValueError before anything is allocated.
inline constexpr int kMaxSourceSide = 4096;

// A generated data set with learnable labels (for tests and demos): each class is a fixed random
// smooth pattern; an example is its class's pattern, shifted and with noise, all determined by
// (seed, index). ValueError outside 0 <= count <= kMaxGeneratedCount, 1 <= classes <=
// kMaxGeneratedClasses, 1 <= channels <= kMaxGeneratedChannels, 1 <= size <= kMaxSourceSide
// (the class patterns take classes x channels x ~144 floats; an epoch's order 8 bytes an example).
inline constexpr int64_t kMaxGeneratedCount = int64_t(1) << 27;
inline constexpr int kMaxGeneratedClasses = 1 << 14;
inline constexpr int kMaxGeneratedChannels = 16;
std::shared_ptr<DataSource> generated_source(int64_t count, int classes, int channels, int size,
                                             uint64_t seed = 1);

// Images handed over from Python (or any caller): N x C x H x W floats and N labels, copied in.
// Any units: the statistics, the colour noise and scale "std" follow them; a fixed scale such as
// 1/255 assumes the [0, 255] of the other sources.
std::shared_ptr<DataSource> array_source(const float* nchw, const int* labels, int64_t count,
                                         int channels, int height, int width, int classes);

// Mean image and RGB principal components of a data set (or of a sample of it), as the AlexNet
// paper's PCA colour augmentation needs. In the units of the source's pixel values (0-255).
struct DataStats {
  std::vector<float> mean;                      // C*H*W, CHW order
  // Of the 3x3 covariance of the RGB values of all pixels: variances (squared pixel units),
  // descending. The colour noise uses their square roots, the standard deviations along p_i.
  std::array<float, 3> eigenvalues{};
  std::array<std::array<float, 3>, 3> eigenvectors{};  // eigenvectors[i] is the i-th column p_i
  // Of all values (every channel, pixel and example) about their mean: 1 / pixel_std is the
  // scale that gives the input unit variance (what kaiming and xavier inits assume), in any units.
  // 0 when unknown (a stats file of version 1).
  float pixel_std = 0.f;
  int64_t examples = 0;                         // how many examples went into them
  // Sampled examples that could not be read (DataError) and were left out; not in the file.
  int64_t skipped = 0;
};
// Reads up to `sample` examples (all when 0 or more than the source holds), evenly spaced; calls
// progress(done, total) now and then. Unreadable examples are skipped, and counted in
// DataStats::skipped. RGB sources only get PCA.
// The files are JSON; load_stats reads every version written so far and refuses what cannot be
// colour statistics (non-orthonormal eigenvectors, negative variances) with a ValueError.
DataStats compute_stats(const DataSource& source, int64_t sample = 0,
                        const std::function<void(int64_t, int64_t)>& progress = {});
void save_stats(const DataStats& stats, const std::string& path);  // JSON
DataStats load_stats(const std::string& path);

// The commands' `scale` option: a positive number, or "std" for 1 / stats.pixel_std, which gives
// the input unit variance whatever the pixels' units. ValueError naming the text otherwise, or
// when "std" meets stats without a pixel_std.
float parse_scale(const std::string& text, const DataStats& stats);

struct AugmentOptions {
  int crop = 0;                // output side; 0 = the source's full size (no crop)
  bool random_crop = true;     // training: a random crop; test: the centre crop
  bool mirror = true;          // training: a random horizontal reflection
  // AlexNet's PCA colour noise (RGB, training only; needs stats): add
  // sum_i alpha_i * sqrt(eigenvalue_i) * p_i to every pixel of an image, alpha_i ~ N(0, pca_std)
  // drawn per image per epoch (AlexNet: 0.1). The per-image offsets then have covariance
  // pca_std^2 times the pixels' colour covariance. The paper's text says "eigenvalue" where its
  // code (cuda-convnet2) uses the square root; eigenvalues themselves would move pixels by
  // about pca_std * 14000 levels on ImageNet, far past their 0-255 range.
  float pca_std = 0.f;
  // cuda-convnet2's companion rescale: training inputs (after the mean, with the noise) are also
  // multiplied by 1 / (1 + pca_std). Off by default: the noise adds only about pca_std^2 (1%)
  // to the inputs' variance, and the rescale makes training inputs 9% smaller than test inputs.
  bool pca_rescale = false;
  // VGG's scale jittering (training): the image is first rescaled (bilinear) so that its shorter
  // side is S, drawn per image per epoch uniformly from the integers [jitter_min, jitter_max], in
  // pixels of the image as the source holds it (a 28x28 source with S = 36 is upsampled by 36/28),
  // and the random crop is cut from that. 0: off. Needs a crop, at most jitter_min.
  int jitter_min = 0, jitter_max = 0;
  // VGG's single-scale test at Q (test): the image rescaled so its shorter side is Q, then the
  // centre crop. 0: the image as it is.
  int test_scale = 0;
  bool subtract_mean_image = false;  // subtract stats.mean (cropped like the image)
  float mean_value = 0.f;      // else subtract this scalar
  float scale = 1.f;           // then multiply (e.g. 1/255)
};

// One batch: images {C, crop, crop, N} (CHWN) and labels {N}, on the host.
struct Batch {
  Tensor images, labels;
  int64_t epoch = 0, index = 0;  // which batch of which epoch
  int64_t skipped = 0;           // examples of this batch that failed to load and were replaced
  std::string first_skipped;     // the first of them, skipped_example_text ("" when none)
  // With PipelineOptions::shards > 1 this is one shard of a global batch: its examples are
  // [first_example, first_example + size) of the global batch's global_size (else 0 and size).
  int64_t first_example = 0, global_size = 0;
  // With PipelineOptions::reuse_batch_memory: the tensors go back to the pipeline for reuse when
  // the last copy of this Batch is destroyed (a Tensor copied out of it does not hold them).
  std::shared_ptr<void> memory_lease;
};

struct PipelineOptions {
  int batch = 128;
  bool shuffle = true;
  bool train = true;         // random crops/flips/PCA; false: centre crop, no noise
  bool drop_last = false;    // drop a final partial batch
  uint64_t seed = 1;
  int workers = 2;           // decode and augment threads
  int prefetch = 4;          // batches ready ahead of the consumer (the bounded queue)
  // Reuse the memory of batches the consumer has let go of (every copy of the Batch destroyed)
  // rather than allocating fresh pages for each batch, which the kernel must zero: 19-77 MB per
  // AlexNet batch. Then keep the Batch, not only a copy of its tensors, for as long as you read
  // them. The Python Pipeline always does this (its batches' tensors never leave the Batch).
  bool reuse_batch_memory = false;
  // Full-size batches in page-locked host memory (Tensor::pinned), for a net whose input is on a
  // GPU: the upload is then one DMA, with no copy into a staging buffer first. Page-locking is
  // slow, so it needs reuse_batch_memory (each buffer is locked once); a last partial batch is
  // plain memory. Needs the CUDA backend and a GPU.
  bool pinned_memory = false;
  // Data parallelism: `batch` is the global batch, split in `shards` contiguous parts of
  // batch / shards examples (it must divide), of which this pipeline yields part `shard`; every
  // shard pipeline with the same seed sees the same epoch order and augments each example as
  // the whole one does, so the shards of a batch, side by side, are the whole batch bit for bit.
  // A last partial batch of n examples is split as evenly as it goes: part s gets
  // [s*n/shards, (s+1)*n/shards).
  int shard = 0, shards = 1;
  AugmentOptions augment;
};

// The Pipeline's limits, checked in its constructor before anything is allocated: workers and
// prefetch at most 1024 each, and the batches it may hold at once (prefetch ready ones and one
// per worker, each of min(batch, examples) output images as floats) at most 64 GiB.
inline constexpr int kMaxPipelineWorkers = 1024;
inline constexpr int kMaxPipelinePrefetch = 1024;
inline constexpr int64_t kMaxPipelineBytes = int64_t(64) << 30;

// Shuffles each epoch with (seed, epoch), prepares batches on worker threads into a bounded
// queue, and hands them out in order. The destructor stops the workers (clean shutdown). An
// example that fails to load (DataError) is replaced by the next one of the epoch's order and
// counted in Batch::skipped; the first such skip of a Pipeline is also named on stderr.
class Pipeline {
 public:
  Pipeline(std::shared_ptr<DataSource> source, PipelineOptions options, DataStats stats = {});
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // The next batch of the current epoch; false at the epoch's end (then the next call starts the
  // following epoch).
  bool next(Batch& out);
  // Jump to batch `first_batch` (0 to batches_per_epoch()) of `epoch`, for resuming a run: the
  // next batch returned is that one, bitwise what an uninterrupted run gets there; the batches
  // before it are not prepared.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  int64_t batches_per_epoch() const;
  int64_t epoch() const;
  int64_t skipped_total() const;  // corrupt examples skipped so far
  const DataSource& source() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Test-time views (AlexNet): the 4 corner and the centre crop of side `crop`, each with its
// reflection: 10 images {C, crop, crop, 10} from one C x H x W image (values as given).
Tensor ten_views(const float* chw, int channels, int height, int width, int crop);

// The augmentation of one example, exposed for tests: writes C x crop x crop (CHW) into out.
// `rng_key` selects the crop, reflection and PCA alphas; the pipeline uses hash(seed, epoch, index).
void augment_example(const float* chw, int channels, int height, int width, const AugmentOptions& o,
                     const DataStats& stats, bool train, uint64_t rng_key, float* out);

}  // namespace convnet
