// Data set statistics for the AlexNet preprocessing: the mean image, and the principal
// components of the RGB pixel values (the 3x3 covariance's eigen-decomposition) that the PCA
// colour augmentation adds multiples of. Saved and loaded as JSON.
//
// compute_stats is parallel over examples, yet its result does not depend on the number of
// threads: examples are summed in fixed-size chunks (the chunk size depends only on the sample
// size), each chunk sequentially, and the chunk sums are added into the total in chunk order.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <omp.h>

#include <stdexcept>  // before data.h, which uses std::runtime_error without it

#include "convnet/data.h"
#include "convnet/error.h"
#include "data/augment_plan.h"

namespace convnet {
namespace {

// Sums over a set of examples. Values are shifted by a reference near their mean (that of the
// first example read) before the second moments are accumulated: a variance is
// E[x^2] - E[x]^2, and small spreads (near-constant colours, or pixels in [0, 1]) would otherwise
// be lost to cancellation.
struct Partial {
  std::vector<double> sum;  // per pixel of the CHW image
  double s[3] = {0, 0, 0};  // RGB: per channel
  double ss[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
  double all_s = 0, all_ss = 0;  // every value of every channel
  int64_t pixels = 0, examples = 0;
  std::exception_ptr error;

  void reset() {
    std::fill(sum.begin(), sum.end(), 0.0);
    for (int i = 0; i < 3; ++i) {
      s[i] = 0;
      for (int j = 0; j < 3; ++j) ss[i][j] = 0;
    }
    all_s = all_ss = 0;
    pixels = examples = 0;
    error = nullptr;
  }
  void add(const Partial& o) {
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += o.sum[i];
    all_s += o.all_s;
    all_ss += o.all_ss;
    for (int i = 0; i < 3; ++i) {
      s[i] += o.s[i];
      for (int j = 0; j < 3; ++j) ss[i][j] += o.ss[i][j];
    }
    pixels += o.pixels;
    examples += o.examples;
  }
};

// Eigen-decomposition of a symmetric 3x3 matrix by cyclic Jacobi rotations: each rotation
// zeroes one off-diagonal element; a few sweeps reach double precision. On return `values` are
// descending and column i of `vectors` (vectors[k][i]) is the unit eigenvector of values[i].
void jacobi_eigen3(double a[3][3], double values[3], double vectors[3][3]) {
  double v[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  for (int sweep = 0; sweep < 64; ++sweep) {
    const double off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
    const double diag = a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2];
    if (off == 0.0 || off < 1e-32 * diag) break;
    static const int pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
    for (const auto& pq : pairs) {
      const int p = pq[0], q = pq[1];
      if (a[p][q] == 0.0) continue;
      const double theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
      const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
      const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
      for (int k = 0; k < 3; ++k) {  // A <- A J
        const double akp = a[k][p], akq = a[k][q];
        a[k][p] = c * akp - s * akq;
        a[k][q] = s * akp + c * akq;
      }
      for (int k = 0; k < 3; ++k) {  // A <- J^T A
        const double apk = a[p][k], aqk = a[q][k];
        a[p][k] = c * apk - s * aqk;
        a[q][k] = s * apk + c * aqk;
      }
      for (int k = 0; k < 3; ++k) {  // V <- V J
        const double vkp = v[k][p], vkq = v[k][q];
        v[k][p] = c * vkp - s * vkq;
        v[k][q] = s * vkp + c * vkq;
      }
    }
  }
  int order[3] = {0, 1, 2};
  std::sort(order, order + 3, [&](int i, int j) { return a[i][i] > a[j][j]; });
  for (int i = 0; i < 3; ++i) {
    const int src = order[i];
    values[i] = a[src][src];
    // A sign convention, so the same data always give the same vectors: the component of
    // largest magnitude is positive.
    int big = 0;
    for (int k = 1; k < 3; ++k)
      if (std::fabs(v[k][src]) > std::fabs(v[big][src])) big = k;
    const double sign = v[big][src] < 0 ? -1.0 : 1.0;
    for (int k = 0; k < 3; ++k) vectors[k][i] = sign * v[k][src];
  }
}

void accumulate(Partial& p, const float* chw, int channels, size_t plane, double ref) {
  const size_t n = size_t(channels) * plane;
  double s = 0, ss = 0;
  for (size_t i = 0; i < n; ++i) {
    p.sum[i] += chw[i];
    const double x = chw[i] - ref;
    s += x;
    ss += x * x;
  }
  p.all_s += s;
  p.all_ss += ss;
  if (channels == 3) {
    const float* r = chw;
    const float* g = chw + plane;
    const float* b = chw + 2 * plane;
    double s0 = 0, s1 = 0, s2 = 0, s00 = 0, s01 = 0, s02 = 0, s11 = 0, s12 = 0, s22 = 0;
    for (size_t i = 0; i < plane; ++i) {
      const double x0 = r[i] - ref, x1 = g[i] - ref, x2 = b[i] - ref;
      s0 += x0, s1 += x1, s2 += x2;
      s00 += x0 * x0, s01 += x0 * x1, s02 += x0 * x2;
      s11 += x1 * x1, s12 += x1 * x2, s22 += x2 * x2;
    }
    p.s[0] += s0, p.s[1] += s1, p.s[2] += s2;
    p.ss[0][0] += s00, p.ss[0][1] += s01, p.ss[0][2] += s02;
    p.ss[1][1] += s11, p.ss[1][2] += s12, p.ss[2][2] += s22;
    p.pixels += int64_t(plane);
  }
  p.examples += 1;
}

bool has_colour_components(const DataStats& s) {
  for (const auto& v : s.eigenvectors)
    for (float x : v)
      if (x != 0.f) return true;
  return false;  // a source that is not RGB has none
}

void check_colour_variances(const DataStats& s, const std::string& who) {
  for (float l : s.eigenvalues)
    CONVNET_CHECK(std::isfinite(l) && l >= 0.f, who,
                  ": the stats' eigenvalues must be finite and >= 0 (colour variances), got ",
                  s.eigenvalues[0], ", ", s.eigenvalues[1], ", ", s.eigenvalues[2]);
}

// What a loaded file must hold for the colour noise to mean what it says: eigenvalues that can be
// variances and eigenvectors that are orthonormal, or none. Vectors scaled by their magnitudes
// (another common way to store colour PCA) are refused here rather than misused.
void check_colour_components(const DataStats& s, const std::string& path) {
  check_colour_variances(s, path);
  if (!has_colour_components(s)) return;
  for (size_t i = 0; i < 3; ++i)
    for (size_t k = 0; k < 3; ++k) {
      double dot = 0;
      for (size_t c = 0; c < 3; ++c) dot += double(s.eigenvectors[i][c]) * double(s.eigenvectors[k][c]);
      CONVNET_CHECK(std::fabs(dot - (i == k ? 1.0 : 0.0)) < 1e-3, path,
                    ": stats file eigenvectors are not orthonormal (p_", i, " . p_", k, " = ", dot, ")");
    }
}

// 2: pixel_std added.
constexpr int kStatsVersion = 2;

}  // namespace

DataStats compute_stats(const DataSource& source, int64_t sample,
                        const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t total = source.size();
  CONVNET_CHECK(total > 0, "compute_stats: the source is empty");
  CONVNET_CHECK(sample >= 0, "compute_stats: sample ", sample, " is negative");
  const int64_t n = (sample == 0 || sample > total) ? total : sample;
  const int channels = source.channels();
  const size_t plane = size_t(source.height()) * size_t(source.width());
  const size_t example = size_t(channels) * plane;

  // Chunks small enough for progress near every 1% and for load balance, large enough that
  // adding a chunk's mean-image sum into the total costs little next to loading the chunk.
  const int64_t chunk = std::clamp<int64_t>(n / 256, 1, 64);
  const int64_t chunks = (n + chunk - 1) / chunk;
  // Chunks summed per parallel round: one per thread, but no more than about 1% of the sample,
  // since progress is reported between rounds. (Rounds only group the work: the sums, added in
  // chunk order, are the same for any round size.)
  const int64_t chunks_per_percent = std::max<int64_t>(1, n / 100 / chunk);
  const int round = int(std::clamp<int64_t>(chunks_per_percent, 1, std::max(1, omp_get_max_threads())));
  // Threads only pay off for real images: a round is a fork and a barrier, which on a busy
  // machine costs more than summing a few thousand tiny test images.
  const bool parallel = double(n) * double(example) > double(1 << 22);
  std::vector<Partial> partials(static_cast<size_t>(round));
  for (auto& p : partials) p.sum.assign(example, 0.0);
  std::vector<std::vector<float>> buffers(static_cast<size_t>(round), std::vector<float>(example));
  // The shift of the second moments: the mean value of the first sampled example that loads.
  double ref = 0;
  for (int64_t e = 0; e < std::min<int64_t>(n, 8); ++e) {
    try {
      source.load(e * total / n, buffers[0].data());
    } catch (const DataError&) {
      continue;
    }
    ref = std::accumulate(buffers[0].begin(), buffers[0].end(), 0.0) / double(example);
    break;
  }
  Partial totals;
  totals.sum.assign(example, 0.0);

  int64_t next_report = 0;
  const int64_t report_every = std::max<int64_t>(1, n / 100);
  for (int64_t r0 = 0; r0 < chunks; r0 += round) {
    const int rn = int(std::min<int64_t>(round, chunks - r0));
#pragma omp parallel for schedule(dynamic, 1) num_threads(round) if (parallel)
    for (int k = 0; k < rn; ++k) {
      Partial& p = partials[size_t(k)];
      p.reset();
      float* image = buffers[size_t(omp_get_thread_num())].data();
      const int64_t first = (r0 + k) * chunk, last = std::min(n, first + chunk);
      for (int64_t e = first; e < last; ++e) {
        const int64_t index = e * total / n;  // evenly spaced over the whole source
        try {
          source.load(index, image);
        } catch (const DataError&) {
          continue;  // an unreadable example just does not count
        } catch (...) {
          p.error = std::current_exception();
          break;
        }
        accumulate(p, image, channels, plane, ref);
      }
    }
    for (int k = 0; k < rn; ++k) {
      if (partials[size_t(k)].error) std::rethrow_exception(partials[size_t(k)].error);
      totals.add(partials[size_t(k)]);
    }
    const int64_t done = std::min(n, (r0 + rn) * chunk);
    if (progress && (done >= next_report || done == n)) {
      progress(done, n);
      next_report = done + report_every;
    }
  }
  if (totals.examples == 0)
    throw RuntimeError(detail::concat("compute_stats: none of the ", n,
                                      " sampled examples could be read (first: ",
                                      source.describe(0), ")"));

  DataStats stats;
  stats.examples = totals.examples;
  stats.skipped = n - totals.examples;  // every sampled example is read or skipped
  stats.mean.resize(example);
  for (size_t i = 0; i < example; ++i) stats.mean[i] = float(totals.sum[i] / double(totals.examples));
  const double values = double(totals.examples) * double(example);
  const double shifted_mean = totals.all_s / values;
  stats.pixel_std = float(std::sqrt(std::max(0.0, totals.all_ss / values - shifted_mean * shifted_mean)));
  if (channels == 3) {
    const double np = double(totals.pixels);
    double mu[3], cov[3][3];
    for (int i = 0; i < 3; ++i) mu[i] = totals.s[i] / np;
    for (int i = 0; i < 3; ++i)
      for (int j = i; j < 3; ++j) cov[i][j] = cov[j][i] = totals.ss[i][j] / np - mu[i] * mu[j];
    double values[3], vectors[3][3];
    jacobi_eigen3(cov, values, vectors);
    for (int i = 0; i < 3; ++i) {
      // The covariance is positive semi-definite; a tiny negative value is rounding.
      stats.eigenvalues[size_t(i)] = float(std::max(0.0, values[i]));
      for (int k = 0; k < 3; ++k) stats.eigenvectors[size_t(i)][size_t(k)] = float(vectors[k][i]);
    }
  }
  return stats;
}

void check_colour_noise(const AugmentOptions& o, int channels, const DataStats& stats,
                        const char* who) {
  if (!(o.pca_std > 0.f)) return;
  CONVNET_CHECK(channels == 3, who, ": PCA colour noise (pca_std ", o.pca_std,
                ") needs RGB images; the source has ", channels, " channel(s)");
  CONVNET_CHECK(has_colour_components(stats), who, ": PCA colour noise (pca_std ", o.pca_std,
                ") needs stats with eigenvectors; run compute_stats on this source");
  check_colour_variances(stats, who);
}

float parse_scale(const std::string& text, const DataStats& stats) {
  if (text == "std") {
    CONVNET_CHECK(stats.pixel_std > 0.f, "scale 'std' needs the data's pixel standard deviation, and ",
                  stats.examples == 0 ? std::string("no statistics were computed")
                                      : std::string("these statistics lack it (a stats file of version 1, "
                                                    "or images of one constant value): run compute_stats again"));
    return 1.f / stats.pixel_std;
  }
  char* end = nullptr;
  const float x = std::strtof(text.c_str(), &end);
  CONVNET_CHECK(!text.empty() && end && *end == '\0' && std::isfinite(x) && x > 0.f, "scale '", text,
                "' is neither a positive number nor 'std' (1 / the pixels' standard deviation)");
  return x;
}

void save_stats(const DataStats& stats, const std::string& path) {
  nlohmann::json j;
  j["format"] = "convnet-stats";
  j["version"] = kStatsVersion;
  j["examples"] = stats.examples;
  j["eigenvalues"] = stats.eigenvalues;
  j["eigenvectors"] = stats.eigenvectors;  // eigenvectors[i] is the i-th column p_i
  j["pixel_std"] = stats.pixel_std;
  j["mean"] = stats.mean;
  // Written beside the target and renamed over it, so a crash never leaves half a file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) throw RuntimeError(path + ": cannot write stats file (cannot create " + tmp + ")");
    out << j.dump() << "\n";
    out.close();
    if (!out) throw RuntimeError(path + ": error writing stats file");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw RuntimeError(path + ": cannot write stats file (rename failed)");
  }
}

DataStats load_stats(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw RuntimeError(path + ": cannot open stats file");
  DataStats stats;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    if (j.value("format", std::string()) != "convnet-stats")
      throw ValueError(path + ": not a convnet stats file (no \"format\": \"convnet-stats\")");
    // Version 1 lacks pixel_std (read as 0: unknown). Its eigenvalues are the colour variances,
    // as now: files written before the colour noise took their square roots read correctly.
    const int version = j.value("version", 1);
    if (version < 1 || version > kStatsVersion)
      throw ValueError(detail::concat(path, ": stats file version ", version, "; this convnet reads versions 1 to ",
                                      kStatsVersion, " (run compute_stats again)"));
    stats.pixel_std = version >= 2 ? j.at("pixel_std").get<float>() : 0.f;
    if (!(std::isfinite(stats.pixel_std) && stats.pixel_std >= 0.f))
      throw ValueError(detail::concat(path, ": stats file pixel_std ", stats.pixel_std, " is not a standard deviation"));
    stats.examples = j.at("examples").get<int64_t>();
    stats.mean = j.at("mean").get<std::vector<float>>();
    const auto values = j.at("eigenvalues").get<std::vector<float>>();
    const auto vectors = j.at("eigenvectors").get<std::vector<std::vector<float>>>();
    if (values.size() != 3 || vectors.size() != 3 || vectors[0].size() != 3 ||
        vectors[1].size() != 3 || vectors[2].size() != 3)
      throw ValueError(path + ": stats file needs 3 eigenvalues and 3 eigenvectors of 3 components");
    for (size_t i = 0; i < 3; ++i) {
      stats.eigenvalues[i] = values[i];
      for (size_t k = 0; k < 3; ++k) stats.eigenvectors[i][k] = vectors[i][k];
    }
  } catch (const nlohmann::json::exception& e) {
    throw ValueError(path + ": bad stats file (" + e.what() + ")");
  }
  check_colour_components(stats, path);
  return stats;
}

}  // namespace convnet
