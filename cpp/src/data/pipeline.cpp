// The prefetching pipeline: worker threads load, augment and write whole CHWN batches into a
// ring of `prefetch` slots; the consumer takes them strictly in order.
//
// Batches are numbered by a global sequence number seq = epoch * batches_per_epoch + index, so
// workers run on into the next epoch while the consumer finishes this one. A worker may claim
// batch seq only while seq < (the consumer's position) + prefetch, which bounds the memory held
// and makes slot seq % prefetch free for it. (The job counter is guarded by the mutex rather
// than atomic, since a worker has to wait on it for a free slot anyway.) What a worker writes for
// an example depends only on (seed, epoch, example index), so the batches are identical for any
// number of workers.
//
// A worker takes kGroup examples at a time: it draws each one's augmentation plan (crop,
// reflection, colour offset) from its key, loads it (from a WindowSource only the crop window, as
// bytes; from any other source the whole image, as floats) and writes the group into the batch in
// one pass (batch_writer.h).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <stdexcept>  // before data.h, which uses std::runtime_error without it

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "convnet/data.h"
#include "convnet/error.h"
#include "data/augment_plan.h"
#include "data/batch_writer.h"
#include "data/hash.h"
#include "data/window_source.h"

namespace convnet {
namespace {

// The augmentation key of example `index` in `epoch`: a fresh crop, reflection and colour noise
// per example per epoch, the same whichever worker (or position in the batch) handles it.
uint64_t example_key(uint64_t seed, int64_t epoch, int64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ uint64_t(epoch)) ^ uint64_t(index));
}

// A fresh batch of AlexNet images is 77 MB of untouched pages: faulting them in 4 KB at a time
// cost about a third of the pipeline's time. Asking for transparent huge pages (where the kernel
// leaves them to madvise) makes that about 3x cheaper; reusing batches
// (PipelineOptions::reuse_batch_memory) avoids it. Only a hint: failure changes nothing.
void advise_huge_pages(float* data, int64_t count) {
#ifdef __linux__
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(data + count) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)count;
#endif
}

// After this many consecutive unreadable examples the data are broken, not a few bad files.
constexpr int64_t kMaxConsecutiveFailures = 100;

// Full-size batch tensors the consumer has let go of, for reuse. Shared with the leases in the
// batches handed out, so a batch that outlives its pipeline still returns its memory safely.
struct BatchPool {
  std::mutex mutex;
  std::vector<std::pair<Tensor, Tensor>> idle;  // images, labels
};

}  // namespace

struct Pipeline::Impl {
  std::shared_ptr<DataSource> source;
  const WindowSource* window_source = nullptr;  // the same source, when it has the fast path
  PipelineOptions opt;
  DataStats stats;
  int channels = 0, height = 0, width = 0, out_h = 0, out_w = 0;
  int64_t count = 0, batches = 0;

  struct Slot {
    bool ready = false;
    int64_t seq = -1;
    Batch batch;
    std::exception_ptr error;
  };

  // Everything below up to `threads` is guarded by `mutex`.
  mutable std::mutex mutex;
  std::condition_variable work_cv;   // workers: a job became claimable, or stop
  std::condition_variable ready_cv;  // consumer: a slot was filled
  int64_t epoch = 0, consumed = 0;   // the consumer's position: next batch is (epoch, consumed)
  int64_t next_job = 0;              // the next seq a worker will claim
  uint64_t generation = 0;           // bumped by start_epoch: results of older work are dropped
  std::vector<Slot> slots;
  // Read without the lock by workers, to abandon a batch early.
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> live_generation{0};
  std::atomic<int64_t> skipped_total{0};
  bool warned = false;  // the first skip has been shown on stderr (guarded by `mutex`)

  std::mutex order_mutex;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> orders;  // by epoch, a few recent

  std::shared_ptr<BatchPool> pool = std::make_shared<BatchPool>();

  std::vector<std::thread> threads;

  Impl(std::shared_ptr<DataSource> src, PipelineOptions o, DataStats s)
      : source(std::move(src)), opt(o), stats(std::move(s)) {
    CONVNET_CHECK(source, "Pipeline: no data source");
    CONVNET_CHECK(opt.batch >= 1, "Pipeline: batch ", opt.batch, " must be at least 1");
    CONVNET_CHECK(opt.workers >= 1 && opt.workers <= kMaxPipelineWorkers, "Pipeline: workers ",
                  opt.workers, " must be at least 1 and at most ", kMaxPipelineWorkers);
    CONVNET_CHECK(opt.prefetch >= 1 && opt.prefetch <= kMaxPipelinePrefetch, "Pipeline: prefetch ",
                  opt.prefetch, " must be at least 1 and at most ", kMaxPipelinePrefetch);
    CONVNET_CHECK(opt.shards >= 1 && opt.shard >= 0 && opt.shard < opt.shards, "Pipeline: shard ", opt.shard,
                  " of ", opt.shards, " does not exist (shards are numbered from 0)");
    CONVNET_CHECK(opt.batch % opt.shards == 0, "Pipeline: a batch of ", opt.batch, " does not split into ",
                  opt.shards, " equal shards (choose a batch divisible by ", opt.shards, ")");
    CONVNET_CHECK(!opt.pinned_memory || opt.reuse_batch_memory,
                  "Pipeline: pinned_memory needs reuse_batch_memory (page-locking each batch anew "
                  "would cost more than the copy it saves)");
    CONVNET_CHECK(!opt.pinned_memory || cuda_device_count() > 0,
                  "Pipeline: pinned_memory is for uploads to a GPU, and ",
                  cuda_compiled() ? "no GPU is visible" : "this build has no CUDA backend");
    channels = source->channels();
    // Rescaled images (scale jittering) are resampled from whole images, not decoded windows.
    if (channels <= 4 && !rescales(opt.augment, opt.train))
      window_source = dynamic_cast<const WindowSource*>(source.get());
    height = source->height();
    width = source->width();
    count = source->size();
    const AugmentOptions& a = opt.augment;
    CONVNET_CHECK(count > 0, "Pipeline: the source is empty");
    if (rescales(a, opt.train)) {  // VGG's scales: the crop comes from the rescaled image
      const int smallest = opt.train ? a.jitter_min : a.test_scale;
      CONVNET_CHECK(a.crop > 0 && a.crop <= smallest && (!opt.train || a.jitter_max >= a.jitter_min),
                    "Pipeline: ", opt.train ? "scale jittering [" : "the test scale [",
                    smallest, opt.train ? ", " + std::to_string(a.jitter_max) : std::string(),
                    "] needs a crop of at most ", smallest, ", and min <= max (crop ", a.crop, ")");
      CONVNET_CHECK(!a.subtract_mean_image, "Pipeline: rescaled images cannot take the mean image (it has "
                    "the source's size); subtract the mean value (--mean scalar), as VGG does");
    } else {
      CONVNET_CHECK(a.crop >= 0 && a.crop <= std::min(height, width), "Pipeline: crop ", a.crop,
                    " does not fit the source's ", height, " x ", width, " images");
    }
    out_h = a.crop ? a.crop : height;
    out_w = a.crop ? a.crop : width;
    // In floating point: the product of a huge batch and a huge image must not wrap.
    const double batch_bytes = double(std::min<int64_t>(opt.batch, count)) * channels * out_h * out_w * 4;
    const double held = batch_bytes * (opt.prefetch + opt.workers);
    CONVNET_CHECK(held <= double(kMaxPipelineBytes), "Pipeline: batch ", opt.batch, " of ", channels, " x ",
                  out_h, " x ", out_w, " images with prefetch ", opt.prefetch, " and workers ", opt.workers,
                  " would hold ", held / double(int64_t(1) << 30), " GiB of batches at once (the limit is ",
                  kMaxPipelineBytes >> 30, " GiB): lower the batch, prefetch or workers");
    CONVNET_CHECK(!a.subtract_mean_image ||
                      stats.mean.size() == size_t(channels) * size_t(height) * size_t(width),
                  "Pipeline: subtract_mean_image needs stats with a ", channels, " x ", height,
                  " x ", width, " mean image (got ", stats.mean.size(),
                  " values); run compute_stats on this source");
    CONVNET_CHECK(a.pca_std >= 0.f, "Pipeline: pca_std ", a.pca_std, " must be a number >= 0");
    CONVNET_CHECK(!a.pca_rescale || a.pca_std > 0.f,
                  "Pipeline: pca_rescale is the colour noise's rescale; it needs pca_std > 0");
    if (opt.train) check_colour_noise(a, channels, stats, "Pipeline");
    batches = opt.drop_last ? count / opt.batch : (count + opt.batch - 1) / opt.batch;
    CONVNET_CHECK(batches > 0, "Pipeline: drop_last with ", count,
                  " examples leaves no batch of ", opt.batch);
    const int64_t last = count % opt.batch;
    CONVNET_CHECK(opt.drop_last || last == 0 || last >= opt.shards, "Pipeline: the last batch, of ", last,
                  " examples, leaves some of the ", opt.shards, " shards none (set drop_last)");
    slots.resize(size_t(opt.prefetch));
  }

  // Separate from the constructor so that if starting a thread fails, ~Impl joins the others.
  void start() {
    for (int i = 0; i < opt.workers; ++i) threads.emplace_back([this] { worker_main(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    work_cv.notify_all();
    for (auto& t : threads) t.join();
  }

  int64_t consumer_seq() const { return epoch * batches + consumed; }

  std::vector<int64_t> make_order(int64_t e) const {
    std::vector<int64_t> order(static_cast<size_t>(count));
    std::iota(order.begin(), order.end(), int64_t(0));
    if (!opt.shuffle) return order;
    // Fisher-Yates, its random words from a counter-based hash of (seed, epoch).
    const uint64_t stream = splitmix64(splitmix64(opt.seed ^ 0x5f1ee7ab1e0dde11ull) ^ uint64_t(e));
    for (int64_t i = count - 1; i > 0; --i) {
      const uint64_t r = splitmix64(stream + uint64_t(i));
      const auto j = int64_t((unsigned __int128)r * uint64_t(i + 1) >> 64);
      std::swap(order[size_t(i)], order[size_t(j)]);
    }
    return order;
  }

  std::shared_ptr<const std::vector<int64_t>> order_for(int64_t e) {
    {
      std::lock_guard<std::mutex> lock(order_mutex);
      auto it = orders.find(e);
      if (it != orders.end()) return it->second;
    }
    // Built outside the lock (a shuffle of 1.3 million takes a while); two workers may race to
    // build the same one, which is harmless since both build the same order.
    auto made = std::make_shared<const std::vector<int64_t>>(make_order(e));
    std::lock_guard<std::mutex> lock(order_mutex);
    auto result = orders.emplace(e, made).first->second;
    while (orders.size() > 3) {  // workers only ever need the current and the next epoch
      auto victim = orders.begin();
      if (victim->first == e) ++victim;
      orders.erase(victim);
    }
    return result;
  }

  // Loads the example at `pos` of the epoch's order through load(index) -> label, or, when it
  // throws DataError, the next one of the order that loads (wrapping). Returns the index loaded;
  // counts one skip when the example at `pos` itself failed (its replacements failing too are
  // other examples' skips).
  // The batch's first skip is recorded in out.first_skipped (where it comes from and why).
  template <class Load>
  int64_t load_with_skip(const std::vector<int64_t>& order, int64_t pos, Load&& load, int* label,
                         Batch& out) const {
    std::vector<int64_t> failed;
    std::string last_error;
    for (int64_t k = 0;; ++k) {
      const int64_t index = order[size_t((pos + k) % count)];
      try {
        *label = load(index);
        out.skipped += k > 0 ? 1 : 0;
        return index;
      } catch (const DataError& e) {
        failed.push_back(index);
        last_error = e.what();
        if (k == 0 && out.first_skipped.empty())
          out.first_skipped = skipped_example_text(source->describe(index), last_error);
      }
      if (k + 1 >= std::min(kMaxConsecutiveFailures, count)) {
        std::string names;
        for (size_t i = 0; i < failed.size() && i < 5; ++i)
          names += (i ? "; " : "") + source->describe(failed[i]);
        throw RuntimeError(detail::concat("Pipeline: ", k + 1,
                                          " consecutive examples failed to load, giving up: ",
                                          names, failed.size() > 5 ? "; ..." : "",
                                          " (last error: ", last_error, ")"));
      }
    }
  }

  struct Scratch {
    std::vector<float> images;     // kGroup whole source images (any source)
    std::vector<uint8_t> windows;  // kGroup crop windows (a WindowSource)
  };

  // The batch's tensors: reused ones from the pool when allowed and the batch is full-size.
  void allocate(int n, Batch& out) {
    const bool reuse = opt.reuse_batch_memory && n == opt.batch / opt.shards;
    std::pair<Tensor, Tensor> buffers;
    if (reuse) {
      std::lock_guard<std::mutex> lock(pool->mutex);
      if (!pool->idle.empty()) {
        buffers = std::move(pool->idle.back());
        pool->idle.pop_back();
      }
    }
    if (!buffers.first.defined() && reuse && opt.pinned_memory) {
      buffers.first = Tensor::pinned({channels, out_h, out_w, n});
      buffers.second = Tensor::pinned({n});
    } else if (!buffers.first.defined()) {
      buffers.first = Tensor({channels, out_h, out_w, n}, Device::cpu());
      buffers.second = Tensor({n}, Device::cpu());
      advise_huge_pages(buffers.first.data(), buffers.first.numel());
    }
    out.images = buffers.first;
    out.labels = buffers.second;
    if (reuse) {
      // Returns the tensors once the last copy of this Batch is gone (in whichever thread).
      out.memory_lease = std::shared_ptr<void>(
          nullptr, [pool = pool, buffers = std::move(buffers)](void*) mutable {
            try {
              std::lock_guard<std::mutex> lock(pool->mutex);
              pool->idle.push_back(std::move(buffers));
            } catch (...) {  // out of memory for the list: the tensors are simply freed
            }
          });
    }
  }

  // Builds batch `seq` into `out`. Returns false when abandoned (stop, or start_epoch).
  bool build(int64_t seq, uint64_t gen, Scratch& scratch, Batch& out) {
    const int64_t e = seq / batches, index = seq % batches;
    const auto order = order_for(e);
    // This shard's part [lo, lo + n) of the global batch's n_global examples.
    const int64_t n_global = std::min<int64_t>(opt.batch, count - index * opt.batch);
    const int64_t lo = opt.shard * n_global / opt.shards;
    const int64_t first = index * opt.batch + lo;
    const int n = int((opt.shard + 1) * n_global / opt.shards - lo);
    const size_t in_size = size_t(channels) * size_t(height) * size_t(width);
    const size_t window_size = 4 * size_t(out_h) * size_t(out_w);
    allocate(n, out);
    out.epoch = e;
    out.index = index;
    out.skipped = 0;
    out.first_skipped.clear();
    out.first_example = lo;
    out.global_size = n_global;
    float* labels = out.labels.data();
    GroupTarget target;
    target.images = out.images.data();
    target.n = n;
    target.channels = channels;
    target.height = out_h;
    target.width = out_w;
    target.mean_image = opt.augment.subtract_mean_image ? stats.mean.data() : nullptr;
    target.source_height = height;
    target.source_width = width;
    target.mean_value = opt.augment.mean_value;
    target.scale = output_scale(opt.augment, channels, opt.train);
    AugmentPlan plans[kGroup];
    const float* whole_images[kGroup];
    for (int j0 = 0; j0 < n; j0 += kGroup) {
      const int g = std::min(kGroup, n - j0);
      for (int j = 0; j < g; ++j) {
        if (stopping.load(std::memory_order_relaxed) ||
            live_generation.load(std::memory_order_relaxed) != gen)
          return false;
        float* image = window_source ? nullptr : scratch.images.data() + size_t(j) * in_size;
        uint8_t* window = window_source ? scratch.windows.data() + size_t(j) * window_size : nullptr;
        whole_images[j] = image;
        // The plan follows the example actually loaded (a replacement has its own).
        auto load = [&](int64_t i) {
          plans[j] = plan_augmentation(channels, height, width, opt.augment, stats, opt.train,
                                       example_key(opt.seed, e, i));
          if (!window_source) return source->load(i, image);
          ImageWindow w;
          w.top = plans[j].top;
          w.left = plans[j].left;
          w.height = plans[j].height;
          w.width = plans[j].width;
          w.mirror = plans[j].mirror;
          return window_source->load_window(i, w, window);
        };
        int label = 0;
        load_with_skip(*order, first + j0 + j, load, &label, out);
        labels[j0 + j] = float(label);
      }
      target.first = j0;
      if (window_source) write_group(scratch.windows.data(), window_size, plans, g, target);
      else write_group(whole_images, plans, g, target);
    }
    return true;
  }

  void worker_main() {
    Scratch scratch;
    if (window_source)  // 4 bytes per pixel
      scratch.windows.resize(size_t(kGroup) * 4 * size_t(out_h) * size_t(out_w));
    else
      scratch.images.resize(size_t(kGroup) * size_t(channels) * size_t(height) * size_t(width));
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      work_cv.wait(lock, [&] { return stopping || next_job < consumer_seq() + opt.prefetch; });
      if (stopping) return;
      const int64_t seq = next_job++;
      const uint64_t gen = generation;
      lock.unlock();
      Batch batch;
      std::exception_ptr error;
      bool done = false;
      try {
        done = build(seq, gen, scratch, batch);
      } catch (...) {
        error = std::current_exception();
        done = true;
      }
      lock.lock();
      if (done && gen == generation && !stopping) {
        Slot& slot = slots[size_t(seq % opt.prefetch)];
        slot.batch = std::move(batch);
        slot.error = error;
        slot.seq = seq;
        slot.ready = true;
        ready_cv.notify_all();
      }
    }
  }

  bool next(Batch& out) {
    std::unique_lock<std::mutex> lock(mutex);
    if (consumed == batches) {
      // The epoch is over: say so once, and move on (the workers already have).
      ++epoch;
      consumed = 0;
      return false;
    }
    const int64_t seq = consumer_seq();
    Slot& slot = slots[size_t(seq % opt.prefetch)];
    ready_cv.wait(lock, [&] { return slot.ready && slot.seq == seq; });
    // A failed batch stays in place: asking again raises the same error.
    if (slot.error) std::rethrow_exception(slot.error);
    out = std::move(slot.batch);
    slot.batch = Batch();
    slot.ready = false;
    ++consumed;
    skipped_total += out.skipped;
    // Here, in batch order, so that the warning names the same file whatever the workers did.
    const bool warn = out.skipped > 0 && !warned;
    warned = warned || warn;
    lock.unlock();
    if (warn)
      std::fprintf(stderr,
                   "convnet: warning: a data example could not be read and was skipped (replaced "
                   "by the next one of the epoch): %s. Later skips are counted (Batch.skipped, "
                   "the trainer's log), not shown.\n",
                   out.first_skipped.c_str());
    work_cv.notify_one();  // one more batch may now be claimed
    return true;
  }

  void start_epoch(int64_t e, int64_t first_batch) {
    CONVNET_CHECK(e >= 0, "Pipeline::start_epoch: epoch ", e, " is negative");
    CONVNET_CHECK(first_batch >= 0 && first_batch <= batches, "Pipeline::start_epoch: batch ",
                  first_batch, " is outside the epoch's [0, ", batches, "]");
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++generation;
      live_generation = generation;
      epoch = e;
      consumed = first_batch;
      next_job = consumer_seq();  // the batches before first_batch are never prepared
      for (auto& slot : slots) slot = Slot();
    }
    work_cv.notify_all();
  }
};

std::string skipped_example_text(const std::string& where, const std::string& error) {
  const std::string prefix = where + ": ";
  const bool repeats = error.compare(0, prefix.size(), prefix) == 0;
  return "'" + where + "': " + (repeats ? error.substr(prefix.size()) : error);
}

Pipeline::Pipeline(std::shared_ptr<DataSource> source, PipelineOptions options, DataStats stats)
    : impl_(std::make_unique<Impl>(std::move(source), options, std::move(stats))) {
  impl_->start();
}

Pipeline::~Pipeline() = default;  // ~Impl stops and joins the workers

bool Pipeline::next(Batch& out) { return impl_->next(out); }
void Pipeline::start_epoch(int64_t epoch, int64_t first_batch) {
  impl_->start_epoch(epoch, first_batch);
}
int64_t Pipeline::batches_per_epoch() const { return impl_->batches; }
int64_t Pipeline::epoch() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->epoch;
}
int64_t Pipeline::skipped_total() const { return impl_->skipped_total.load(); }
const DataSource& Pipeline::source() const { return *impl_->source; }

}  // namespace convnet
