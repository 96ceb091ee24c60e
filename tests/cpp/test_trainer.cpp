// The trainer: it learns, logs, calls back, stops on divergence naming the cause, and a run
// stopped and resumed from its checkpoint ends with the same weights, bit for bit, as one that
// never stopped. Also the 10-view test against views fed one at a time.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "convnet/checkpoint.h"
#include "convnet/dataset.h"
#include "convnet/solver.h"
#include "convnet/trainer.h"
#include "test_util.h"

namespace convnet {
namespace {

namespace fs = std::filesystem;

// conv - pool - fc - dropout - fc - softmax on 1 x 12 x 12 images: dropout makes the step
// counter and the seed part of what a resume must restore.
const char* kModel = R"([
  {"name": "data", "type": "input", "channels": 1, "size": 12},
  {"name": "labels", "type": "labels"},
  {"name": "conv1", "type": "conv", "inputs": ["data"], "filters": 8, "size": 3, "padding": 1,
   "neuron": "relu", "init": "kaiming", "epsW": 0.02, "epsB": 0.02, "wc": 0.0005},
  {"name": "pool1", "type": "pool", "inputs": ["conv1"], "size": 2, "stride": 2},
  {"name": "fc2", "type": "fc", "inputs": ["pool1"], "outputs": 32, "neuron": "relu",
   "init": "kaiming", "epsW": 0.02, "epsB": 0.02},
  {"name": "drop2", "type": "dropout", "inputs": ["fc2"], "rate": 0.5},
  {"name": "fc3", "type": "fc", "inputs": ["drop2"], "outputs": 4, "init": "xavier",
   "epsW": 0.02, "epsB": 0.02},
  {"name": "cost", "type": "softmax_cost", "inputs": ["fc3", "labels"]}
])";

PipelineOptions options(bool train, int batch = 16) {
  PipelineOptions o;
  o.batch = batch;
  o.train = train;
  o.shuffle = train;
  o.seed = 5;
  o.workers = 2;
  o.augment.mirror = false;
  o.augment.scale = 1.f / 255.f;
  o.augment.mean_value = 128.f;
  return o;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("convnet-trainer-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<std::vector<float>> weights_of(Net& net) {
  std::vector<std::vector<float>> out;
  for (Param* p : net.params()) {
    out.push_back(p->value.to_vector());
    for (auto& [name, t] : p->state) out.push_back(t.to_vector());  // the solver's state
  }
  return out;
}

bool bitwise_equal(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * 4) != 0)
      return false;
  return true;
}

std::vector<nlohmann::json> read_log(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(Trainer, LearnsLogsAndCallsBack) {
  TempDir dir;
  // Training and test examples of the same generated classes (the seed picks the classes).
  const Dataset d = open_dataset("generated[count=480;classes=4;channels=1;size=12;seed=11]");
  Pipeline train(d.train, options(true)), test(d.test, options(false));
  Net net(ModelSpec::from_json(kModel), {}, 3);
  TrainerOptions o;
  o.epochs = 3;
  o.test_every = 10;
  o.log_path = (dir.path / "log.jsonl").string();
  o.save_dir = (dir.path / "ckpt").string();
  o.keep = 2;
  Trainer t(net, train, &test, o);
  int batches = 0, tests = 0, epochs = 0;
  t.on_batch = [&](const BatchEvent& e) {
    ++batches;
    EXPECT_EQ(e.batches, 30);
    EXPECT_TRUE(std::isfinite(e.grad_norm) && e.grad_norm > 0);
    // The norm of this step's gradients (still in place after the update), summed per parameter
    // in float64: the trainer's sum over the gradient buckets gives the same.
    double sum = 0;
    for (Param* p : net.params())
      for (float g : p->grad.to_vector()) sum += double(g) * g;
    EXPECT_NEAR(e.grad_norm, std::sqrt(sum), 1e-6 * std::sqrt(sum));
    return true;
  };
  t.on_test = [&](const TestEvent&) { ++tests; };
  t.on_epoch = [&](const EpochEvent& e) {
    ++epochs;
    EXPECT_EQ(e.train.examples, 480);
    EXPECT_EQ(e.test.examples, 120);
    EXPECT_FALSE(e.checkpoint.empty());
    return true;
  };
  const Trainer::Result r = t.run();
  EXPECT_EQ(batches, 90);
  EXPECT_EQ(epochs, 3);
  EXPECT_EQ(tests, 3 * 3);  // batches 10 and 20, and each epoch's end
  EXPECT_EQ(r.epochs_done, 3);
  EXPECT_EQ(r.step, 90);
  EXPECT_LT(r.test.top1_error, 0.25) << "4 classes: chance is 0.75";
  EXPECT_EQ(list_checkpoints(o.save_dir).size(), 2u);  // keep = 2
  const auto log = read_log(o.log_path);
  int batch_lines = 0, test_lines = 0, epoch_lines = 0;
  for (auto& line : log) {
    const std::string ev = line.at("event");
    batch_lines += ev == "batch";
    test_lines += ev == "test";
    epoch_lines += ev == "epoch";
  }
  EXPECT_EQ(batch_lines, 90);
  EXPECT_EQ(test_lines, 9);
  EXPECT_EQ(epoch_lines, 3);
  EXPECT_DOUBLE_EQ(log.back().at("test_top1_error").get<double>(), r.test.top1_error);
}

// The issue's criterion: on the CPU a resumed run's weights equal an uninterrupted run's.
void stop_and_resume_is_bit_exact(const SolverOptions& solver) {
  SCOPED_TRACE(solver.text());
  TempDir dir;
  const Dataset d = open_dataset("generated[count=200;classes=4;channels=1;size=12;seed=21]");
  auto train_src = d.train, test_src = d.test;
  TrainerOptions o;
  o.epochs = 3;
  o.solver = solver;
  o.schedules = {{"fc", Schedule::parse("plateau[patience=1]")}, {"*", Schedule::parse("exp[tgtFactor=10]")}};

  std::vector<std::vector<float>> uninterrupted;
  {
    Pipeline train(train_src, options(true)), test(test_src, options(false));
    Net net(ModelSpec::from_json(kModel), {}, 3);
    Trainer t(net, train, &test, o);
    t.run();
    uninterrupted = weights_of(net);
  }
  o.save_dir = (dir.path / "ckpt").string();
  {
    Pipeline train(train_src, options(true)), test(test_src, options(false));
    Net net(ModelSpec::from_json(kModel), {}, 3);
    Trainer t(net, train, &test, o);
    int seen = 0;
    t.on_batch = [&](const BatchEvent&) { return ++seen < 13 + 5; };  // stop in epoch 2, batch 5
    const Trainer::Result r = t.run();
    EXPECT_TRUE(r.stopped);
    EXPECT_EQ(r.step, 18);
    EXPECT_FALSE(r.last_checkpoint.empty());
  }
  {
    Pipeline train(train_src, options(true)), test(test_src, options(false));
    Net net(ModelSpec::from_json(kModel), {}, 999);  // another seed: the checkpoint's must win
    Trainer t(net, train, &test, o);
    t.resume(o.save_dir);
    int seen = 0;
    t.on_batch = [&](const BatchEvent& e) {
      if (seen++ == 0) EXPECT_EQ(e.step, 19);
      return true;
    };
    const Trainer::Result r = t.run();
    EXPECT_EQ(r.step, 39);  // 13 batches per epoch
    EXPECT_TRUE(bitwise_equal(weights_of(net), uninterrupted))
        << "resumed run's weights differ from the uninterrupted run's";
    EXPECT_EQ(net.solver().step(), 39u);
  }
}

TEST(Trainer, StopAndResumeIsBitExact) { stop_and_resume_is_bit_exact(SolverOptions{}); }
TEST(Trainer, StopAndResumeIsBitExactWithNesterov) {
  stop_and_resume_is_bit_exact(SolverOptions{"nesterov"});
}
TEST(Trainer, StopAndResumeIsBitExactWithAdamW) {
  stop_and_resume_is_bit_exact(SolverOptions{"adamw", 0.8, 0.99, 1e-7});
}

TEST(Trainer, ResumeNeedsTheCheckpointsSolverAndRecordsIt) {
  TempDir dir;
  const Dataset d = open_dataset("generated[count=64;classes=4;channels=1;size=12;seed=21]");
  TrainerOptions o;
  o.epochs = 1;
  o.save_dir = (dir.path / "ckpt").string();
  o.solver = SolverOptions{"adamw"};
  {
    Pipeline train(d.train, options(true));
    Net net(ModelSpec::from_json(kModel), {}, 3);
    Trainer t(net, train, nullptr, o);
    t.run();
  }
  const CheckpointMeta meta = read_checkpoint_meta(latest_checkpoint(o.save_dir));
  EXPECT_EQ(meta.state.at("run").at("solver").at("name"), "adamw");
  Pipeline train(d.train, options(true));
  Net net(ModelSpec::from_json(kModel), {}, 3);
  o.solver = SolverOptions{"nesterov"};
  Trainer t(net, train, nullptr, o);
  try {
    t.resume(o.save_dir);
    ADD_FAILURE() << "resumed an adamw run with nesterov";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("saved by solver 'adamw', but this net's solver is 'nesterov'"),
              std::string::npos) << e.what();
  }
  // The same solver with other betas resumes, saying so.
  o.solver = SolverOptions{"adamw", 0.8};
  Pipeline train2(d.train, options(true));
  Trainer t2(net, train2, nullptr, o);
  const auto notes = t2.resume(o.save_dir);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("solver changed from adamw[beta1=0.9"), std::string::npos) << notes[0];
}

// Nesterov and AdamW learn: on the generated data, the mean cost of the third epoch is under
// 0.7 times the first batch's (about ln 4 = 1.39 at the start).
TEST(Trainer, NesterovAndAdamWReduceTheCost) {
  const Dataset d = open_dataset("generated[count=480;classes=4;channels=1;size=12;seed=11]");
  for (const std::string& name : {"nesterov", "adamw"}) {
    SCOPED_TRACE(name);
    std::string model = kModel;
    if (name == "adamw")  // AdamW's steps are about lr each: the rates PyTorch users give it
      for (size_t at; (at = model.find("0.02")) != std::string::npos;) model.replace(at, 4, "0.002");
    Pipeline train(d.train, options(true));
    Net net(ModelSpec::from_json(model), {}, 3);
    TrainerOptions o;
    o.epochs = 3;
    o.solver = SolverOptions{name};
    Trainer t(net, train, nullptr, o);
    double first = -1;
    t.on_batch = [&](const BatchEvent& e) {
      if (first < 0) first = e.train.cost;
      return true;
    };
    const Trainer::Result r = t.run();
    EXPECT_EQ(r.step, 90);
    EXPECT_GT(first, 1.2);
    EXPECT_LT(r.train.cost, 0.7 * first) << "first batch " << first << ", third epoch " << r.train.cost;
    std::cout << "[ solver   ] " << name << ": first batch cost " << first << ", third epoch's mean "
              << r.train.cost << " (top-1 error " << r.train.top1_error << ")\n";
  }
}

// A schedule changed between a run and its resume is never changed silently: a plateau stays a
// plateau with its record (here one drop of the rate), any other schedule starts afresh, and
// resume says which.
TEST(Trainer, ResumeWithAChangedScheduleSaysWhatBecomesOfItsState) {
  TempDir dir;
  const Dataset d = open_dataset("generated[count=96;classes=4;channels=1;size=12;seed=21]");
  TrainerOptions o;
  o.epochs = 2;
  // A test "improves" only by halving the error: the second test is a bad one, and drops.
  o.schedules = {{"*", Schedule::parse("plateau[patience=1;threshold=0.5]")}};
  o.save_dir = (dir.path / "ckpt").string();
  {
    Pipeline train(d.train, options(true)), test(d.test, options(false));
    Net net(ModelSpec::from_json(kModel), {}, 3);
    Trainer t(net, train, &test, o);
    t.run();
    ASSERT_EQ(t.options().schedules[0].second.state().at("drops").get<int>(), 1);
  }
  auto resume_with = [&](const std::string& schedule, int* drops) {
    TrainerOptions again = o;
    again.epochs = 3;
    again.schedules = {{"*", Schedule::parse(schedule)}};
    Pipeline train(d.train, options(true)), test(d.test, options(false));
    Net net(ModelSpec::from_json(kModel), {}, 3);
    Trainer t(net, train, &test, again);
    const std::vector<std::string> notes = t.resume(o.save_dir);
    *drops = t.options().schedules[0].second.state().at("drops").get<int>();
    return notes;
  };
  int drops = -1;
  EXPECT_TRUE(resume_with("plateau[patience=1;threshold=0.5]", &drops).empty());
  EXPECT_EQ(drops, 1);
  auto notes = resume_with("plateau[patience=3]", &drops);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("the plateau's record carries over"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("1 drop(s)"), std::string::npos) << notes[0];
  EXPECT_EQ(drops, 1);
  notes = resume_with("constant", &drops);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("starts afresh (the old one had lowered the rate 1 time(s))"),
            std::string::npos) << notes[0];
}

// Big enough that every GEMM path splits (conv1: columns, and a split reduction for its weight
// gradient; fc2: a split reduction forward, rows for its input gradient).
const char* kThreadsModel = R"([
  {"name": "data", "type": "input", "channels": 1, "size": 28},
  {"name": "labels", "type": "labels"},
  {"name": "conv1", "type": "conv", "inputs": ["data"], "filters": 16, "size": 5, "padding": 2,
   "neuron": "relu", "init": "kaiming"},
  {"name": "pool1", "type": "pool", "inputs": ["conv1"], "size": 2, "stride": 2},
  {"name": "fc2", "type": "fc", "inputs": ["pool1"], "outputs": 64, "neuron": "relu", "init": "kaiming"},
  {"name": "drop2", "type": "dropout", "inputs": ["fc2"], "rate": 0.5},
  {"name": "fc3", "type": "fc", "inputs": ["drop2"], "outputs": 4, "init": "xavier"},
  {"name": "cost", "type": "softmax_cost", "inputs": ["fc3", "labels"]}
])";

// Forward, backward, updates and a resume give the same bits for 1, 2 and 3 compute threads: a
// run may be resumed on another machine or with another --threads.
TEST(Trainer, SameWeightsForAnyThreadCountAndAcrossAResume) {
  TempDir dir;
  const Dataset d = open_dataset("generated[count=256;classes=4;channels=1;size=28;seed=8]");
  TrainerOptions o;
  o.epochs = 2;
  const int keep = omp_get_max_threads();
  auto train_with = [&](int threads, int stop_after, const std::string& resume_from) {
    omp_set_num_threads(threads);
    Pipeline train(d.train, options(true, 64)), test(d.test, options(false, 64));
    Net net(ModelSpec::from_json(kThreadsModel), {}, 3);
    TrainerOptions run = o;
    run.save_dir = stop_after ? (dir.path / "ckpt").string() : "";
    Trainer t(net, train, &test, run);
    if (!resume_from.empty()) t.resume(resume_from);
    int seen = 0;
    t.on_batch = [&](const BatchEvent&) { return stop_after == 0 || ++seen < stop_after; };
    t.run();
    omp_set_num_threads(keep);
    return weights_of(net);
  };
  const auto one = train_with(1, 0, "");
  EXPECT_TRUE(bitwise_equal(train_with(2, 0, ""), one)) << "2 threads train other weights than 1";
  EXPECT_TRUE(bitwise_equal(train_with(3, 0, ""), one)) << "3 threads train other weights than 1";
  train_with(3, 6, "");  // 4 batches an epoch: stops in epoch 2 with a checkpoint
  EXPECT_TRUE(bitwise_equal(train_with(2, 0, (dir.path / "ckpt").string()), one))
      << "resumed with 2 threads after 3, the weights differ from an uninterrupted run";
}

TEST(Trainer, NanInputStopsNamingTheCauseAndKeepsCheckpoint) {
  TempDir dir;
  const int n = 64, size = 12;
  std::vector<float> images(size_t(n) * size * size, 100.f);
  std::vector<int> labels(n);
  for (int i = 0; i < n; ++i) labels[size_t(i)] = i % 4;
  images[size_t(40) * size * size + 7] = std::numeric_limits<float>::quiet_NaN();  // example 40
  PipelineOptions po = options(false);
  po.shuffle = false;
  Pipeline train(array_source(images.data(), labels.data(), n, 1, size, size, 4), po);
  Net net(ModelSpec::from_json(kModel), {}, 3);
  TrainerOptions o;
  o.epochs = 2;
  o.save_dir = (dir.path / "ckpt").string();
  o.log_path = (dir.path / "log.jsonl").string();
  Trainer t(net, train, nullptr, o);
  // Epoch 1 never finishes: batch 3 (examples 32..47) holds the NaN.
  try {
    t.run();
    FAIL() << "expected DivergenceError";
  } catch (const DivergenceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("epoch 1, batch 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("input batch holds NaN"), std::string::npos) << msg;
    EXPECT_NE(msg.find("No checkpoint was written"), std::string::npos) << msg;
  }
  EXPECT_EQ(net.step(), 2u) << "no update after the bad batch";
  EXPECT_EQ(read_log(o.log_path).back().at("event"), "diverged");
}

TEST(Trainer, GradientNormLimitStopsAndNamesLastGoodCheckpoint) {
  TempDir dir;
  auto src = generated_source(64, 4, 1, 12, 31);
  Pipeline train(src, options(true));
  Net net(ModelSpec::from_json(kModel), {}, 3);
  TrainerOptions o;
  o.epochs = 3;
  o.save_dir = (dir.path / "ckpt").string();
  Trainer first(net, train, nullptr, o);
  first.on_epoch = [](const EpochEvent&) { return false; };  // one epoch, then a checkpoint
  first.run();
  const std::string good = latest_checkpoint(o.save_dir);
  ASSERT_FALSE(good.empty());
  o.max_grad_norm = 1e-6;
  Trainer second(net, train, nullptr, o);
  second.resume(good);
  try {
    second.run();
    FAIL() << "expected DivergenceError";
  } catch (const DivergenceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("exceeds the limit"), std::string::npos) << msg;
    EXPECT_NE(msg.find(good), std::string::npos) << msg;
  }
  Net reloaded(ModelSpec::from_json(kModel), {}, 3);
  EXPECT_NO_THROW(load_checkpoint(reloaded, good));
}

TEST(Trainer, ScheduleGroupMustMatchALayer) {
  auto src = generated_source(32, 4, 1, 12, 1);
  Pipeline train(src, options(true));
  Net net(ModelSpec::from_json(kModel), {}, 3);
  TrainerOptions o;
  o.schedules = {{"conv9", Schedule()}};
  try {
    Trainer t(net, train, nullptr, o);
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("group 'conv9' matches no layer"), std::string::npos) << e.what();
  }
}

TEST(Trainer, SchedulesSetRatesPerGroup) {
  auto src = generated_source(32, 4, 1, 12, 1);
  Pipeline train(src, options(true, 32));
  Net net(ModelSpec::from_json(kModel), {}, 3);
  TrainerOptions o;
  o.epochs = 2;
  o.schedules = {{"conv", Schedule::parse("step[every=1;factor=0.5]")}};
  Trainer t(net, train, nullptr, o);
  t.run();  // the rates of the last step (epoch 2: multiplier 0.5) stay set
  EXPECT_FLOAT_EQ(net.param("conv1.weights").lr, 0.01f);
  EXPECT_FLOAT_EQ(net.param("fc2.weights").lr, 0.02f) << "no group: the model's rate";
}

// cuda-convnet2's per-layer schedules (epsW=dexp[...]): a layer's own schedule replaces the run's
// for that parameter only.
TEST(Trainer, ALayersOwnScheduleReplacesTheRunsForItsParameter) {
  auto src = generated_source(32, 4, 1, 12, 1);
  Pipeline train(src, options(true, 32));
  nlohmann::json model = nlohmann::json::parse(kModel);
  model[2]["scheduleW"] = "step[every=1;factor=0.25]";
  Net net(ModelSpec::from_json(model.dump()), {}, 3);
  EXPECT_EQ(net.param("conv1.weights").schedule, "step[every=1;factor=0.25]");
  TrainerOptions o;
  o.epochs = 2;
  o.schedules = {{"*", Schedule::parse("step[every=1;factor=0.5]")}};
  Trainer t(net, train, nullptr, o);
  t.run();  // the last step is in epoch 2: the layer's multiplier 0.25, the run's 0.5
  EXPECT_FLOAT_EQ(net.param("conv1.weights").lr, 0.02f * 0.25f);
  EXPECT_FLOAT_EQ(net.param("conv1.biases").lr, 0.02f * 0.5f) << "scheduleB not given: the run's";
  EXPECT_FLOAT_EQ(net.param("fc2.weights").lr, 0.02f * 0.5f);
}

TEST(Trainer, ALayersOwnScheduleIsCheckedWhenTheNetIsBuilt) {
  nlohmann::json model = nlohmann::json::parse(kModel);
  model[2]["scheduleB"] = "plateau[patience=1]";
  convnet::testing::expect_throw_containing<ValueError>([&] { Net net(ModelSpec::from_json(model.dump())); },
                                               "conv1' (conv): scheduleB cannot be a plateau schedule");
  model[2]["scheduleB"] = "dexp[tgtFactor=10;steps=4]";
  convnet::testing::expect_throw_containing<ValueError>([&] { Net net(ModelSpec::from_json(model.dump())); },
                                               "conv1' (conv): scheduleB: ");
}

// A linear classifier of 10x10 grey crops into 4 classes: what the 10-view tests evaluate.
ModelSpec ten_view_classifier() {
  return ModelSpec::from_json(R"([
    {"name": "data", "type": "input", "channels": 1, "size": 10},
    {"name": "labels", "type": "labels"},
    {"name": "fc", "type": "fc", "inputs": ["data"], "outputs": 4, "init": "xavier"},
    {"name": "cost", "type": "softmax_cost", "inputs": ["fc", "labels"]}])");
}

TEST(Evaluate, TenViewsAverageTheViewsFedOneAtATime) {
  auto src = generated_source(6, 4, 1, 12, 41);
  Net net(ten_view_classifier(), {}, 7);
  AugmentOptions a;
  a.crop = 10;
  a.mean_value = 100.f;
  a.scale = 0.02f;
  const Metrics m = evaluate_multiview(net, *src, DataStats{}, a, 20);  // 2 examples per pass
  ASSERT_EQ(m.examples, 6);
  // The reference: each view alone, probabilities averaged in double.
  double cost = 0, top1 = 0;
  std::vector<float> chw(144);
  for (int i = 0; i < 6; ++i) {
    const int label = src->load(i, chw.data());
    for (float& v : chw) v = (v - 100.f) * 0.02f;
    const Tensor views = ten_views(chw.data(), 1, 12, 12, 10);
    const std::vector<float> all = views.to_vector();
    std::vector<double> avg(4, 0.0);
    for (int v = 0; v < 10; ++v) {
      Tensor one({1, 10, 10, 1}, Device::cpu());
      for (int p = 0; p < 100; ++p) one.data()[p] = all[size_t(p) * 10 + size_t(v)];
      Tensor lab({1}, Device::cpu());
      lab.data()[0] = float(label);
      net.set_input("data", one);
      net.set_input("labels", lab);
      net.forward(false);
      const std::vector<float> probs = net.output("cost").to_vector();
      for (int k = 0; k < 4; ++k) avg[size_t(k)] += probs[size_t(k)] / 10.0;
    }
    cost += -std::log(avg[size_t(label)]) / 6;
    int best = 0;
    for (int k = 1; k < 4; ++k) if (avg[size_t(k)] > avg[size_t(best)]) best = k;
    top1 += (best != label) / 6.0;
  }
  EXPECT_NEAR(m.cost, cost, 1e-5);
  EXPECT_NEAR(m.top1_error, top1, 1e-12);
  EXPECT_DOUBLE_EQ(m.top5_error, 0.0) << "4 classes: the true one is always in the top 5";
}

// Wraps a source; the examples in `bad` throw DataError naming a made-up file, as a decoder
// does for a corrupt image.
class WithBadExamples : public DataSource {
 public:
  WithBadExamples(std::shared_ptr<DataSource> inner, std::set<int64_t> bad, std::string folder)
      : inner_(std::move(inner)), bad_(std::move(bad)), folder_(std::move(folder)) {}
  int64_t size() const override { return inner_->size(); }
  int channels() const override { return inner_->channels(); }
  int height() const override { return inner_->height(); }
  int width() const override { return inner_->width(); }
  int classes() const override { return inner_->classes(); }
  int load(int64_t i, float* chw) const override {
    if (bad_.count(i)) throw DataError(describe(i) + ": bad PNG: IHDR: CRC error");
    return inner_->load(i, chw);
  }
  std::string describe(int64_t i) const override { return folder_ + "/x" + std::to_string(i) + ".png"; }

 private:
  std::shared_ptr<DataSource> inner_;
  std::set<int64_t> bad_;
  std::string folder_;
};

// Unreadable examples are counted per epoch and per test, with the first culprit named, in the
// events, the log and the one-line note the reports print; never silently.
TEST(Trainer, SkippedExamplesAreCountedPerEpochAndTest) {
  TempDir dir;
  const Dataset d = open_dataset("generated[count=96;classes=4;channels=1;size=12;seed=21]");
  auto train_src = std::make_shared<WithBadExamples>(d.train, std::set<int64_t>{3, 77}, "train/a");
  auto test_src = std::make_shared<WithBadExamples>(d.test, std::set<int64_t>{5, 9, 11}, "val/cat");
  Pipeline train(train_src, options(true)), test(test_src, options(false));
  Net net(ModelSpec::from_json(kModel), {}, 3);
  TrainerOptions o;
  o.epochs = 2;
  o.test_every = 3;
  o.log_path = (dir.path / "log.jsonl").string();
  Trainer t(net, train, &test, o);
  // The test set is read in order, so its first culprit is example 5.
  const std::string first_test = "'val/cat/x5.png': bad PNG: IHDR: CRC error";
  int epochs = 0, tests = 0;
  t.on_test = [&](const TestEvent& e) {
    ++tests;
    EXPECT_EQ(e.test.skipped, 3);
    EXPECT_EQ(e.test.first_skipped, first_test);
  };
  t.on_epoch = [&](const EpochEvent& e) {
    ++epochs;
    EXPECT_EQ(e.train.skipped, 2) << "epoch " << e.epoch;
    EXPECT_TRUE(e.train.first_skipped == "'train/a/x3.png': bad PNG: IHDR: CRC error" ||
                e.train.first_skipped == "'train/a/x77.png': bad PNG: IHDR: CRC error")
        << e.train.first_skipped;
    EXPECT_EQ(skipped_note(e.test, "test"),
              "3 of 24 test images unreadable, skipped: first " + first_test);
    return true;
  };
  t.run();
  EXPECT_EQ(epochs, 2);
  EXPECT_GT(tests, 2);
  int epoch_lines = 0, test_lines = 0;
  for (const auto& line : read_log(o.log_path)) {
    if (line.at("event") == "epoch") {
      ++epoch_lines;
      EXPECT_EQ(line.at("train_skipped").get<int64_t>(), 2);
      EXPECT_EQ(line.at("test_skipped").get<int64_t>(), 3);
      EXPECT_EQ(line.at("test_first_skipped").get<std::string>(), first_test);
    }
    if (line.at("event") == "test") {
      ++test_lines;
      EXPECT_EQ(line.at("skipped").get<int64_t>(), 3);
    }
  }
  EXPECT_EQ(epoch_lines, 2);
  EXPECT_EQ(test_lines, tests);
  Metrics none;
  none.examples = 10;
  EXPECT_EQ(skipped_note(none, "test"), "") << "nothing to say when nothing was skipped";
}

// The 10-view test leaves an unreadable example out (every other is tested once already) and
// counts it, rather than stopping the test.
TEST(Evaluate, TenViewsLeaveOutAndCountUnreadableExamples) {
  auto src = std::make_shared<WithBadExamples>(generated_source(7, 4, 1, 12, 41), std::set<int64_t>{2, 3},
                                               "val/dog");
  Net net(ten_view_classifier(), {}, 7);
  AugmentOptions a;
  a.crop = 10;
  const Metrics m = evaluate_multiview(net, *src, DataStats{}, a, 20);  // 2 examples a pass
  EXPECT_EQ(m.examples, 5);
  EXPECT_EQ(m.skipped, 2);
  EXPECT_EQ(skipped_note(m, "test"),
            "2 of 7 test images unreadable, skipped: first 'val/dog/x2.png': bad PNG: IHDR: CRC error");
}

// Data-set specs: anything but the documented forms is refused, listing them, and every number
// of a generated set is range-checked before it is narrowed or used.
TEST(Dataset, UnknownSpecsAndOutOfRangeNumbersAreRefused) {
  using convnet::testing::expect_throw_containing;
  for (const char* spec : {"generatedXYZ", "generated_big[count=5]", "generate"}) {
    SCOPED_TRACE(spec);
    expect_throw_containing<ValueError>([&] { open_dataset(spec); }, std::string("data set '") + spec + "'");
    expect_throw_containing<ValueError>([&] { open_dataset(spec); }, "the accepted forms are fashion-mnist");
  }
  // 2^32 + 1 classes once became int 1; 10^20 once saturated strtoll.
  expect_throw_containing<ValueError>([] { open_dataset("generated[classes=4294967297]"); },
                                      "classes '4294967297' must be a whole number in [1, 16384]");
  expect_throw_containing<ValueError>([] { open_dataset("generated[count=100000000000000000000]"); },
                                      "count '100000000000000000000' must be a whole number in [1, ");
  expect_throw_containing<ValueError>([] { open_dataset("generated[size=5000]"); }, "size '5000'");
  expect_throw_containing<ValueError>([] { open_dataset("generated[channels=-1]"); }, "channels '-1'");
  expect_throw_containing<ValueError>([] { open_dataset("generated[count=0x10]"); }, "count '0x10'");
  EXPECT_EQ(open_dataset("generated[count=8;seed=0]").train->size(), 8);  // seed 0 is a seed
  TempDir dir;
  expect_throw_containing<ValueError>([&] { open_dataset(dir.path.string(), 5000); },
                                      "image size 5000 must be in [1, 4096]");
}

// IDX files carry no class names: a test label beyond the training labels is refused naming both
// labels files.
TEST(Dataset, IdxTestLabelsBeyondTheTrainingLabelsAreRefused) {
  TempDir dir;
  auto write = [&](const std::string& name, uint32_t magic, std::vector<uint32_t> dims, size_t body,
                   uint8_t fill) {
    std::ofstream f(dir.path / name, std::ios::binary);
    auto put = [&](uint32_t v) { for (int s = 24; s >= 0; s -= 8) f.put(char(v >> s)); };
    put(magic);
    for (uint32_t x : dims) put(x);
    for (size_t i = 0; i < body; ++i) f.put(char(fill + (magic == 0x801 ? i % 3 : 0)));
  };
  write("train-images-idx3-ubyte", 0x803, {6, 2, 2}, 24, 7);
  write("train-labels-idx1-ubyte", 0x801, {6}, 6, 0);  // labels 0, 1, 2
  write("t10k-images-idx3-ubyte", 0x803, {3, 2, 2}, 12, 7);
  write("t10k-labels-idx1-ubyte", 0x801, {3}, 3, 2);   // labels 2, 3, 4
  convnet::testing::expect_throw_containing<ValueError>(
      [&] { open_dataset(dir.path.string()); },
      (dir.path / "t10k-labels-idx1-ubyte").string() + " has labels up to 4 but the training labels " +
          (dir.path / "train-labels-idx1-ubyte").string() + " only up to 2");
}

}  // namespace
}  // namespace convnet
