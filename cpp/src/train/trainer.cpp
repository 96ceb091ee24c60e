#include "convnet/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "convnet/checkpoint.h"

namespace convnet {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

nlohmann::json metrics_json(const Metrics& m) {
  return {{"cost", m.cost}, {"top1_error", m.top1_error}, {"top5_error", m.top5_error},
          {"examples", m.examples}, {"skipped", m.skipped}, {"first_skipped", m.first_skipped}};
}

Metrics metrics_from(const nlohmann::json& j) {
  Metrics m;
  m.cost = j.at("cost").get<double>();
  m.top1_error = j.at("top1_error").get<double>();
  m.top5_error = j.at("top5_error").get<double>();
  m.examples = j.at("examples").get<int64_t>();
  // Checkpoints written before skips were counted have neither.
  m.skipped = j.value("skipped", int64_t(0));
  m.first_skipped = j.value("first_skipped", std::string());
  return m;
}

// A log line's fields for the skips of `m`, keys prefixed with `prefix` ("", "train_", "test_"):
// the count always, the first culprit only when there is one.
void log_skipped(nlohmann::json& line, const std::string& prefix, const Metrics& m) {
  line[prefix + "skipped"] = m.skipped;
  if (m.skipped > 0) line[prefix + "first_skipped"] = m.first_skipped;
}

// Non-finite input is the usual cause of a non-finite cost or gradient: say so.
std::string input_cause(const Net& net) {
  for (Layer* l : net.layers())
    if (l->is_input())
      for (float x : net.output(l->name()).to_vector())
        if (!std::isfinite(x)) return " because the input batch holds NaN or Inf";
  return "";
}

std::string layer_of(const std::string& param) { return param.substr(0, param.rfind('.')); }

}  // namespace

void Metrics::add(const CostReport::Entry& batch_means, int batch) {
  const double total = double(examples) + batch, w = batch / total;
  cost += (batch_means.cost - cost) * w;
  top1_error += (batch_means.top1_error - top1_error) * w;
  top5_error += (batch_means.top5_error - top5_error) * w;
  examples += batch;
}

void Metrics::add_skipped(int64_t count, const std::string& first) {
  if (count > 0 && skipped == 0) first_skipped = first;
  skipped += count;
}

std::string skipped_note(const Metrics& m, const std::string& set) {
  if (m.skipped == 0) return "";
  return detail::concat(m.skipped, " of ", m.examples + (m.left_out ? m.skipped : 0), " ", set,
                        " images unreadable, skipped",
                        m.first_skipped.empty() ? "" : ": first ", m.first_skipped);
}

std::string nonfinite_cost(const Net& net, const CostReport& report) {
  if (std::isfinite(report.objective)) return "";
  return "the cost is " + std::to_string(report.objective) + input_cause(net);
}

CostReport train_step(Net& net, float lr_scale) {
  Net::check_lr_scale(lr_scale);
  const CostReport r = net.forward_backward();
  if (const std::string what = nonfinite_cost(net, r); !what.empty())
    throw DivergenceError("non-finite cost at step " + std::to_string(net.step()) + ": " + what +
                          "; the parameters were not updated");
  // ReLU can turn a NaN into a finite cost but NaN weight gradients, which the cost alone lets
  // through into the weights.
  if (const std::string what = net.first_nonfinite_gradient(); !what.empty())
    throw DivergenceError("non-finite gradient at step " + std::to_string(net.step()) + ": " + what +
                          " (the cost is " + std::to_string(r.objective) + "); the parameters were not updated");
  net.update(lr_scale);
  return r;
}

std::pair<std::string, std::string> input_and_labels(const Net& net) {
  std::vector<std::string> inputs, labels;
  for (Layer* l : net.layers()) {
    if (l->role() == LayerRole::Input) inputs.push_back(l->name());
    if (l->role() == LayerRole::Labels) labels.push_back(l->name());
  }
  CONVNET_CHECK(inputs.size() == 1 && labels.size() == 1,
                "training needs a net with exactly one input and one labels layer; this one has ",
                inputs.size(), " input and ", labels.size(), " labels layers");
  return {inputs[0], labels[0]};
}

Trainer::Trainer(Net& net, Pipeline& train, Pipeline* test, TrainerOptions options)
    : net_(net), train_(train), test_(test), options_(std::move(options)) {
  CONVNET_CHECK(options_.epochs >= 0, "epochs must be >= 0, got ", options_.epochs);
  CONVNET_CHECK(options_.test_every >= 0 && options_.save_every >= 0 && options_.test_batches >= 0,
                "test_every, save_every and test_batches must be >= 0");
  std::tie(input_, labels_) = input_and_labels(net_);
  if (!options_.trace_path.empty()) {  // now, not after the traced steps
    const std::filesystem::path folder = std::filesystem::path(options_.trace_path).parent_path();
    CONVNET_CHECK(folder.empty() || std::filesystem::is_directory(folder), "the trace '",
                  options_.trace_path, "' would go into '", folder.string(), "', which is not a folder");
  }
  net_.set_solver(options_.solver);  // validates
  CONVNET_CHECK(options_.run_info.is_object(), "run_info must be a JSON object, got ",
                options_.run_info.dump());
  options_.run_info["solver"] = options_.solver.to_json();
  std::vector<bool> used(options_.schedules.size(), false);
  for (Param* p : net_.params()) {
    own_schedule_.push_back(p->schedule.empty() ? std::nullopt : std::optional(Schedule::parse(p->schedule)));
    int group = -1;
    for (size_t g = 0; g < options_.schedules.size() && group < 0; ++g) {
      const std::string& prefix = options_.schedules[g].first;
      if (prefix == "*" || layer_of(p->name).rfind(prefix, 0) == 0) group = int(g);
    }
    group_of_param_.push_back(group);
    if (group >= 0) used[size_t(group)] = true;
  }
  for (size_t g = 0; g < used.size(); ++g)
    CONVNET_CHECK(used[g], "learning-rate schedule group '", options_.schedules[g].first,
                  "' matches no layer with parameters (groups are layer-name prefixes, or *)");
}

void Trainer::set_rates(double epoch_float) {
  const auto params = net_.params();
  for (size_t i = 0; i < params.size(); ++i) {
    const int g = group_of_param_[i];
    const double m = own_schedule_[i] ? own_schedule_[i]->multiplier(epoch_float, options_.epochs)
                     : g < 0          ? 1.0
                                      : options_.schedules[size_t(g)].second.multiplier(epoch_float, options_.epochs);
    params[i]->lr = float(params[i]->base_lr * m);
  }
}

Metrics Trainer::run_test(int64_t epoch, int64_t batch, double epoch_float,
                          const std::function<double()>& elapsed) {
  TestEvent te;
  te.epoch = epoch;
  te.batch = batch;
  te.step = int64_t(net_.step());
  te.epoch_float = epoch_float;
  te.test = last_test_ = evaluate(net_, *test_, options_.test_batches);
  for (auto& [group, s] : options_.schedules) te.lr_dropped |= s.observe_validation(te.test.top1_error);
  te.elapsed_s = elapsed();
  nlohmann::json line = {{"event", "test"}, {"epoch", te.epoch}, {"batch", te.batch}, {"step", te.step},
                         {"epoch_float", te.epoch_float}, {"cost", te.test.cost},
                         {"top1_error", te.test.top1_error}, {"top5_error", te.test.top5_error},
                         {"lr_dropped", te.lr_dropped}, {"elapsed_s", te.elapsed_s}};
  log_skipped(line, "", te.test);
  log(line);
  if (on_test) on_test(te);
  return te.test;
}

void Trainer::log(const nlohmann::json& line) {
  if (options_.log_path.empty() || world_.rank() != 0) return;
  std::ofstream out(options_.log_path, std::ios::app);
  CONVNET_CHECK(bool(out), "cannot open the log file '", options_.log_path, "' for appending");
  out << line.dump() << '\n';  // one short write per line: a crash leaves whole lines
}

std::string Trainer::save(int64_t epoch, int64_t batch, const Metrics& epoch_train) {
  if (options_.save_dir.empty() || world_.rank() != 0) return "";
  nlohmann::json schedules = nlohmann::json::array();
  for (auto& [group, s] : options_.schedules) schedules.push_back({{"group", group}, {"state", s.state()}});
  const nlohmann::json state = {
      {"epoch", epoch}, {"batch", batch}, {"epochs", options_.epochs},
      {"batches_per_epoch", train_.batches_per_epoch()}, {"schedules", schedules},
      {"epoch_train", metrics_json(epoch_train)}, {"last_test", metrics_json(last_test_)},
      {"elapsed_s", elapsed_before_}, {"run", options_.run_info}};
  last_checkpoint_ = save_checkpoint_in(net_, options_.save_dir, epoch, batch, state, options_.keep);
  return last_checkpoint_;
}

std::vector<std::string> Trainer::resume(const std::string& checkpoint_or_dir) {
  std::string path = checkpoint_or_dir;
  if (std::filesystem::is_directory(path)) {
    path = latest_checkpoint(checkpoint_or_dir);
    CONVNET_CHECK(!path.empty(), "nothing to resume: no checkpoint in '", checkpoint_or_dir, "'");
  }
  const CheckpointMeta meta = read_checkpoint_meta(path);
  net_.set_seed(meta.seed);
  const nlohmann::json state = load_checkpoint(net_, path);  // refuses another solver
  std::vector<std::string> notes;
  if (!(meta.solver == options_.solver))
    notes.push_back("solver changed from " + meta.solver.text() + " to " + options_.solver.text());
  try {
    const int64_t batches = state.at("batches_per_epoch").get<int64_t>();
    CONVNET_CHECK(batches == train_.batches_per_epoch(), "checkpoint '", path, "' was made with ",
                  batches, " batches per epoch, this run has ", train_.batches_per_epoch(),
                  ": resume with the same data set and batch size");
    epoch_ = state.at("epoch").get<int64_t>();
    next_batch_ = state.at("batch").get<int64_t>();
    epoch_sums_ = metrics_from(state.at("epoch_train"));
    last_test_ = metrics_from(state.at("last_test"));
    elapsed_before_ = state.at("elapsed_s").get<double>();
    for (std::string& note : restore_schedules(state.at("schedules"))) notes.push_back(std::move(note));
  } catch (const nlohmann::json::exception& e) {
    throw ValueError("checkpoint '" + path + "': trainer state is malformed (" + e.what() + ")");
  }
  last_checkpoint_ = path;
  return notes;
}

std::vector<std::string> Trainer::restore_schedules(const nlohmann::json& saved) {
  std::vector<std::string> notes;
  std::vector<bool> restored(options_.schedules.size(), false);
  for (const auto& entry : saved) {
    const std::string group = entry.at("group").get<std::string>();
    const nlohmann::json& st = entry.at("state");
    const std::string was = st.at("text").get<std::string>();
    const int drops = st.at("drops").get<int>();
    const std::string record = detail::concat("best test error ", st.at("best_error").get<double>(),
                                              ", ", st.at("bad_tests").get<int>(),
                                              " test(s) without improvement, ", drops, " drop(s)");
    size_t g = 0;
    while (g < options_.schedules.size() && options_.schedules[g].first != group) ++g;
    if (g == options_.schedules.size()) {
      notes.push_back(detail::concat("schedule group '", group, "' (", was,
                                     ") of the checkpoint is not in this run; its state is dropped"));
      continue;
    }
    Schedule& now = options_.schedules[g].second;
    restored[g] = true;
    if (now.text() == was) {
      now.load_state(st);
    } else if (now.type() == "plateau" && was.rfind("plateau", 0) == 0) {
      now.load_state(st);
      notes.push_back(detail::concat("schedule of group '", group, "' changed from ", was, " to ",
                                     now.text(), "; the plateau's record carries over (", record, ")"));
    } else {
      notes.push_back(detail::concat("schedule of group '", group, "' changed from ", was, " to ",
                                     now.text(), "; the new schedule starts afresh",
                                     drops > 0 ? detail::concat(" (the old one had lowered the rate ",
                                                                drops, " time(s))")
                                               : std::string()));
    }
  }
  for (size_t g = 0; g < options_.schedules.size(); ++g)
    if (!restored[g] && options_.schedules[g].second.type() == "plateau")
      notes.push_back(detail::concat("schedule group '", options_.schedules[g].first,
                                     "' is new since the checkpoint; its plateau starts afresh"));
  return notes;
}

CostReport Trainer::forward_backward_summed(double share, double& wait_s) {
  std::vector<bool> started(net_.gradient_buckets().size(), false);
  struct HookGuard {  // the hook captures this call's locals: never leave it behind
    Net& net;
    ~HookGuard() { net.set_bucket_ready_hook({}); }
  } guard{net_};
  net_.set_bucket_ready_hook([&](size_t b) {
    start_gradient_sum(b, share);
    started[b] = true;
    world_.progress();
  });
  // Both passes at once (one CUDA graph launch when the net has them on); no update yet.
  const CostReport r = net_.forward_backward();
  const auto t0 = Clock::now();
  for (size_t b = 0; b < started.size(); ++b)
    if (!started[b]) start_gradient_sum(b, share);  // a CUDA graph's replay calls no hook
  const double span_us = trace_ ? trace_->now_us() : 0;
  world_.finish_all_reduces();
  wait_s = seconds_since(t0);
  if (trace_) trace_span("all-reduce wait", span_us);
  return r;
}

void Trainer::write_trace() {
  trace_->write(options_.trace_path);
  log({{"event", "trace"}, {"path", options_.trace_path}, {"steps", steps_run_ - 1}});
  trace_.reset();
}

void Trainer::trace_span(const char* name, double start_us) {
  trace_->add(Trace::Span{"host", name, "step", start_us, trace_->now_us()});
}

void Trainer::start_gradient_sum(size_t bucket, double share) {
  // Each rank's gradients are of the mean over its share of the global batch: weighted by that
  // share and summed, they are the gradients of the global batch's mean.
  Tensor flat = net_.gradient_buckets()[bucket].flat;
  if (share != 1.0) axpby(float(share), flat, flat, false);  // on the bucket's device
  world_.start_all_reduce_sum(flat);
}

uint64_t Trainer::weights_hash() {
  uint64_t h = 14695981039346656037ull;  // FNV-1a over every parameter's bytes, in order
  for (Param* p : net_.params()) {
    const std::vector<float> v = p->value.to_vector();
    const auto* bytes = reinterpret_cast<const unsigned char*>(v.data());
    for (size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  }
  return h;
}

double Trainer::gradient_sum_squares() {
  // The gradient buckets (flat, their padding zero), grouped by device: one reduction per device.
  std::vector<Device> devices;
  std::vector<std::vector<const Tensor*>> flats;
  for (const Net::GradientBucket& b : net_.gradient_buckets()) {
    size_t d = 0;
    while (d < devices.size() && devices[d] != b.device) ++d;
    if (d == devices.size()) {
      devices.push_back(b.device);
      flats.emplace_back();
    }
    flats[d].push_back(&b.flat);
  }
  double total = 0;
  for (const auto& on_one_device : flats) total += sum_squares(on_one_device);
  return total;
}

void Trainer::diverged(const std::string& what, int64_t epoch, int64_t batch) {
  std::ostringstream msg;
  msg << "training diverged at epoch " << epoch << ", batch " << batch << " (step " << net_.step()
      << "): " << what << "; no update was applied. ";
  if (!last_checkpoint_.empty())
    msg << "The last good checkpoint is '" << last_checkpoint_ << "'. ";
  else
    msg << "No checkpoint was written (set a save folder to keep one). ";
  msg << "Try a lower learning rate.";
  log({{"event", "diverged"}, {"epoch", epoch}, {"batch", batch}, {"step", net_.step()}, {"message", msg.str()}});
  throw DivergenceError(msg.str());
}

Trainer::Result Trainer::run() {
  const auto t0 = Clock::now();
  const double before = elapsed_before_;
  auto elapsed = [&] { return before + seconds_since(t0); };
  const int64_t batches = train_.batches_per_epoch();
  Result result;
  Batch batch;
  for (; epoch_ < options_.epochs; ++epoch_, next_batch_ = 0, epoch_sums_ = Metrics{}) {
    const auto epoch_t0 = Clock::now();
    train_.start_epoch(epoch_, next_batch_);
    int64_t images = 0;
    for (;;) {
      // This step's timeline (--trace): from the second step of the run, kTraceSteps of them.
      const bool tracing = !options_.trace_path.empty() && world_.rank() == 0 && steps_run_ >= 1 &&
                           steps_run_ <= TrainerOptions::kTraceSteps;
      if (tracing && !trace_) trace_ = std::make_unique<Trace>();
      net_.set_trace(tracing ? trace_.get() : nullptr);
      double span_us = trace_ ? trace_->now_us() : 0;
      if (!train_.next(batch)) break;
      if (tracing) trace_span("data", span_us);
      const double epoch_float = epoch_ + double(next_batch_) / batches;
      set_rates(epoch_float);
      net_.set_input(input_, batch.images);
      net_.set_input(labels_, batch.labels);
      net_.set_batch_shard({batch.first_example, batch.global_size});
      // This rank's share of the global batch (1 when it is the whole batch).
      const double share = batch.global_size ? double(batch.images.dim(3)) / double(batch.global_size) : 1.0;
      double allreduce_s = 0;  // the gradient sums' wait after backward (data parallelism)
      if (tracing) span_us = trace_->now_us();
      const CostReport r = world_.distributed() ? forward_backward_summed(share, allreduce_s)
                                                : net_.forward_backward();
      if (tracing) trace_span("forward + backward", span_us);
      CONVNET_CHECK(!r.costs.empty(), "training needs a cost layer");
      // This step's metrics (of the whole global batch when the ranks share it) and whether
      // any rank's cost is not finite: every rank then stops together.
      CostReport::Entry step_metrics = r.costs[r.primary];
      int step_batch = r.batch;
      int64_t step_skipped = batch.skipped;
      std::string what = nonfinite_cost(net_, r);
      if (world_.distributed()) {
        std::vector<double> v = {step_metrics.cost * share, step_metrics.top1_error * share,
                                 step_metrics.top5_error * share, what.empty() ? 0.0 : 1.0,
                                 double(batch.skipped)};
        world_.all_reduce_sum(v);
        step_metrics.cost = v[0];
        step_metrics.top1_error = v[1];
        step_metrics.top5_error = v[2];
        step_batch = int(batch.global_size);
        step_skipped = int64_t(v[4]);  // every rank's shard's (the first culprit: this rank's)
        if (what.empty() && v[3] > 0) what = "the cost is not finite on another rank";
      }
      if (!what.empty()) diverged(what, epoch_ + 1, next_batch_ + 1);
      const double grad_norm = std::sqrt(gradient_sum_squares());
      if (!std::isfinite(grad_norm))
        diverged("the gradient norm is " + std::to_string(grad_norm) + input_cause(net_), epoch_ + 1, next_batch_ + 1);
      if (options_.max_grad_norm > 0 && grad_norm > options_.max_grad_norm)
        diverged("the gradient norm " + std::to_string(grad_norm) + " exceeds the limit " +
                     std::to_string(options_.max_grad_norm),
                 epoch_ + 1, next_batch_ + 1);
      if (tracing) span_us = trace_->now_us();
      net_.update();
      if (tracing) trace_span("update", span_us);
      ++next_batch_;
      ++steps_run_;
      net_.set_trace(nullptr);  // tests are not part of the timeline
      if (tracing && steps_run_ == TrainerOptions::kTraceSteps + 1) write_trace();
      images += step_batch;
      epoch_sums_.add(step_metrics, step_batch);
      epoch_sums_.add_skipped(step_skipped, batch.first_skipped);

      BatchEvent ev;
      ev.epoch = epoch_ + 1;
      ev.batch = next_batch_;
      ev.batches = batches;
      ev.step = int64_t(net_.step());
      ev.epoch_float = epoch_ + double(next_batch_) / batches;
      ev.train.add(step_metrics, step_batch);
      ev.lr = net_.params().empty() ? 0 : net_.params()[0]->lr;
      ev.grad_norm = grad_norm;
      ev.elapsed_s = elapsed();
      ev.images_per_s = images / std::max(1e-9, seconds_since(epoch_t0));
      nlohmann::json line = {{"event", "batch"}, {"epoch", ev.epoch}, {"batch", ev.batch}, {"step", ev.step},
                             {"epoch_float", ev.epoch_float}, {"cost", ev.train.cost},
                             {"top1_error", ev.train.top1_error}, {"top5_error", ev.train.top5_error},
                             {"lr", ev.lr}, {"grad_norm", grad_norm}, {"elapsed_s", ev.elapsed_s},
                             {"images_per_s", ev.images_per_s}};
      if (world_.distributed()) line["allreduce_s"] = allreduce_s;  // rank 0's wait after backward
      log(line);
      bool go_on = on_batch ? on_batch(ev) : true;
      if (world_.distributed()) {  // one rank asking to stop stops them all, after the same batch
        std::vector<double> stop = {go_on ? 0.0 : 1.0};
        world_.all_reduce_sum(stop);
        go_on = stop[0] == 0;
      }

      if (test_ && options_.test_every > 0 && next_batch_ % options_.test_every == 0 && next_batch_ < batches) {
        run_test(epoch_ + 1, next_batch_, ev.epoch_float, elapsed);
      }
      if (!go_on || (options_.save_every > 0 && next_batch_ % options_.save_every == 0 && next_batch_ < batches)) {
        elapsed_before_ = elapsed();
        save(epoch_, next_batch_, epoch_sums_);
      }
      if (!go_on) {
        result.stopped = true;
        break;
      }
    }
    if (result.stopped) break;

    EpochEvent ee;
    ee.epoch = epoch_ + 1;
    ee.step = int64_t(net_.step());
    ee.train = epoch_sums_;
    if (test_) {
      ee.test = run_test(ee.epoch, batches, double(epoch_ + 1), elapsed);
    }
    ee.lr = net_.params().empty() ? 0 : net_.params()[0]->lr;
    ee.epoch_s = seconds_since(epoch_t0);
    ee.elapsed_s = elapsed();
    elapsed_before_ = ee.elapsed_s;
    ee.checkpoint = save(epoch_ + 1, 0, Metrics{});  // "epoch done": a resume starts the next
    nlohmann::json line = {{"event", "epoch"}, {"epoch", ee.epoch}, {"step", ee.step},
                           {"train_cost", ee.train.cost}, {"train_top1_error", ee.train.top1_error},
                           {"train_top5_error", ee.train.top5_error}, {"lr", ee.lr},
                           {"elapsed_s", ee.elapsed_s}, {"epoch_s", ee.epoch_s}};
    log_skipped(line, "train_", ee.train);
    if (test_) {
      line["test_cost"] = ee.test.cost;
      line["test_top1_error"] = ee.test.top1_error;
      line["test_top5_error"] = ee.test.top5_error;
      log_skipped(line, "test_", ee.test);
    }
    if (world_.distributed()) {  // every rank's weights, which must be the same
      const std::vector<uint64_t> hashes = world_.all_gather(weights_hash());
      line["weight_hashes"] = hashes;
      for (size_t k = 1; k < hashes.size(); ++k)
        CONVNET_CHECK(hashes[k] == hashes[0], "after epoch ", ee.epoch, " the weights of rank ", k,
                      " differ from rank 0's: the ranks no longer train one model");
    }
    log(line);
    result.train = ee.train;
    if (on_epoch && !on_epoch(ee)) {
      result.stopped = true;
      ++epoch_;
      next_batch_ = 0;
      break;
    }
  }
  if (trace_) write_trace();  // the run ended before the last traced step
  result.epochs_done = epoch_;
  result.step = int64_t(net_.step());
  result.test = last_test_;
  result.last_checkpoint = last_checkpoint_;
  result.elapsed_s = elapsed();
  elapsed_before_ = result.elapsed_s;
  return result;
}

}  // namespace convnet
