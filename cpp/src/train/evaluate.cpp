// Evaluation: a net's cost and errors over a test pipeline (single view), and AlexNet's 10-view
// test (corner and centre crops with their reflections, softmax outputs averaged).
#include <algorithm>
#include <cmath>
#include <vector>

#include "convnet/trainer.h"

namespace convnet {

Metrics evaluate(Net& net, Pipeline& data, int max_batches) {
  const auto [input, labels] = input_and_labels(net);
  Metrics m;
  data.start_epoch(0);
  Batch batch;
  for (int b = 0; (max_batches <= 0 || b < max_batches) && data.next(batch); ++b) {
    net.set_input(input, batch.images);
    net.set_input(labels, batch.labels);
    CostReport r;
    try {  // a NaN cost is no error rate (Net::forward names the layer): say which batch
      r = net.forward(false);
    } catch (const NonFiniteError& e) {
      throw NonFiniteError("evaluate, test batch " + std::to_string(b + 1) + ": " + e.what());
    }
    CONVNET_CHECK(!r.costs.empty(), "evaluate: the net has no cost layer");
    m.add(r.costs[r.primary], r.batch);
    m.add_skipped(batch.skipped, batch.first_skipped);
  }
  return m;
}

namespace {

// The 10 views' class probabilities come from the first cost layer that classifies.
std::string first_classifier(const Net& net) {
  for (Layer* l : net.layers())
    if (l->declaration().is_classifier()) return l->name();
  throw ValueError("10-view test: the net has no cost layer that classifies (such as softmax_cost)");
}

// Cost, top-1 and top-5 error of one example from its averaged class probabilities.
CostReport::Entry score(const std::vector<double>& probs, int label) {
  const double p = probs[size_t(label)];
  int above = 0;  // classes ranked strictly before the true one
  for (double q : probs) above += q > p;
  CostReport::Entry e;
  e.cost = -std::log(std::max(p, 1e-30));
  e.top1_error = above >= 1;
  e.top5_error = above >= 5;
  return e;
}

}  // namespace

Metrics evaluate_multiview(Net& net, const DataSource& source, const DataStats& stats,
                           const AugmentOptions& augment, int batch,
                           const std::function<void(int64_t, int64_t)>& progress) {
  const auto [input, labels] = input_and_labels(net);
  const std::string cost = first_classifier(net);
  const int c = source.channels(), h = source.height(), w = source.width();
  const int crop = augment.crop > 0 ? augment.crop : std::min(h, w);
  CONVNET_CHECK(crop <= h && crop <= w, "10-view test: crop ", crop, " is larger than the images (",
                h, "x", w, ")");
  CONVNET_CHECK(!augment.subtract_mean_image || stats.mean.size() == size_t(c) * h * w,
                "10-view test: subtract_mean_image needs the data set's mean image (compute_stats)");
  const int per_batch = std::max(1, batch / 10);  // examples per forward pass, 10 views each
  const int64_t count = source.size();
  const size_t image = size_t(c) * h * w, view = size_t(c) * crop * crop;
  std::vector<float> chw(image);
  std::vector<float> loaded;  // the readable images of one pass, one after another
  std::vector<int> truth;
  Metrics m;
  m.left_out = true;
  for (int64_t first = 0; first < count; first += per_batch) {
    const int64_t end = std::min<int64_t>(first + per_batch, count);
    // An unreadable example is left out and counted (not replaced: every other example is
    // tested once already), so the report says how many the accuracy lacks.
    loaded.clear();
    truth.clear();
    for (int64_t e = first; e < end; ++e) {
      try {
        truth.push_back(source.load(e, chw.data()));
      } catch (const DataError& err) {
        m.add_skipped(1, skipped_example_text(source.describe(e), err.what()));
        continue;
      }
      loaded.insert(loaded.end(), chw.begin(), chw.end());
    }
    const int n = int(truth.size());
    if (progress && n == 0) progress(end, count);
    if (n == 0) continue;
    Tensor views({c, crop, crop, 10 * n}, Device::cpu());
    Tensor label_tensor({10 * n}, Device::cpu());
    for (int j = 0; j < n; ++j) {
      std::copy(loaded.begin() + std::ptrdiff_t(size_t(j) * image),
                loaded.begin() + std::ptrdiff_t(size_t(j + 1) * image), chw.begin());
      for (size_t i = 0; i < image; ++i) {
        const float mean = augment.subtract_mean_image ? stats.mean[i] : augment.mean_value;
        chw[i] = (chw[i] - mean) * augment.scale;
      }
      const Tensor ten = ten_views(chw.data(), c, h, w, crop);
      // Example j's views go to columns 10j .. 10j+9 of the CHWN batch.
      const float* src = ten.data();
      float* dst = views.data();
      for (size_t pos = 0; pos < view; ++pos)
        std::copy(src + pos * 10, src + pos * 10 + 10, dst + pos * size_t(10 * n) + size_t(10 * j));
      std::fill(label_tensor.data() + 10 * j, label_tensor.data() + 10 * j + 10, float(truth[size_t(j)]));
    }
    net.set_input(input, views);
    net.set_input(labels, label_tensor);
    net.forward(false);
    const std::vector<float> probs = net.output(cost).to_vector();  // {K, 1, 1, 10n}
    const int classes = int(probs.size() / size_t(10 * n));
    for (int j = 0; j < n; ++j) {
      std::vector<double> avg(size_t(classes), 0.0);
      for (int k = 0; k < classes; ++k)
        for (int v = 0; v < 10; ++v) avg[size_t(k)] += probs[size_t(k) * (10 * n) + size_t(10 * j + v)] / 10.0;
      m.add(score(avg, truth[size_t(j)]), 1);
    }
    if (progress) progress(end, count);
  }
  return m;
}

}  // namespace convnet
