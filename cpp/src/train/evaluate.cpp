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
    const CostReport r = net.forward(false);
    CONVNET_CHECK(!r.costs.empty(), "evaluate: the net has no cost layer");
    m.add(r.costs[r.primary], r.batch);
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
  Metrics m;
  for (int64_t first = 0; first < count; first += per_batch) {
    const int n = int(std::min<int64_t>(per_batch, count - first));
    Tensor views({c, crop, crop, 10 * n}, Device::cpu());
    Tensor label_tensor({10 * n}, Device::cpu());
    std::vector<int> truth(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) {
      truth[size_t(j)] = source.load(first + j, chw.data());
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
    if (progress) progress(first + n, count);
  }
  return m;
}

}  // namespace convnet
