// Learning-rate schedules. A schedule gives a multiplier of the learning rates written in the
// model definition (epsW, epsB): the trainer sets each parameter's rate to base * multiplier
// before every step. Written as text, in cuda-convnet2's manner:
//
//   constant                               1
//   step[every=10;factor=0.1]              factor ^ floor(epoch / every)
//   exp[tgtFactor=100]                     tgtFactor ^ -progress         (cuda-convnet2's exp)
//   dexp[tgtFactor=250;numSteps=4]         exp, held constant over numSteps equal parts of the run
//   linear[tgtFactor=10]                   from 1 down to 1/tgtFactor, linearly in progress
//   plateau[factor=0.1;patience=1;threshold=0.001;maxDrops=3]
//        divide by 1/factor each time the validation error has not improved (by more than
//        threshold, relative) for `patience` consecutive tests: the AlexNet paper's rule
//
// progress = epochs done / epochs planned, in [0, 1]. Any schedule takes `warmup=E`: the
// multiplier rises linearly from 0 over the first E epochs (optional, off by default).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace convnet {

class Schedule {
 public:
  Schedule() = default;  // constant
  // Parses the text form above; throws ValueError naming the schedule and the bad key or value.
  static Schedule parse(const std::string& text);

  // The multiplier at `epoch` (fractional epochs done, from 0) of a run of `total_epochs`.
  double multiplier(double epoch, double total_epochs) const;
  // A validation result: plateau schedules count tests without improvement and drop the rate.
  // Returns true when this call dropped the rate.
  bool observe_validation(double error);

  const std::string& type() const { return type_; }
  std::string text() const;  // the canonical text form (all parameters written out)

  // What must survive a checkpoint: the plateau's best error, tests without improvement, drops.
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

 private:
  double param(const std::string& key) const;

  std::string type_ = "constant";
  std::map<std::string, double> params_;
  // plateau state
  double best_error_ = 1e300;
  int bad_tests_ = 0, drops_ = 0;
};

}  // namespace convnet
